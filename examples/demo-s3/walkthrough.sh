#!/usr/bin/env bash
# The README's local-S3 walkthrough (`make demo-s3` runs it; tests/test_first_hour.py checks
# that the README shows these lines and runs it): a local S3-compatible server (moto, in
# memory), a bundle packed and uploaded, a run from s3:// to s3:// stopped midway, and the same
# command again, which resumes. Needs nbjob and moto[server] on PATH, curl, and port 9000 free.
set -euo pipefail
moto_server -p 9000 > moto.log 2>&1 &  # the local S3 (dummy credentials, any are accepted)
S3_PID=$!
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
export NBJOB_S3_ENDPOINT_URL=http://127.0.0.1:9000
until curl -s -o /dev/null "$NBJOB_S3_ENDPOINT_URL"; do sleep 0.2; done
python -c "import boto3; boto3.client('s3', endpoint_url='$NBJOB_S3_ENDPOINT_URL').create_bucket(Bucket='demo')"
nbjob pack examples/demo-s3/steps.ipynb -o steps.zip --upload s3://demo/bundles/
# Stopped after 10 s (SIGTERM, as a platform stops a job): exit 143, the partial results kept.
timeout --preserve-status -s TERM 10 nbjob run s3://demo/bundles/steps.zip --output s3://demo/runs/steps || echo "stopped: exit $?"
# The same command again: attempt 2 restores the saved place and goes on from there.
nbjob run s3://demo/bundles/steps.zip --output s3://demo/runs/steps
python -c "import boto3, json; r = json.load(boto3.client('s3', endpoint_url='$NBJOB_S3_ENDPOINT_URL').get_object(Bucket='demo', Key='runs/steps/run.json')['Body']); print(r['status'], 'attempt', r['attempt'], r['metrics'])"
kill $S3_PID
