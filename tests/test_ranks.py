"""Ranks and shards: who this process is, one canonical result, lost peers, sweeps.

The end-to-end tests start two real ``nbjob run`` processes the way a PyTorchJob starts its
replicas (MASTER_ADDR on loopback, a free MASTER_PORT, RANK 0/1, WORLD_SIZE 2, the same
--output) on a notebook that does gloo collectives with torch, and kill rank 1's kernel (or all
of rank 1) mid-collective.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nbjob import config, peerwatch, platforms, ranks
from nbjob.errors import (
    EXIT_CODES,
    CellExecutionError,
    DeadKernelError,
    PeerLostError,
    StoppedError,
    UsageError,
)
from nbjob.platforms import Identity
from nbjob.stop import StopToken
from nbjob.storage import Storage
from support import (
    free_port,
    make_notebook,
    read_json,
    run_nbjob,
    start_nbjob,
    stream_text,
    wait_until,
)

TF_CHIEF = {"chief": ["c:1"], "worker": ["w0:1", "w1:1"], "ps": ["p:1"]}


def tf_config(cluster: dict[str, list[str]], kind: str, index: int) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


# -- the resolver: every source, in order ---------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        ({}, {}, Identity(0, 1, "default")),
        ({"rank": 2, "world_size": 4}, {"RANK": "1", "WORLD_SIZE": "2"}, Identity(2, 4, "flags")),
        ({}, {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, Identity(1, 2, "RANK")),
        ({}, {"RANK": "3", "WORLD_SIZE": "4"}, Identity(3, 4, "RANK")),
        # PyTorchJob with nprocPerNode 2: nbjob runs once per node, RANK is the node rank.
        (
            {},
            {"RANK": "1", "WORLD_SIZE": "4", "PET_NNODES": "2"},
            Identity(1, 2, "RANK (node rank; PET_NNODES)"),
        ),
        # torchrun's per-process ranks win over the node count.
        (
            {},
            {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "PET_NNODES": "2"},
            Identity(3, 4, "RANK"),
        ),
        (
            {},
            {"TF_CONFIG": tf_config(TF_CHIEF, "chief", 0)},
            Identity(0, 4, "TF_CONFIG", "chief:0"),
        ),
        (
            {},
            {"TF_CONFIG": tf_config(TF_CHIEF, "worker", 1)},
            Identity(2, 4, "TF_CONFIG", "worker:1"),
        ),
        (
            {},
            {"TF_CONFIG": tf_config({"worker": ["a", "b"], "ps": ["p"]}, "worker", 0)},
            Identity(0, 3, "TF_CONFIG", "worker:0"),
        ),
        (
            {},
            {"TF_CONFIG": tf_config({"master": ["m"], "worker": ["a"]}, "master", 0)},
            Identity(0, 2, "TF_CONFIG", "master:0"),
        ),
        (
            {},
            {"TF_CONFIG": tf_config({"worker": ["a", "b"]}, "evaluator", 0)},
            Identity(2, 3, "TF_CONFIG", "evaluator:0"),
        ),
        ({}, {"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, Identity(1, 2, "SLURM_PROCID")),
        ({}, {"VC_TASK_INDEX": "2", "VC_WORKER_NUM": "3"}, Identity(2, 3, "VC_TASK_INDEX")),
        ({}, {"VK_TASK_INDEX": "1", "VC_WORKER_NUM": "2"}, Identity(1, 2, "VK_TASK_INDEX")),
        # Several Volcano tasks: the world size is not said.
        (
            {},
            {"VC_TASK_INDEX": "0", "VC_MASTER_NUM": "1", "VC_WORKER_NUM": "2"},
            Identity(0, None, "VC_TASK_INDEX"),
        ),
        ({}, {"LEARNER_ID": "1", "NUM_LEARNERS": "3"}, Identity(0, 3, "LEARNER_ID")),
        ({}, {"LEARNER_ID": "3", "NUM_LEARNERS": "3"}, Identity(2, 3, "LEARNER_ID")),
        # Order: RANK before TF_CONFIG before Slurm before Volcano before FfDL.
        (
            {},
            {
                "RANK": "1",
                "WORLD_SIZE": "2",
                "TF_CONFIG": tf_config(TF_CHIEF, "ps", 0),
                "SLURM_PROCID": "0",
                "SLURM_NTASKS": "1",
                "LEARNER_ID": "1",
            },
            Identity(1, 2, "RANK"),
        ),
        (
            {},
            {"TF_CONFIG": tf_config(TF_CHIEF, "ps", 0), "SLURM_PROCID": "0", "LEARNER_ID": "2"},
            Identity(3, 4, "TF_CONFIG", "ps:0"),
        ),
        (
            {},
            {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "VC_TASK_INDEX": "0", "LEARNER_ID": "1"},
            Identity(1, 2, "SLURM_PROCID"),
        ),
        ({}, {"VC_TASK_INDEX": "0", "LEARNER_ID": "2"}, Identity(0, None, "VC_TASK_INDEX")),
        # Shard indexes are not ranks.
        ({}, {"JOB_COMPLETION_INDEX": "3", "SLURM_ARRAY_TASK_ID": "2"}, Identity(0, 1, "default")),
        # RANK without WORLD_SIZE says nothing; the next source answers.
        (
            {},
            {"RANK": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"},
            Identity(0, 2, "SLURM_PROCID"),
        ),
    ],
)
def test_resolver_order(flags: dict[str, int], env: dict[str, str], expected: Identity) -> None:
    assert platforms.resolve(env, flags).identity == expected


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"rank": 1}, {}, "go together"),
        ({"rank": 2, "world_size": 2}, {}, "does not fit"),
        ({}, {"RANK": "2", "WORLD_SIZE": "2"}, "does not fit"),
        ({}, {"RANK": "x", "WORLD_SIZE": "2"}, "not an integer"),
        ({}, {"TF_CONFIG": "{not json"}, "TF_CONFIG"),
        ({}, {"LEARNER_ID": "0", "NUM_LEARNERS": "2"}, "does not fit"),
    ],
)
def test_resolver_rejects_what_does_not_fit(
    flags: dict[str, int], env: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        platforms.resolve(env, flags)


def shard(flag: int | None, env: dict[str, str]) -> tuple[int | None, str | None]:
    placed = platforms.resolve(env, {"shard": flag})
    return placed.shard, placed.shard_source


def test_shard_sources_in_order() -> None:
    env = {"SLURM_ARRAY_TASK_ID": "2", "JOB_COMPLETION_INDEX": "5"}
    assert shard(7, env) == (7, "flags")
    assert shard(None, env) == (2, "SLURM_ARRAY_TASK_ID")
    assert shard(None, {"JOB_COMPLETION_INDEX": "5"}) == (5, "JOB_COMPLETION_INDEX")
    assert shard(None, {}) == (None, None)


def test_settings_place_each_rank_and_shard() -> None:
    def place(flags: dict[str, Any], env: dict[str, str]) -> tuple[str, str]:
        s = config.resolve({"source": "a.ipynb", "output": "s3://b/run", **flags}, env)
        return s.output, s.dest

    assert place({}, {"RANK": "0", "WORLD_SIZE": "2"}) == ("s3://b/run", "s3://b/run")
    assert place({}, {"RANK": "1", "WORLD_SIZE": "2"}) == ("s3://b/run/ranks/1", "s3://b/run")
    assert place({"rank": "1", "world_size": "3"}, {}) == ("s3://b/run/ranks/1", "s3://b/run")
    assert place({}, {"NBJOB_RANK": "2", "NBJOB_WORLD_SIZE": "3"})[0] == "s3://b/run/ranks/2"
    assert place({"shard": "4"}, {}) == ("s3://b/run/shards/4", "s3://b/run/shards/4")
    assert place({}, {"JOB_COMPLETION_INDEX": "1", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}) == (
        "s3://b/run/shards/1/ranks/1",
        "s3://b/run/shards/1",
    )
    with pytest.raises(UsageError, match="--shard"):
        config.resolve({"source": "a", "shard": "-1"}, {})
    with pytest.raises(UsageError, match="--ranks-wait"):
        config.resolve({"source": "a", "ranks_wait": "soon"}, {})


# -- lost peers ------------------------------------------------------------------------------------

GLOO_RESET = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
    "[127.0.0.1]:44229: Connection reset by peer. This is typically caused by a remote worker "
    "hanging or bugs in the application."
)  # what torch 2.13's gloo said here when the other rank was SIGKILLed
GLOO_TIMEOUT = (
    "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 30000ms "
    "for recv operation to complete"
)


def cell_error(ename: str, evalue: str) -> CellExecutionError:
    return CellExecutionError(f"cell 2 raised {ename}: {evalue}", cell_index=2, ename=ename,
                              evalue=evalue)  # fmt: skip


@pytest.mark.parametrize(
    ("ename", "evalue", "lost"),
    [
        ("RuntimeError", GLOO_RESET, True),
        ("RuntimeError", "Connection closed by peer [127.0.0.1]:5012", True),
        ("RuntimeError", GLOO_TIMEOUT, True),
        ("DistBackendError", "NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled error", True),
        ("RuntimeError", "NCCL communicator was aborted on rank 0.", True),
        ("DistStoreError", "Timed out after 31 seconds waiting for clients. 1/2 clients", True),
        ("RuntimeError", "CUDA out of memory. Tried to allocate 2.00 GiB", False),
        ("TimeoutError", "timed out", False),  # not a collective's message
        ("ZeroDivisionError", "division by zero", False),
    ],
)
def test_lost_peer_errors(ename: str, evalue: str, lost: bool) -> None:
    error = ranks.classify(cell_error(ename, evalue), Identity(0, 2, "RANK"))
    assert isinstance(error, PeerLostError) is lost
    if lost:
        assert error.exit_code == 200 and error.status == "peer_lost"
        assert error.details["cell_index"] == 2 and "rank 0 lost a peer" in error.reason
    # A single-process run has no peers; other endings are never a lost peer.
    alone = cell_error(ename, evalue)
    assert ranks.classify(alone, Identity()) is alone
    died = DeadKernelError("kernel died")
    assert ranks.classify(died, Identity(0, 2)) is died


def test_lost_peer_code_is_retried_by_kubeflow_and_not_a_signal() -> None:
    code = PeerLostError.exit_code
    assert EXIT_CODES[code] is PeerLostError
    assert 128 + 64 < code <= 255  # retried by ExitCode; above 128 + any Linux signal number


def write_record(folder: Path, **fields: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps({"run_id": "r1", **fields}))


def own_record(**fields: Any) -> dict[str, Any]:
    return {"run_id": "r1", "started_at": "2026-01-01T10:00:00.000+00:00", **fields}


def test_gather_reads_every_rank_and_names_the_first_to_fail(tmp_path: Path) -> None:
    """Real files through the real local store; rank 3's record is an old run's."""
    t = "2026-01-01T10:0{}:00.000+00:00".format
    write_record(tmp_path / "ranks/1", status="kernel_died", exit_code=5, ended_at=t(5),
                 failed_cell={"index": 2}, cells=[{"index": 2, "ended_at": t(4)}])  # fmt: skip
    write_record(tmp_path / "ranks/2", status="peer_lost", exit_code=200, ended_at=t(4))
    write_record(tmp_path / "ranks/3", status="succeeded", exit_code=0, ended_at=t(1),
                 run_id="older")  # fmt: skip
    own = own_record(status="peer_lost", exit_code=200, ended_at=t(6))
    started = time.monotonic()
    entries, waited = ranks.gather(Storage(), str(tmp_path), Identity(0, 5), own, 1.0)
    assert 0.9 <= time.monotonic() - started < 3 and waited >= 0.9  # ranks 3, 4: waited for
    by_rank = {e["rank"]: e for e in entries}
    assert [e["rank"] for e in entries] == [0, 1, 2, 3, 4]
    assert by_rank[1]["failed_at"] == t(4) and by_rank[1]["exit_code"] == 5
    assert by_rank[3]["status"] == "unknown" and "another run" in by_rank[3]["reason"]
    assert by_rank[4] == {
        "rank": 4,
        "status": "missing",
        "exit_code": None,
        "reason": "no run.json",
    }
    assert ranks.first_failed(entries) == 1  # the first failure that is not a lost peer


def test_first_failed_without_a_hard_failure() -> None:
    lost = {"status": "peer_lost", "exit_code": 200}
    assert ranks.first_failed([{"rank": 0, **lost}, {"rank": 1, "status": "unknown"}]) == 1
    assert ranks.first_failed([
        {"rank": 0, **lost, "ended_at": "2026-01-01T10:00:02+00:00"},
        {"rank": 1, **lost, "ended_at": "2026-01-01T10:00:01+00:00"},
    ]) == 1  # fmt: skip
    ok = {"status": "succeeded", "exit_code": 0}
    assert ranks.first_failed([{"rank": 0, **ok}, {"rank": 1, "status": "missing"}]) is None


def test_gather_reads_nothing_once_stopping(tmp_path: Path) -> None:
    write_record(tmp_path / "ranks/1", status="succeeded", exit_code=0)
    own = own_record(status="stopped", exit_code=143)
    entries, waited = ranks.gather(
        Storage(), str(tmp_path), Identity(0, 2), own, 30.0, lambda: True
    )
    assert waited == 0.0 and entries[1]["status"] == "unknown"
    assert entries[1]["reason"] == "not read: stopping"


def test_gather_stops_waiting_once_every_rank_reported(tmp_path: Path) -> None:
    write_record(tmp_path / "ranks/1", status="succeeded", exit_code=0, ended_at=None)
    started = time.monotonic()
    entries, _ = ranks.gather(Storage(), str(tmp_path), Identity(0, 2), own_record(), 30.0)
    assert time.monotonic() - started < 1.0
    assert entries[1]["status"] == "succeeded"


# -- two real ranks with gloo ---------------------------------------------------------------------

SETUP = """import datetime, os, pathlib, time
import torch, torch.distributed as dist
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
rank = dist.get_rank()
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
print("sum", t.item())"""

COLLECTIVES = """pid_file = pathlib.Path(os.environ["PID_DIR"], f"kernel-{rank}.pid")
pid_file.write_text(str(os.getpid()))
for step in range(1200):  # about a minute of collectives: the test kills a rank long before
    dist.all_reduce(t)
    time.sleep(0.05)"""


def start_ranks(nb: Path, out: Path, pid_dir: Path, *extra: str) -> list[Any]:
    port = str(free_port())
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2",
              "GLOO_SOCKET_IFNAME": "lo", "PID_DIR": str(pid_dir), "OMP_NUM_THREADS": "1",
              "NBJOB_RUN_ID": "ddp-1"}  # fmt: skip
    return [
        start_nbjob("run", nb, "--output", out, *extra, env={**common, "RANK": str(rank)})
        for rank in (0, 1)
    ]


@contextlib.contextmanager
def killed_after(procs: list[Any]) -> Iterator[list[Any]]:
    """The nbjob processes, killed (with what is left of their process groups) afterwards."""
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()


def test_two_ranks_one_canonical_result(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "src" / "ddp.ipynb", [SETUP, "dist.destroy_process_group()"])
    out = tmp_path / "out"
    procs = start_ranks(nb, out, tmp_path)
    codes = [p.wait(90).returncode for p in procs]
    assert codes == [0, 0], [p.output()[1][-2000:] for p in procs]
    # Rank 0: exactly the layout of a single-process run, plus ranks/.
    top = {p.name for p in out.iterdir()}
    assert top == {"ddp.ipynb", "ddp.html", "run.json", "executor.log", "resources.jsonl",
                   "ranks"}, top  # fmt: skip
    assert {p.name for p in (out / "ranks").iterdir()} == {"1"}
    assert {p.name for p in (out / "ranks" / "1").iterdir()} == {
        "ddp.ipynb",
        "ddp.html",
        "run.json",
        "executor.log",
        "resources.jsonl",
    }
    run, run1 = read_json(out / "run.json"), read_json(out / "ranks/1/run.json")
    assert run["identity"] == {"rank": 0, "world_size": 2, "source": "RANK", "canonical": True}
    assert run1["identity"]["rank"] == 1 and run1["identity"]["canonical"] is False
    assert "ranks" not in run1  # only the canonical rank gathers
    assert [(e["rank"], e["status"], e["exit_code"]) for e in run["ranks"]] == [
        (0, "succeeded", 0),
        (1, "succeeded", 0),
    ]
    assert run["first_failed_rank"] is None and run["ranks_waited_s"] < 60
    both = [json.loads(p.read_text()) for p in (out / "ddp.ipynb", out / "ranks/1/ddp.ipynb")]
    for executed in both:  # 1 + 2: both ranks took part in the same all_reduce
        assert "sum 3.0\n" in stream_text(executed)


def pid_of(path: Path) -> int:
    found = wait_until(lambda: path.exists() and path.read_text(), timeout=60)
    assert found, f"{path} never appeared"
    return int(found)


def test_killed_kernel_gives_the_survivor_the_lost_peer_code(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "src" / "ddp.ipynb", [SETUP, COLLECTIVES])
    out = tmp_path / "out"
    with killed_after(start_ranks(nb, out, tmp_path, "--ranks-wait", "20")) as procs:
        pid_of(tmp_path / "kernel-0.pid")
        os.kill(pid_of(tmp_path / "kernel-1.pid"), signal.SIGKILL)  # mid-collective
        killed = time.monotonic()
        rank0 = procs[0].wait(60)
        took = time.monotonic() - killed
    assert rank0.returncode == 200, rank0.stderr[-3000:]
    assert took < 15, took  # promptly: gloo notices at once; rank 1's record arrives soon
    run = read_json(out / "run.json")
    assert run["status"] == "peer_lost" and run["exit_code"] == 200
    # gloo's "Connection reset by peer" (at once), or rank 1's run.json (PeerWatch) if first.
    gloo = "Connection" in (run["failed_cell"].get("evalue") or "")
    assert run["failed_cell"]["index"] == 1 and (gloo or "rank 1 ended" in run["reason"])
    assert run["first_failed_rank"] == 1 and "rank 1 went first" in run["reason"]
    entries = {e["rank"]: e for e in run["ranks"]}
    assert (entries[1]["status"], entries[1]["exit_code"]) == ("kernel_died", 5)
    assert (entries[0]["status"], entries[0]["exit_code"]) == ("peer_lost", 200)


ABORT_ON_PEER_ERROR = """pid_file = pathlib.Path(os.environ["PID_DIR"], f"kernel-{rank}.pid")
pid_file.write_text(str(os.getpid()))
try:
    for step in range(1200):
        dist.all_reduce(t)
        time.sleep(0.05)
except RuntimeError:
    os.abort()  # what NCCL's error handling does to the process when a peer is gone"""


@pytest.mark.parametrize("first", [1, 0])
def test_a_kernel_aborted_after_its_peer_died_is_a_lost_peer(tmp_path: Path, first: int) -> None:
    """NCCL aborts the process (SIGABRT) when a peer is gone: the rank whose kernel that was is
    ``peer_lost`` (200); the rank whose kernel was killed first stays ``kernel_died`` (5)."""
    nb = make_notebook(tmp_path / "src" / "ddp.ipynb", [SETUP, ABORT_ON_PEER_ERROR])
    out = tmp_path / "out"
    with killed_after(start_ranks(nb, out, tmp_path, "--ranks-wait", "20")) as procs:
        pid_of(tmp_path / f"kernel-{1 - first}.pid")
        os.kill(pid_of(tmp_path / f"kernel-{first}.pid"), signal.SIGKILL)
        codes = [p.wait(60).returncode for p in procs]
    expected = [5, 200] if first == 0 else [200, 5]
    assert codes == expected, [p.output()[1][-2000:] for p in procs]
    run = read_json(out / "run.json")
    assert run["first_failed_rank"] == first
    survivor = read_json(out / "run.json" if first else out / "ranks/1/run.json")
    assert survivor["status"] == "peer_lost", survivor["reason"]
    assert f"rank {first} ended kernel_died (exit 5)" in survivor["reason"]
    assert "SIGABRT" in survivor["reason"]  # its own kernel's end is kept in the reason


def test_lost_rank_process_group_is_named_from_its_last_checkpoint(tmp_path: Path) -> None:
    """All of rank 1 (nbjob and its kernel) SIGKILLed: no final record; rank 0 says so."""
    nb = make_notebook(tmp_path / "src" / "ddp.ipynb", [SETUP, COLLECTIVES])
    out = tmp_path / "out"
    with killed_after(start_ranks(nb, out, tmp_path, "--ranks-wait", "2")) as procs:
        pid_of(tmp_path / "kernel-0.pid")
        kernel1 = pid_of(tmp_path / "kernel-1.pid")
        os.killpg(procs[1].proc.pid, signal.SIGKILL)  # the nbjob of rank 1 ...
        os.kill(kernel1, signal.SIGKILL)  # ... and its kernel (a session of its own)
        rank0 = procs[0].wait(60)
    assert rank0.returncode == 200, rank0.stderr[-3000:]
    run = read_json(out / "run.json")
    entries = {e["rank"]: e for e in run["ranks"]}
    assert entries[1]["status"] in ("unknown", "missing"), entries[1]
    assert run["first_failed_rank"] == 1 and 1.5 <= run["ranks_waited_s"] < 5


HUNG = """import os, pathlib, signal, time
pathlib.Path(os.environ["PID_DIR"], f"kernel-{os.environ['TEST_RANK']}.pid").write_text(
    str(os.getpid()))
signal.signal(signal.SIGINT, signal.SIG_IGN)  # like a collective stuck in C++: no interrupt
time.sleep(120)"""


def test_peer_record_ends_a_hung_rank(tmp_path: Path) -> None:
    """No collective error ever comes (a hang): rank 1's failed run.json ends rank 0's run."""
    nb = make_notebook(tmp_path / "src" / "hang.ipynb", [HUNG])
    out = tmp_path / "out"
    procs = [
        start_nbjob(
            "run",
            nb,
            "--output",
            out,
            "--rank",
            str(rank),
            "--world-size",
            "2",
            "--stop-grace",
            "3",
            "--run-id",
            "hang-1",
            env={"PID_DIR": str(tmp_path), "TEST_RANK": str(rank)},
        )
        for rank in (0, 1)
    ]
    with killed_after(procs):
        pid_of(tmp_path / "kernel-0.pid")
        os.kill(pid_of(tmp_path / "kernel-1.pid"), signal.SIGKILL)
        killed = time.monotonic()
        rank0 = procs[0].wait(60)
        took = time.monotonic() - killed
        assert procs[1].wait(30).returncode == 5
    assert rank0.returncode == 200, rank0.stderr[-3000:]
    assert took < 10, took  # rank 1's record (< 1 s), one watch tick (1 s), the wind-down (1 s)
    run = read_json(out / "run.json")
    assert run["status"] == "peer_lost" and run["cells"][0]["status"] == "interrupted"
    assert run["reason"].startswith("rank 0 lost a peer: rank 1 ended kernel_died (exit 5)")
    assert run["first_failed_rank"] == 1
    assert [(e["rank"], e["exit_code"]) for e in run["ranks"]] == [(0, 200), (1, 5)]


def test_a_peer_that_failed_before_this_run_began_is_not_a_lost_peer(tmp_path: Path) -> None:
    """An earlier attempt's failed record (same run id) must not end the new attempt."""
    write_record(tmp_path / "ranks/1", status="kernel_died", exit_code=5,
                 ended_at="2026-01-01T09:59:00.000+00:00")  # fmt: skip
    own = own_record()
    with ranks.PeerWatch(Storage(), settings_for(tmp_path), StopToken(), own) as watch:
        time.sleep(ranks.WATCH_S * 1.5)
        assert watch.lost is None and not watch.token.requested
        write_record(tmp_path / "ranks/1", status="kernel_died", exit_code=5,
                     ended_at="2026-01-01T10:00:01.000+00:00")  # fmt: skip
        assert wait_until(lambda: watch.token.requested, timeout=5)
    assert watch.lost == "rank 1 ended kernel_died (exit 5)"


def test_watch_passes_a_real_stop_on_at_once(tmp_path: Path) -> None:
    outer = StopToken()
    with ranks.PeerWatch(Storage(), settings_for(tmp_path), outer, own_record()) as watch:
        assert not watch.token.requested
        outer.request("stopped by SIGTERM", "SIGTERM")
        assert watch.token.requested  # at once, not at the watch's next read
    assert (watch.token.reason, watch.token.signal) == ("stopped by SIGTERM", "SIGTERM")
    assert watch.lost is None
    stopped = ranks.classify(StoppedError("stopped by SIGTERM"), Identity(0, 2), watch)
    assert isinstance(stopped, StoppedError)  # a real stop stays a stop


def settings_for(dest: Path) -> config.Settings:
    return config.resolve({"source": "a.ipynb", "output": str(dest), "rank": "0",
                           "world_size": "2"}, {})  # fmt: skip


# -- frozen peers: heartbeats ---------------------------------------------------------------------


def test_a_heartbeat_is_stale_only_after_it_was_seen_moving() -> None:
    """Pure bookkeeping with a given clock: an old record that never beats is never stale; a
    beat that stops is, after the bound; the time this rank itself was away counts little."""
    beat = peerwatch._Beat()
    for second in range(100):  # an earlier attempt's record: one value, forever
        beat.observe("t0", float(second), cap=3.0)
    assert not beat.stale(30.0)
    beat = peerwatch._Beat()
    for second in range(10):  # a beat a second, then silence
        beat.observe(f"t{second}", float(second), cap=3.0)
    for second in range(10, 40):
        beat.observe("t9", float(second), cap=3.0)
    assert beat.still_s == 30.0 and not beat.stale(30.0)
    beat.observe("t9", 41.0, cap=3.0)
    assert beat.stale(30.0)
    beat = peerwatch._Beat()
    beat.observe("a", 0.0, cap=3.0)
    beat.observe("b", 1.0, cap=3.0)
    beat.observe("b", 500.0, cap=3.0)  # this rank was suspended: 3 s of it count
    assert beat.still_s == 3.0 and not beat.stale(30.0)
    beat.observe("c", 501.0, cap=3.0)  # a gap seen between beats stretches the bound
    assert beat.longest_s == 4.0 and beat.still_s == 0.0


def running_record(beat: str, **fields: Any) -> dict[str, Any]:
    return {"status": "running", "started_at": "2026-01-01T10:00:00.000+00:00",
            "progress": {"running_cell": 1}, "heartbeat_at": beat, **fields}  # fmt: skip


def test_watch_loses_a_peer_whose_heartbeat_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 1's record beats, then stands still while its cell runs: rank 0's watch ends the
    cell (``lost``), and rank 0's end does not wait for rank 1's final record."""
    monkeypatch.setattr(peerwatch, "STALE_MIN_S", 2.0)  # the bound, short for the test
    peer = tmp_path / "ranks/1"
    settings = dataclasses.replace(settings_for(tmp_path), checkpoint_interval=0.5)
    with ranks.PeerWatch(Storage(), settings, StopToken(), own_record()) as watch:
        assert watch.stale_after == 2.0
        for n in range(4):  # beating: nothing happens
            write_record(peer, **running_record(f"2026-01-01T10:00:0{n}.000+00:00"))
            time.sleep(ranks.WATCH_S * 0.7)
        assert not watch.token.requested
        frozen = time.monotonic()
        assert wait_until(lambda: watch.token.requested, timeout=10)
        took = time.monotonic() - frozen
    assert 2.0 < took < 5.0, took  # the bound, plus a read or two
    assert watch.lost and watch.lost.startswith("rank 1 froze (its heartbeat stopped")
    assert "while its cell 1 was running" in watch.lost and 1 in watch.stale
    lost = ranks.classify(StoppedError("stopped", cell_index=2), Identity(0, 2), watch)
    assert isinstance(lost, PeerLostError) and "rank 1 froze" in lost.reason
    started = time.monotonic()
    entries, _ = ranks.gather(Storage(), str(tmp_path), Identity(0, 2), own_record(), 30.0,
                              gone=watch.stale)  # fmt: skip
    assert time.monotonic() - started < 1.0  # not waited for
    assert entries[1]["status"] == "unknown" and "heartbeat stopped" in entries[1]["reason"]


def test_watch_leaves_a_peer_alone_that_is_not_in_a_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer between cells or in its own end (no running cell) may stay silent."""
    monkeypatch.setattr(peerwatch, "STALE_MIN_S", 1.0)
    peer = tmp_path / "ranks/1"
    with ranks.PeerWatch(Storage(), settings_for(tmp_path), StopToken(), own_record()) as watch:
        for n in range(3):
            write_record(peer, **running_record(f"2026-01-01T10:00:0{n}.000+00:00",
                                                progress={"running_cell": None}))  # fmt: skip
            time.sleep(ranks.WATCH_S * 0.7)
        time.sleep(ranks.WATCH_S * 4)
        assert not watch.token.requested and watch.lost is None


FROZEN_RANK = "--checkpoint-interval", "1", "--ranks-wait", "20"
PATIENT_SETUP = SETUP.replace("seconds=30", "seconds=300")  # gloo's own timeout out of the way
assert PATIENT_SETUP != SETUP


def test_a_stopped_kernel_ends_its_rank_and_the_peer_loses_it(tmp_path: Path) -> None:
    """Rank 1's kernel SIGSTOPped mid-collective (its connections stay open): rank 1 kills it
    after three checkpoint intervals (at least 5 s) and ends kernel_died (5); rank 0 ends
    peer_lost (200) soon after."""
    nb = make_notebook(tmp_path / "src" / "ddp.ipynb", [PATIENT_SETUP, COLLECTIVES])
    out = tmp_path / "out"
    with killed_after(start_ranks(nb, out, tmp_path, *FROZEN_RANK)) as procs:
        pid_of(tmp_path / "kernel-0.pid")
        kernel1 = pid_of(tmp_path / "kernel-1.pid")
        os.kill(kernel1, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            rank0 = procs[0].wait(90)
            took = time.monotonic() - stopped
            rank1 = procs[1].wait(30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(kernel1, signal.SIGKILL)
    assert (rank0.returncode, rank1.returncode) == (200, 5), rank1.stderr[-3000:]
    # frozen_after (5 s), rank 1's record, a watch read or gloo's reset, the wind-down (3.3 s)
    assert took < 5 + ranks.WATCH_S + 3.4 + 8, took
    run1 = read_json(out / "ranks/1/run.json")
    assert run1["status"] == "kernel_died"
    assert run1["reason"].startswith("rank 1's kernel was stopped by a signal (SIGSTOP) for ")
    assert "while cell 1 was running: killed, so that the other ranks" in run1["reason"]
    run = read_json(out / "run.json")
    assert run["status"] == "peer_lost" and run["first_failed_rank"] == 1


def test_a_frozen_rank_is_lost_by_its_heartbeat(tmp_path: Path) -> None:
    """All of rank 1 SIGSTOPped (a hung node: nbjob and kernel, connections open): its run.json
    stops beating; rank 0 ends peer_lost within the bound (30 s, as 3 x 1 s is less) plus the
    interrupt wait, without waiting --ranks-wait for rank 1's final record."""
    nb = make_notebook(tmp_path / "src" / "ddp.ipynb", [PATIENT_SETUP, COLLECTIVES])
    out = tmp_path / "out"
    with killed_after(start_ranks(nb, out, tmp_path, *FROZEN_RANK)) as procs:
        pid_of(tmp_path / "kernel-0.pid")
        kernel1 = pid_of(tmp_path / "kernel-1.pid")
        time.sleep(3)  # rank 0 sees rank 1's heartbeat move
        os.kill(procs[1].proc.pid, signal.SIGSTOP)
        os.kill(kernel1, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            rank0 = procs[0].wait(120)
            took = time.monotonic() - stopped
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(kernel1, signal.SIGKILL)
    assert rank0.returncode == 200, rank0.stderr[-3000:]
    assert peerwatch.STALE_MIN_S < took < peerwatch.STALE_MIN_S + 3.4 + 15, took
    run = read_json(out / "run.json")
    assert run["status"] == "peer_lost"
    assert run["reason"].startswith("rank 0 lost a peer: rank 1 froze (its heartbeat stopped")
    entries = {e["rank"]: e for e in run["ranks"]}
    assert entries[1]["status"] == "unknown" and "heartbeat stopped" in entries[1]["reason"]
    assert run["first_failed_rank"] == 1 and run["ranks_waited_s"] < 5


# -- sweeps ----------------------------------------------------------------------------------------

SWEEP = [{"lr": 0.1, "tag": "a"}, {"lr": 0.01, "tag": "b"}, {"lr": 0.001, "tag": "c"}]


def test_sweep_runs_each_shard_with_its_parameters(tmp_path: Path) -> None:
    nb = make_notebook(
        tmp_path / "src" / "nb.ipynb",
        [("code", "lr = 1.0\ntag = 'none'", ["parameters"]), "print(tag, lr)"],
    )
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(json.dumps(SWEEP))
    out = tmp_path / "out"
    args = ("run", nb, "--output", out, "--parameters-file", sweep, "--run-id", "sweep-1")
    procs = [  # each shard source once: the flag, a Slurm array, a Kubernetes Indexed Job
        start_nbjob(*args, "--shard", "0"),
        start_nbjob(*args, env={"SLURM_ARRAY_TASK_ID": "1"}),
        start_nbjob(*args, env={"JOB_COMPLETION_INDEX": "2"}),
    ]
    assert [p.wait(90).returncode for p in procs] == [0, 0, 0]
    sources = ["flags", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"]
    assert sorted(p.name for p in out.iterdir()) == ["shards"]
    for index, expected in enumerate(SWEEP):
        run = read_json(out / "shards" / str(index) / "run.json")
        assert run["shard"] == index and run["parameters"] == expected
        assert run["identity"]["shard_source"] == sources[index]
        executed = json.loads((out / "shards" / str(index) / "nb.ipynb").read_text())
        assert (
            executed["cells"][-1]["outputs"][0]["text"] == f"{expected['tag']} {expected['lr']}\n"
        )


def test_sweep_without_or_outside_a_shard_is_invalid_input(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", ["print(1)"])
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps(SWEEP))
    out = tmp_path / "out"
    args = ("run", nb, "--output", out, "--parameters-file", sweep)
    proc = run_nbjob(*args)
    assert proc.returncode == 3
    reason = read_json(out / "run.json")["reason"]
    assert "holds a list of 3 parameter sets" in reason and "--shard" in reason
    assert proc.last_event["reason"] == reason and "\n" not in reason
    proc = run_nbjob(*args, env={"JOB_COMPLETION_INDEX": "3"})
    assert proc.returncode == 3
    run = read_json(out / "shards" / "3" / "run.json")
    assert run["shard"] == 3 and "shard 3 is out of range (0..2)" in run["reason"]


def test_identity_that_does_not_fit_is_a_one_line_usage_error(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", ["print(1)"])
    proc = run_nbjob("run", nb, "--output", tmp_path / "out", env={"RANK": "2", "WORLD_SIZE": "2"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "nbjob: error: rank 2 does not fit world size 2 (from RANK)"
