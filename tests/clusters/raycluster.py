"""A real one-node Ray cluster on loopback for the cluster tests (``ray[default]``).

Test modules import the fixture (``from raycluster import ray_cluster``). Started once per test
module (one module uses it): ``ray start --head --block`` as a subprocess of this process in
its own session, with ``--node-ip-address=127.0.0.2`` (Ray rewrites 127.0.0.1 to the
machine's external address; other loopback addresses are kept), every port chosen free,
``--temp-dir`` in a scratch folder, one CPU, one GPU (``--num-gpus=1``: Ray hands it to a job
that asks with ``entrypoint_num_gpus``), no usage stats. Ready when a trivial job has run
through the Jobs API (bounded wait: the API answers before its agent takes jobs).

Stopped by PID, never with ``ray stop`` (which ends every Ray process on the machine): every
process ``ray start`` created is its descendant (GCS, raylet, dashboard and its agent, workers,
job drivers); at the end the fixture collects them from /proc, sends ``ray start`` SIGTERM
(with ``--block`` it then stops its services), and SIGKILLs whatever of them is left after 15 s.

Without Ray (``pip install '.[test]'``) the tests are skipped with that reason, except under CI
(``CI=true``), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from slurm import report, unavailable
from support import ServerProcess, free_ports, start_server, starts_processes

HOST = "127.0.0.2"


@dataclass
class RayCluster:
    address: str  # GCS, for `ray start --address` / ray.init
    dashboard_url: str  # the Jobs API (JobSubmissionClient, `ray job submit --address`)
    temp_dir: Path
    pid: int  # `ray start --block`
    started_s: float  # seconds from `ray start` to the Jobs API answering


@starts_processes
@contextlib.contextmanager
def ray_head(temp_dir: Path, log: Path) -> Iterator[RayCluster]:
    ray = Path(sys.executable).with_name("ray")
    ports = free_ports(9)
    gcs, dashboard, client, node_mgr, obj_mgr, metrics, agent, agent_grpc, env_agent = ports
    cmd = [
        str(ray), "start", "--head", "--block", "--disable-usage-stats",
        f"--node-ip-address={HOST}", f"--port={gcs}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client}", f"--node-manager-port={node_mgr}",
        f"--object-manager-port={obj_mgr}", f"--metrics-export-port={metrics}",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={env_agent}",
        "--num-cpus=1", "--num-gpus=1", f"--temp-dir={temp_dir}",
        "--object-store-memory=100000000",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    began = time.monotonic()
    head = start_server("ray start", cmd, log, env=env)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_ready(head, url, 180)
        yield RayCluster(
            address=f"{HOST}:{gcs}",
            dashboard_url=url,
            temp_dir=temp_dir,
            pid=head.pid,
            started_s=time.monotonic() - began,
        )
    finally:
        # With --block, SIGTERM makes `ray start` stop its services; what is left of them
        # (every process below it, read from /proc) is SIGKILLed after 15 s.
        left = head.stop(grace=15, tree=True)
        if left:
            print(f"ray: SIGKILLed {len(left)} processes left after SIGTERM", file=sys.stderr)


def _wait_ready(head: ServerProcess, url: str, timeout: float) -> None:
    """Until a trivial job has run: the Jobs API answers before its agent can take a job."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    deadline = time.monotonic() + timeout
    job: str | None = None
    while True:
        if not head.alive():
            raise RuntimeError(f"ray start exited with {head.proc.returncode}: {head.tail()}")
        try:
            client = JobSubmissionClient(url)
            job = job or client.submit_job(entrypoint="true", submission_id="nbjob-warm-up")
            status = client.get_job_status(job)
            if status == JobStatus.SUCCEEDED:
                return
            if status.is_terminal():
                raise RuntimeError(f"the warm-up job ended {status}: {client.get_job_logs(job)}")
        except (ConnectionError, RuntimeError, OSError) as exc:
            if "warm-up job ended" in str(exc) or time.monotonic() > deadline:
                raise RuntimeError(f"Ray not ready within {timeout} s: {exc}") from None
        if time.monotonic() > deadline:
            raise RuntimeError(f"Ray's warm-up job did not end within {timeout} s")
        time.sleep(0.5)


# Module scope: one module uses it, and the daemons (Ray: ~500 MB, a few idle processes)
# should not stay up for the rest of the test session.
@pytest.fixture(scope="module")
def ray_cluster(pytestconfig: pytest.Config) -> Iterator[RayCluster]:
    try:
        import ray.job_submission  # noqa: F401
    except ImportError:
        unavailable("Ray", "Ray is not installed: pip install '.[test]' (ray[default])")
    if not Path(sys.executable).with_name("ray").exists():
        unavailable("Ray", f"no `ray` command beside {sys.executable}")
    # Short: Ray's Unix sockets live below it (107-byte limit on a socket's path).
    scratch = Path(tempfile.mkdtemp(prefix="nbjob-ray-"))
    try:
        with ray_head(scratch / "t", scratch / "ray-start.log") as cluster:
            report(pytestconfig, f"Ray: head ready (a job ran) {cluster.started_s:.1f} s")
            yield cluster
    finally:
        if not os.environ.get("NBJOB_KEEP_CLUSTER_LOGS"):
            shutil.rmtree(scratch, ignore_errors=True)
