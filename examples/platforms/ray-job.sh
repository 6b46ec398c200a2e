#!/bin/sh
# A notebook bundle as a Ray Job, with the Ray CLI (pip install 'ray[default]'):
#
#   RAY_ADDRESS=http://HEAD:8265 sh examples/platforms/ray-job.sh BUNDLE_DIR DEST [nbjob options...]
#
# BUNDLE_DIR (a local folder with the notebook and its helpers) is uploaded as the job's
# working_dir; the entrypoint `nbjob run .` asks for one GPU (NBJOB_GPUS to change) and writes
# to DEST/<submission id>; the run id is the submission id (NBJOB_SUBMISSION_ID, default
# nbjob-<time>-<pid>). `ray job submit` waits and prints the job's log; it exits 1 when the
# job FAILED and 0 otherwise, a STOPPED job included (nbjob's own exit code is in run.json;
# `ray job status ID` tells SUCCEEDED from STOPPED). `ray job stop ID`: SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S
# (15 s here, Ray's default is 3 s); nbjob stores the results within NBJOB_STOP_GRACE (10 s)
# and exits 143, and Ray marks the job STOPPED. See ray-job.py for the Jobs API, docs/platforms.md, "Ray".
# Options after DEST are joined into the entrypoint with spaces: no spaces inside one.
# NBJOB: the command that runs nbjob on the cluster (default nbjob); RAY: the ray CLI.
set -eu
if [ $# -lt 2 ]; then
    echo "usage: sh ray-job.sh BUNDLE_DIR DEST [nbjob run options...]" >&2
    exit 2
fi
BUNDLE_DIR=$1
DEST=${2%/}
shift 2
ID=${NBJOB_SUBMISSION_ID:-nbjob-$(date -u +%Y%m%dT%H%M%S)-$$}
exec ${RAY:-ray} job submit --address "${RAY_ADDRESS:-http://127.0.0.1:8265}" \
    --submission-id "$ID" --working-dir "$BUNDLE_DIR" --entrypoint-num-gpus "${NBJOB_GPUS:-1}" \
    --runtime-env-json '{"env_vars": {"NBJOB_STOP_GRACE": "10", "RAY_JOB_STOP_WAIT_TIME_S": "15"}}' \
    -- ${NBJOB:-nbjob} run . --output "$DEST/$ID" "$@"
