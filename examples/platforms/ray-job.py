#!/usr/bin/env python3
"""A notebook bundle as a Ray Job, through Ray's Jobs API (``pip install 'ray[default]'``).

    python ray-job.py --address http://HEAD:8265 BUNDLE DEST [nbjob run options...]
    python ray-job.py --address http://HEAD:8265 ./train s3://bucket/runs -p epochs 50
    python ray-job.py --address http://HEAD:8265 s3://bucket/train.zip s3://bucket/runs

BUNDLE: a local folder is shipped to the cluster as the job's ``working_dir`` (Ray uploads it;
nbjob runs it as ``.``); anything else (``s3://``, ``gs://``, ``https://``, a path every node
sees) is passed to ``nbjob run`` as is and fetched by nbjob. The entrypoint asks for ``--gpus``
GPUs (default 1), so Ray runs it on a node that has them and sets ``CUDA_VISIBLE_DEVICES``.

Results go to ``DEST/<submission id>``, and the run id is the submission id (``--submission-id``,
default ``nbjob-<random>``). Waits for the end (unless ``--no-wait``) and exits with nbjob's
exit code (0 ok, 1 a cell raised, ..., 143 stopped); see docs/platforms.md, "Ray".

Stops: ``ray job stop ID`` (``JobSubmissionClient.stop_job``) sends SIGTERM to the entrypoint
and everything below it, and SIGKILL after ``RAY_JOB_STOP_WAIT_TIME_S`` (Ray's default: 3 s).
This recipe sets it to 15 s for the job and ``NBJOB_STOP_GRACE`` to 10 s, so nbjob stores the
partial notebook and run.json and exits 143; Ray marks the job STOPPED.
Retries are the submitter's: submit again with the same DEST and ``--run-id NAME`` among the
nbjob options (a submission id cannot be reused) to make it attempt 2 of the same run, which
resumes from the artifacts of attempt 1.

Credentials: the entrypoint gets the environment of Ray's nodes, not yours. Best are the
nodes' own (instance role, IRSA); else ``--env NAME`` (repeatable) copies the variable NAME
from your environment into the job's ``runtime_env`` (like ``docker run -e NAME``; e.g.
``--env AWS_ACCESS_KEY_ID --env AWS_SECRET_ACCESS_KEY``). Ray keeps a job's runtime_env in its
job table and dashboard, so such values are visible there (nbjob keeps them out of its logs and
run.json). Never write them into this file.
``NBJOB`` (environment): the command that runs nbjob on the cluster (default ``nbjob``; e.g.
``/opt/venv/bin/nbjob`` or ``python3 -m nbjob``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import uuid

from ray.job_submission import JobStatus, JobSubmissionClient

STOP_ENV = {"NBJOB_STOP_GRACE": "10", "RAY_JOB_STOP_WAIT_TIME_S": "15"}


def submit(
    client: JobSubmissionClient,
    bundle: str,
    dest: str,
    nbjob_args: list[str],
    submission_id: str | None = None,
    gpus: float = 1,
    env_names: list[str] | None = None,
) -> str:
    """Submit the job; its submission id (= nbjob's run id)."""
    submission_id = submission_id or f"nbjob-{uuid.uuid4().hex[:12]}"
    env_vars = {name: os.environ[name] for name in env_names or [] if name in os.environ}
    runtime_env: dict[str, object] = {"env_vars": {**STOP_ENV, **env_vars}}
    source = bundle
    if os.path.isdir(bundle):
        runtime_env["working_dir"] = bundle
        source = "."
    nbjob = shlex.split(os.environ.get("NBJOB", "nbjob"))
    output = f"{dest.rstrip('/')}/{submission_id}"
    client.submit_job(
        entrypoint=shlex.join([*nbjob, "run", source, "--output", output, *nbjob_args]),
        submission_id=submission_id,
        runtime_env=runtime_env,
        entrypoint_num_gpus=gpus or None,
    )
    return submission_id


def wait(client: JobSubmissionClient, submission_id: str, timeout: float | None) -> int:
    """Wait for the job's end (bounded by ``timeout``); nbjob's exit code (143: stopped)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not (status := client.get_job_status(submission_id)).is_terminal():
        if deadline is not None and time.monotonic() > deadline:
            print(f"{submission_id}: still {status} after {timeout} s", file=sys.stderr)
            return 4
        time.sleep(1)
    info = client.get_job_info(submission_id)
    print(f"{submission_id}: {status} (exit code {info.driver_exit_code})", file=sys.stderr)
    if info.driver_exit_code is not None:
        return int(info.driver_exit_code)
    return {JobStatus.SUCCEEDED: 0, JobStatus.STOPPED: 143}.get(status, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265"))
    parser.add_argument("--submission-id", help="default: nbjob-<random>")
    parser.add_argument("--gpus", type=float, default=1, help="GPUs for the entrypoint")
    parser.add_argument("--no-wait", action="store_true", help="print the id and return")
    parser.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME", help="pass $NAME to the job"
    )
    parser.add_argument("bundle")
    parser.add_argument("dest")
    args, nbjob_args = parser.parse_known_args(argv)
    client = JobSubmissionClient(args.address)
    submission_id = submit(
        client, args.bundle, args.dest, nbjob_args, args.submission_id, args.gpus, args.env
    )
    print(submission_id, flush=True)
    return 0 if args.no_wait else wait(client, submission_id, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
