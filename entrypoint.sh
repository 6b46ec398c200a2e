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

# exec: nbjob replaces this shell, so the signals tini forwards reach it directly.
exec nbjob run "$@"
