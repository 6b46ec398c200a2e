#!/usr/bin/env bash
# Build the image family from the real Dockerfiles (used by `make images` and the tests).
#
#   tests/images/build.sh [--cpu] [torch] [tf]        (no names: both)
#
# Parent images, as in jupyter/docker-stacks: Dockerfile.base -> nbjob-base first (tini, user,
# venv, ipykernel, scikit-learn, nbjob[gcs,azure], entrypoint), then each named framework image,
# Dockerfile.<fw> FROM that base (--build-arg BASE_IMAGE), which adds only the framework.
# Default: production build (CUDA frameworks, public Python base), tagged nbjob-<name>:<version>
# and nbjob-<name>:latest. --cpu: CPU build for machines without a GPU or registry: the Python
# base is NBJOB_PYTHON_IMAGE (default: the debootstrap stand-in localhost/base-py:test, made here
# if missing), torch's CPU wheel comes from a wheelhouse in .build/wheels, TensorFlow is
# tensorflow-cpu; tagged localhost/nbjob-<name>:cpu.
# Engine: docker when present (CLI and a reachable engine), else podman with the private store
# (tests/images/podman.sh); NBJOB_ENGINE=docker|podman forces one.
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

if [ "$cpu" = 1 ]; then
    python_image=${NBJOB_PYTHON_IMAGE:-localhost/base-py:test}
    if [ "$python_image" = localhost/base-py:test ]; then
        [ "$engine" = podman ] || { echo "build.sh: --cpu with docker needs NBJOB_PYTHON_IMAGE" >&2; exit 2; }
        "$HERE/podman.sh" --ensure-base
    fi
fi

tags_of() {  # tags_of NAME: the tags of image nbjob-NAME, the first one canonical
    if [ "$cpu" = 1 ]; then
        echo "localhost/nbjob-$1:cpu"
    else
        echo "nbjob-$1:$VERSION nbjob-$1:latest"
    fi
}

build() {  # build NAME BUILD-ARGS...: Dockerfile.NAME -> nbjob-NAME
    local name=$1 start size tags=()
    shift
    for tag in $(tags_of "$name"); do tags+=(-t "$tag"); done
    echo "build.sh: $engine: nbjob-$name (${tags[*]})" >&2
    start=$(date +%s)
    "${ENGINE[@]}" "${BUILD[@]}" "$@" -f "Dockerfile.$name" "${tags[@]}" .
    size=$("${ENGINE[@]}" image inspect --format '{{.Size}}' "${tags[1]}" 2>/dev/null || echo 0)
    echo "build.sh: nbjob-$name built in $(($(date +%s) - start)) s, $((size / 1000000)) MB" >&2
}

# 1. The shared base.
baseargs=(--build-arg "NBJOB_VERSION=$VERSION")
[ "$cpu" = 0 ] || baseargs+=(--build-arg "PYTHON_IMAGE=$python_image")
build base "${baseargs[@]}"
read -r base_image _ <<<"$(tags_of base)"

# 2. The framework layers on it.
for fw in "${frameworks[@]}"; do
    fwargs=(--build-arg "BASE_IMAGE=$base_image")
    if [ "$cpu" = 1 ] && [ "$fw" = torch ]; then
        # The CPU wheel, fetched on the host (whose pip may be set up for it; elsewhere set
        # TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu) into the build context.
        if ! compgen -G ".build/wheels/torch-${TORCH_VERSION}+cpu-*.whl" >/dev/null; then
            python3 -m pip download -q --no-deps -d .build/wheels \
                --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
                ${TORCH_CPU_INDEX:+--index-url "$TORCH_CPU_INDEX"} "torch==${TORCH_VERSION}+cpu"
        fi
        fwargs+=(--build-arg "TORCH_PACKAGE=torch==${TORCH_VERSION}+cpu" --build-arg WHEELHOUSE=.build/wheels)
    elif [ "$cpu" = 1 ]; then
        fwargs+=(--build-arg "TF_PACKAGE=tensorflow-cpu==${TF_VERSION}")
    elif [ "$fw" = torch ]; then
        fwargs+=(--build-arg "TORCH_PACKAGE=torch==${TORCH_VERSION}")
    else
        fwargs+=(--build-arg "TF_PACKAGE=tensorflow[and-cuda]==${TF_VERSION}")
    fi
    build "$fw" "${fwargs[@]}"
done

# Drop the untagged images that rebuilds leave behind (the layer cache of tagged ones stays).
if [ "$engine" = podman ]; then
    "${ENGINE[@]}" image prune -f >/dev/null
fi
