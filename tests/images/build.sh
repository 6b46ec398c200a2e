#!/usr/bin/env bash
# Build the framework images from the real Dockerfile (used by `make images` and the tests).
#
#   tests/images/build.sh [--cpu] [torch] [tf]        (no names: both)
#
# One Dockerfile, one image per framework: `--build-arg FRAMEWORK=<fw>` picks its framework-<fw>
# stage; the shared base stage is built by the first build and comes from the layer cache in
# the next ones.
# Default: production build (CUDA frameworks, public base image), tagged nbjob-<fw>:<version>
# and nbjob-<fw>:latest. --cpu: CPU build for machines without a GPU or registry: the base is
# NBJOB_BASE (default: the debootstrap stand-in localhost/base-py:test, made here if missing),
# torch's CPU wheel comes from a wheelhouse in .build/wheels, TensorFlow is tensorflow-cpu;
# tagged localhost/nbjob-<fw>:cpu.
# Engine: docker when present (CLI and a reachable engine), else podman with the private store (tests/images/podman.sh);
# NBJOB_ENGINE=docker|podman forces one.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TF_VERSION=${TF_VERSION:-2.21.0}
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' executor/nbjob/__init__.py)

cpu=0
frameworks=()
for arg in "$@"; do
    case "$arg" in
    --cpu) cpu=1 ;;
    torch | tf) frameworks+=("$arg") ;;
    *) echo "usage: $0 [--cpu] [torch] [tf]" >&2; exit 2 ;;
    esac
done
[ ${#frameworks[@]} -gt 0 ] || frameworks=(torch tf)

engine=${NBJOB_ENGINE:-}
if [ -z "$engine" ]; then
    # A docker CLI without a reachable engine does not count.
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        engine=docker
    else
        engine=podman
    fi
fi
if [ "$engine" = podman ]; then
    "$HERE/podman.sh" --install
    ENGINE=("$HERE/podman.sh")
    BUILD=(build --format docker --isolation chroot --network host)
else
    ENGINE=(docker)
    BUILD=(build)
fi

args=(--build-arg "NBJOB_VERSION=$VERSION")
if [ "$cpu" = 1 ]; then
    base=${NBJOB_BASE:-localhost/base-py:test}
    if [ "$base" = localhost/base-py:test ]; then
        [ "$engine" = podman ] || { echo "build.sh: --cpu with docker needs NBJOB_BASE" >&2; exit 2; }
        "$HERE/podman.sh" --ensure-base
    fi
    args+=(--build-arg "BASE=$base")
fi

for fw in "${frameworks[@]}"; do
    fwargs=()
    if [ "$cpu" = 1 ] && [ "$fw" = torch ]; then
        # The CPU wheel, fetched on the host (whose pip may be set up for it; elsewhere set
        # TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu) into the build context.
        if ! compgen -G ".build/wheels/torch-${TORCH_VERSION}+cpu-*.whl" >/dev/null; then
            python3 -m pip download -q --no-deps -d .build/wheels \
                --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
                ${TORCH_CPU_INDEX:+--index-url "$TORCH_CPU_INDEX"} "torch==${TORCH_VERSION}+cpu"
        fi
        fwargs=(--build-arg "TORCH_PACKAGE=torch==${TORCH_VERSION}+cpu" --build-arg WHEELHOUSE=.build/wheels)
    elif [ "$cpu" = 1 ]; then
        fwargs=(--build-arg "TF_PACKAGE=tensorflow-cpu==${TF_VERSION}")
    elif [ "$fw" = torch ]; then
        fwargs=(--build-arg "TORCH_PACKAGE=torch==${TORCH_VERSION}")
    else
        fwargs=(--build-arg "TF_PACKAGE=tensorflow[and-cuda]==${TF_VERSION}")
    fi
    if [ "$cpu" = 1 ]; then
        tags=(-t "localhost/nbjob-$fw:cpu")
    else
        tags=(-t "nbjob-$fw:$VERSION" -t "nbjob-$fw:latest")
    fi
    echo "build.sh: $engine: nbjob-$fw (${tags[*]})" >&2
    start=$(date +%s)
    "${ENGINE[@]}" "${BUILD[@]}" "${args[@]}" --build-arg "FRAMEWORK=$fw" "${fwargs[@]}" \
        -f Dockerfile "${tags[@]}" .
    size=$("${ENGINE[@]}" image inspect --format '{{.Size}}' "${tags[1]}" 2>/dev/null || echo 0)
    echo "build.sh: nbjob-$fw built in $(($(date +%s) - start)) s, $((size / 1000000)) MB" >&2
done

# Drop the untagged images that rebuilds leave behind (the layer cache of tagged ones stays).
if [ "$engine" = podman ]; then
    "${ENGINE[@]}" image prune -f >/dev/null
fi
