#!/usr/bin/env bash
# bench/gpu.py on a lent GPU machine whose Python has torch but no Jupyter, in one call.
#
#   bash bench/gpu_device.sh wheels    # here (PyPI reachable): Jupyter's wheels into .whl/
#   bash bench/gpu_device.sh run       # there (carry .whl): install them, run the bench
#
# "run" installs the wheels with pip --target (no index, nothing downloaded), compiles them,
# and runs bench/gpu.py with the arguments in GPU_ARGS (default: 65-s runs, 3 rounds of the
# script and nbjob, about 530 s on an H200), writing $OUT/gpu.json and $OUT/B.md (OUT: the
# device tool's output folder, else ./gpu-out). Back here, the measurement is appended to
# bench/gpu.json and rendered into BENCHMARKS.md:
#
#   bash bench/gpu_device.sh keep FILES_AT/gpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl
PACKAGES=(jupyter_client ipykernel nbformat nbconvert nbclient structlog pyyaml websocket-client
          jinja2 mistune pygments jupyterlab_pygments defusedxml ipython-pygments-lexers)
GPU_ARGS=${GPU_ARGS:---seconds 65 --reps 3 --runners script,nbjob}

case "${1:-}" in
wheels)  # the device's Python is 3.12 on x86-64 Linux
    python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
        --abi cp312 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$WHEELS" "${PACKAGES[@]}"
    du -sh "$WHEELS"
    ;;
run)
    out=${OUT:-$PWD/gpu-out}
    mkdir -p "$out"
    site=$(mktemp -d)
    python3 -m pip install -q --no-index --no-deps --no-cache-dir --target "$site" "$WHEELS"/*.whl
    export PYTHONPATH="$site:$PWD/executor" JUPYTER_PATH="$site/share/jupyter" PYTHONUNBUFFERED=1
    python3 -m compileall -q -j 0 "$site" executor >/dev/null 2>&1 || true
    cd bench
    # shellcheck disable=SC2086  # GPU_ARGS is a list of arguments
    timeout 560 python3 gpu.py $GPU_ARGS --json "$out/gpu.json" --markdown "$out/B.md"
    ;;
keep)  # FILE: a measurement from "run", appended to bench/gpu.json (a list) and rendered
    .venv/bin/python bench/gpu.py --keep "$2"
    ;;
*)
    sed -n '2,13p' "$0" >&2
    exit 2
    ;;
esac
