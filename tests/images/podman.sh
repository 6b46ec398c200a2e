#!/usr/bin/env bash
# podman with a private, self-contained store under the repo's ignored .build/ folder.
#
#   tests/images/podman.sh ARGS...         run podman ARGS with the private configuration
#   tests/images/podman.sh --ensure-base   build the registry-free stand-in base image
#                                          (localhost/base-py:test) if it is missing
#   tests/images/podman.sh --install       apt-get install podman runc debootstrap (root only)
#   tests/images/podman.sh --env           print the export lines (eval "$(... --env)")
#
# Why each setting (docs/images.md, section "Building", says it in short): crun fails on this
# kernel's hybrid cgroups -> runc + cgroupfs; podman asks for more open files than the hard limit unless
# default_ulimits says otherwise; no registry is reachable, so the base is made by debootstrap
# and the machine's extra CA certificates go into it (outbound TLS is intercepted here).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SCRATCH=${NBJOB_PODMAN_DIR:-$ROOT/.build/podman}
BASE_IMAGE=${NBJOB_BASE_IMAGE:-localhost/base-py:test}
SUITE=${NBJOB_BASE_SUITE:-bookworm}

install_packages() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "podman.sh: missing ${missing[*]} and not root: cannot install" >&2
        return 1
    fi
    echo "podman.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

write_config() {
    mkdir -p "$SCRATCH/storage" "$SCRATCH/runroot" "$SCRATCH/libpod-tmp"
    local nofile
    nofile=$(ulimit -Hn)
    [ "$nofile" = unlimited ] && nofile=1048576
    cat >"$SCRATCH/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$SCRATCH/storage"
runroot = "$SCRATCH/runroot"
CONF
    cat >"$SCRATCH/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$SCRATCH/libpod-tmp"
CONF
    export CONTAINERS_STORAGE_CONF="$SCRATCH/storage.conf"
    export CONTAINERS_CONF="$SCRATCH/containers.conf"
}

debian_mirror() {
    # The mirror apt already uses on this machine (deb822 or one-line format).
    local m
    m=$(grep -hoE '^URIs: *http[^ ]*debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | sed 's/^URIs: *//')
    [ -n "$m" ] || m=$(grep -hoE '^deb +http[^ ]*debian/? ' /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')
    echo "${m:-http://deb.debian.org/debian}"
}

ensure_base() {
    if podman image exists "$BASE_IMAGE"; then
        return 0
    fi
    local rootfs="$SCRATCH/rootfs"
    rm -rf "$rootfs"
    echo "podman.sh: debootstrap $SUITE -> $BASE_IMAGE" >&2
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates \
        "$SUITE" "$rootfs" "$(debian_mirror)" >"$SCRATCH/debootstrap.log" 2>&1 \
        || { tail -20 "$SCRATCH/debootstrap.log" >&2; return 1; }
    if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
        cp -r /usr/local/share/ca-certificates/. "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null
    fi
    rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

case "${1:-}" in
--install)
    install_packages
    ;;
--env)
    write_config
    echo "export CONTAINERS_STORAGE_CONF='$CONTAINERS_STORAGE_CONF'"
    echo "export CONTAINERS_CONF='$CONTAINERS_CONF'"
    ;;
--ensure-base)
    install_packages
    write_config
    ensure_base
    ;;
*)
    write_config
    exec podman "$@"
    ;;
esac
