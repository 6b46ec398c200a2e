"""A real one-node Slurm cluster on loopback for the cluster tests (Debian ``slurm-wlm``).

Test modules import the fixture (``from slurm import slurm_cluster``). Started once per test
module (one module uses it): a private ``munged`` (its own key, socket and seed file),
``slurmctld`` and ``slurmd`` with their own ports, every state, spool, pid and log file in one
scratch folder, and two fake GPUs (``gres.conf``: two ``Name=gpu`` lines, on ``/dev/null`` and
``/dev/zero``), so ``--gres=gpu:1`` sets ``CUDA_VISIBLE_DEVICES=0`` and a two-rank job gets
both. Ready when ``sinfo`` reports the node idle (bounded wait).
Stopped at the end by PID — the three daemons this fixture started, nothing else (never
``killall``, ``pkill`` or ``scancel`` of jobs it did not submit).

Without the Slurm binaries (and not root, so ``make system-deps`` cannot install them) the
tests are skipped with that reason, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import ServerProcess, free_ports, start_server, starts_processes, wait_ready

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "srun", "scancel")
CPUS = 4  # configured (SlurmdParameters=config_overrides), so a 2-task job fits on any machine


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if not (shutil.which(b) or Path("/usr/sbin", b).exists())]


def unavailable(what: str, reason: str) -> None:
    """Skip with ``reason`` — or fail, under CI, where every cluster test must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} tests cannot run in CI: {reason}")
    pytest.skip(reason)


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class SlurmCluster:
    root: Path  # scratch folder: conf, state, spool, logs
    conf: Path
    env: dict[str, str]  # SLURM_CONF for the clients
    pids: dict[str, int] = field(default_factory=dict)
    started_s: float = 0.0  # seconds from the first daemon's start to the node idle
    jobs: list[str] = field(default_factory=list)  # jobs the tests submitted (cancelled at end)

    def run(self, *args: str, timeout: float = 30, check: bool = True) -> str:
        """A Slurm client command (``sbatch``, ``scontrol``...) against this cluster."""
        proc = subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} -> {proc.returncode}: {proc.stderr}")
        return proc.stdout

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o`` as a mapping (JobState, ExitCode, Restarts, ...)."""
        out = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait_state(self, job_id: str, states: set[str], timeout: float) -> dict[str, str]:
        """Poll the job until its JobState is one of ``states`` (bounded); its record."""
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(0.25)
        raise AssertionError(f"job {job_id} not in {states} within {timeout} s: {info}")

    def log_tail(self, n: int = 3000) -> str:
        texts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.root / "log" / name
            if path.exists():
                texts.append(f"--- {name}\n{path.read_text(errors='replace')[-n:]}")
        return "\n".join(texts)


CONF = """\
ClusterName=nbjobtest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SrunPortRange={srun_lo}-{srun_hi}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
ReturnToService=2
MailProg=/bin/true
SchedulerParameters=sched_interval=1
KillWait=15
MinJobAge=600
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@starts_processes
@contextlib.contextmanager
def slurm(root: Path) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd under ``root``; stop them by PID on exit."""
    for sub in ("state", "spool", "run", "log", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # munged insists on a socket folder every parent of which others may enter.
    for p in (root, *root.parents):
        if p.stat().st_mode & 0o001 == 0:
            raise RuntimeError(f"{p} is not world-executable; munged refuses sockets below it")
    munge_dir = root / "munge"
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_dir.chmod(0o755)
    socket_path = munge_dir / "munge.sock"
    ctld, slurmd_port, srun_lo = free_ports(3)
    conf = root / "slurm.conf"
    conf.write_text(
        CONF.format(
            root=root,
            ctld_port=ctld,
            slurmd_port=slurmd_port,
            srun_lo=srun_lo,
            srun_hi=srun_lo + 20,
            munge_socket=socket_path,
            cpus=CPUS,
        )
    )
    # Two fake GPUs (a device file each; without File the node goes INVAL).
    (root / "gres.conf").write_text(
        "NodeName=localhost Name=gpu File=/dev/null\nNodeName=localhost Name=gpu File=/dev/zero\n"
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for name in list(env):
        if name.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and name != "SLURM_CONF":
            del env[name]  # a test run inside a Slurm job must not leak its job into ours
    cluster = SlurmCluster(root=root, conf=conf, env=env)
    daemons: list[ServerProcess] = []
    began = time.monotonic()
    logs = root / "log"
    try:
        munged = start_server(
            "munged",
            [
                _sbin("munged"),
                "--foreground",
                f"--socket={socket_path}",
                f"--key-file={key}",
                f"--pid-file={root / 'run' / 'munged.pid'}",
                f"--log-file={logs / 'munged.log'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
                "--force",
            ],
            logs / "munged.out",
            env=env,
        )
        daemons.append(munged)
        wait_ready(socket_path.exists, 15, "munged ready", munged)
        ctld_argv = [_sbin("slurmctld"), "-D", "-f", str(conf)]
        daemons.append(start_server("slurmctld", ctld_argv, logs / "slurmctld.out", env=env))
        slurmd_argv = [_sbin("slurmd"), "-D", "-f", str(conf), "-N", "localhost"]
        daemons.append(start_server("slurmd", slurmd_argv, logs / "slurmd.out", env=env))
        cluster.pids = {d.name: d.pid for d in daemons}

        def idle() -> bool:
            try:
                out = subprocess.run(
                    ["sinfo", "-h", "-N", "-o", "%T"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout
            except subprocess.TimeoutExpired:
                return False
            return out.strip() == "idle"

        try:
            wait_ready(idle, 60, "the node idle", *daemons)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{cluster.log_tail()}") from None
        cluster.started_s = time.monotonic() - began
        yield cluster
    finally:
        for job in cluster.jobs:  # only the jobs the tests submitted
            subprocess.run(["scancel", job], env=env, capture_output=True, timeout=30)
        for daemon in reversed(daemons):
            daemon.stop(grace=10)  # SIGTERM by PID, SIGKILL after 10 s


def report(config: pytest.Config, line: str) -> None:
    """A line in pytest's output, captured or not (cluster start times for the record)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(line)


# Module scope: one module uses it, and the daemons (Ray: ~500 MB, a few idle processes)
# should not stay up for the rest of the test session.
@pytest.fixture(scope="module")
def slurm_cluster(pytestconfig: pytest.Config) -> Iterator[SlurmCluster]:
    missing = missing_binaries()
    if missing:
        unavailable(
            "Slurm",
            f"Slurm is not installed (missing {', '.join(missing)}): "
            "run `make system-deps` as root (apt-get install slurm-wlm)",
        )
    # Not pytest's tmp folder: munged needs every parent of its socket world-executable.
    root = Path(tempfile.mkdtemp(prefix="nbjob-slurm-"))
    root.chmod(0o755)
    try:
        with slurm(root) as cluster:
            report(pytestconfig, f"Slurm: node idle {cluster.started_s:.1f} s after munged started")
            yield cluster
    finally:
        if not os.environ.get("NBJOB_KEEP_CLUSTER_LOGS"):
            shutil.rmtree(root, ignore_errors=True)
