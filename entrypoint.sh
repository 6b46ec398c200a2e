#!/bin/sh
# nbjob image entrypoint (runs under tini as PID 1): `nbjob run "$@"`.
# With no arguments the executor takes the job from the environment: NBJOB_SOURCE (and the
# other NBJOB_* settings) or, on FfDL, RESULT_DIR/MODEL_DIR (bundle at
# $RESULT_DIR/_submitted_code/model.zip). Exit codes are the executor's (docs/running/index.md, "Exit codes").
set -eu

if [ "$#" -eq 0 ] && [ -z "${NBJOB_SOURCE:-}" ] && [ -z "${RESULT_DIR:-}" ] && [ -z "${MODEL_DIR:-}" ]; then
    echo "usage: docker run IMAGE SOURCE [--output DEST] [nbjob run options]" >&2
    echo "       (or set NBJOB_SOURCE, or the FfDL variables RESULT_DIR / MODEL_DIR; 'nbjob run --help')" >&2
    exit 2
fi

# Restricted clusters (docs/images.md, "Restricted clusters"): an arbitrary user id in group 0
# (OpenShift), a read-only root filesystem with only /tmp and the work folder writable. Quietly:
# stderr is nbjob's JSON log stream.
# - HOME that cannot be written (read-only root): a private one under the temporary folder, so
#   IPython, Jupyter, matplotlib, pip and framework caches find a writable home.
if [ ! -d "${HOME:-/}" ] || [ ! -w "${HOME:-/}" ]; then
    home="${TMPDIR:-/tmp}/nbjob-home-$(id -u)"
    if mkdir -p -m 0700 "$home" 2>/dev/null && [ -w "$home" ]; then
        export HOME="$home"
    fi
fi
# - a user id with no passwd entry: one from nss_wrapper (as OpenShift's images do; /etc is not
#   writable), for the tools that look the user up (getpass.getuser, torch.compile's cache,
#   ssh, git).
if ! id -un >/dev/null 2>&1 && [ -z "${NSS_WRAPPER_PASSWD:-}" ]; then
    for lib in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so; do
        [ -f "$lib" ] || continue
        nss=$(mktemp -d "${TMPDIR:-/tmp}/nbjob-nss.XXXXXX" 2>/dev/null) || break
        { cat /etc/passwd; echo "${NB_USER:-nbjob}:x:$(id -u):$(id -g):nbjob:${HOME:-/}:/bin/sh"; } >"$nss/passwd"
        export LD_PRELOAD="$lib${LD_PRELOAD:+ $LD_PRELOAD}" NSS_WRAPPER_PASSWD="$nss/passwd" NSS_WRAPPER_GROUP=/etc/group
        break
    done
fi

# exec: nbjob replaces this shell, so the signals tini forwards reach it directly.
exec nbjob run "$@"
