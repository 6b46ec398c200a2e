"""The Slurm recipes in examples/platforms, submitted with sbatch to a real one-node cluster.

The cluster (``slurm.py``) is started once per session on loopback with a fake GPU gres. Each
test packs a bundle with ``nbjob pack``, submits a recipe with ``sbatch`` and reads the job's
end from ``scontrol show job`` (no slurmdbd, so no sacct) and the results from a local
destination folder: success on a GPU, ``scancel`` mid-cell (143, partial results stored),
``scontrol requeue`` (attempt 2, attempt 1 kept under attempts/1/), ``--signal=B:USR1@N``
before the time limit, ``srun -n 2`` and an array job.

Jobs get their environment from sbatch (``--export``): the tests pass this checkout's nbjob
(``NBJOB``, beside ``sys.executable``) and ``PYTHONPATH`` explicitly, so any checkout works.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from slurm import SlurmCluster, slurm_cluster
from support import S3Server, free_port, make_notebook, read_json, stream_text, wait_until

__all__ = ["slurm_cluster"]  # the fixture, imported for pytest

pytestmark = [pytest.mark.clusters, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
PLATFORMS = ROOT / "examples" / "platforms"
# This checkout's nbjob as a command the recipes' NBJOB takes (words split by the shell): the
# module, not the venv's console script, which belongs to whichever checkout installed it.
NBJOB = [sys.executable, "-m", "nbjob"]
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def job_env(cluster: SlurmCluster, **extra: str) -> dict[str, str]:
    """What sbatch exports to the job: this checkout's nbjob, JSON logs, nothing of NBJOB_*."""
    env = {k: v for k, v in cluster.env.items() if not k.startswith(("NBJOB_", "AWS_"))}
    env.update(NBJOB=" ".join(NBJOB), PYTHONPATH=str(ROOT / "executor"), NBJOB_LOG_FORMAT="json")
    env.update(extra)
    return env


def sbatch(cluster: SlurmCluster, tmp: Path, *args: str, **env: str) -> str:
    """``sbatch ARGS`` with the job's output in ``tmp``; the job id."""
    proc = subprocess.run(
        ["sbatch", "--parsable", f"--output={tmp}/slurm-%j.out", f"--chdir={tmp}", *args],
        env=job_env(cluster, **env),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().split(";")[0]
    cluster.jobs.append(job)
    return job


def pack(tmp: Path, cells: list[Any]) -> Path:
    """A bundle made by ``nbjob pack`` from a notebook of ``cells``."""
    nb = make_notebook(tmp / "src" / "train.ipynb", cells)
    bundle = tmp / "train.zip"
    proc = subprocess.run(
        [*NBJOB, "pack", str(nb), "-o", str(bundle)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT / "executor")},
    )
    assert proc.returncode == 0, proc.stderr
    return bundle


def job_log(tmp: Path, job: str) -> str:
    path = tmp / f"slurm-{job}.out"
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no job output)"


def why(cluster: SlurmCluster, tmp: Path, job: str, states: list[str]) -> str:
    """What a failed job assertion shows: the job's output, the states it went through, its
    record now, and the daemons' logs (the CI's cluster is gone after the run)."""
    record = cluster.run("scontrol", "show", "job", job, check=False)
    return (
        f"{job_log(tmp, job)}\n--- states: {states}\n--- scontrol show job:\n{record}\n"
        f"{cluster.log_tail(6000)}"
    )


def running_cell(dest: Path, marker: Path, timeout: float = 90) -> dict[str, Any]:
    """Wait (bounded) until the cell wrote ``marker`` and run.json shows the run going."""

    def seen() -> dict[str, Any] | None:
        if not marker.exists() or not (dest / "run.json").exists():
            return None
        try:
            record = read_json(dest / "run.json")
        except ValueError:
            return None  # being rewritten
        return record if record.get("status") == "running" else None

    record = wait_until(seen, timeout, 0.2)
    assert record, f"the cell did not start within {timeout} s"
    return dict(record)


PARAMS = ("code", "marker = ''\nattempt_sleep = 0", ["parameters"])
SLOW_CELL = (
    "import os, pathlib, time\n"
    "print('attempt', os.environ.get('NBJOB_ATTEMPT'), flush=True)\n"
    "pathlib.Path(marker).write_text(os.environ.get('NBJOB_ATTEMPT', ''))\n"
    "time.sleep(attempt_sleep if os.environ.get('NBJOB_ATTEMPT') == '1' else 0)\n"
    "print('cell done', flush=True)"
)


# -- one GPU job ------------------------------------------------------------------------------


def test_sbatch_recipe_runs_a_bundle_on_a_gpu(slurm_cluster: SlurmCluster, tmp_path: Path):
    bundle = pack(
        tmp_path,
        [
            "import os\nprint('CUDA_VISIBLE_DEVICES=' + os.environ['CUDA_VISIBLE_DEVICES'])",
            "print('job', os.environ['SLURM_JOB_ID'])",
        ],
    )
    out = tmp_path / "runs"
    job = sbatch(slurm_cluster, tmp_path, str(PLATFORMS / "slurm.sbatch"), str(bundle), str(out))
    info = slurm_cluster.wait_state(job, DONE, 120)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), job_log(tmp_path, job)
    assert info["TresPerNode"] == "gres:gpu:1"  # the recipe's --gres=gpu:1
    dest = out / job
    record = read_json(dest / "run.json")
    assert (record["status"], record["exit_code"], record["run_id"]) == ("succeeded", 0, job)
    assert record["platform"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert record["platform"]["SLURM_JOB_ID"] == job
    assert record["attempt"] == 1
    text = stream_text(nbformat.read(dest / "train.ipynb", as_version=4))
    assert "CUDA_VISIBLE_DEVICES=0" in text and f"job {job}" in text
    assert (dest / "executor.log").stat().st_size > 0


# -- stops --------------------------------------------------------------------------------------


def submit_long_job(
    slurm_cluster: SlurmCluster, tmp_path: Path, *sbatch_options: str
) -> tuple[str, Path]:
    """The recipe on a notebook whose second cell sleeps 300 s; (job id, its results folder)
    once that cell is running."""
    bundle = pack(tmp_path, [PARAMS, SLOW_CELL, "print('never runs')"])
    out, marker = tmp_path / "runs", tmp_path / "started"
    job = sbatch(
        slurm_cluster,
        tmp_path,
        *sbatch_options,
        str(PLATFORMS / "slurm.sbatch"),
        str(bundle),
        str(out),
        "-p", "marker", str(marker), "-p", "attempt_sleep", "300",
    )  # fmt: skip
    running_cell(out / job, marker)
    return job, out / job


def test_scancel_mid_cell_exits_143_with_results_stored(
    slurm_cluster: SlurmCluster, tmp_path: Path
):
    job, dest = submit_long_job(slurm_cluster, tmp_path)
    stopped_at = time.monotonic()
    slurm_cluster.run("scancel", job)
    info = slurm_cluster.wait_state(job, DONE, 60)
    took = time.monotonic() - stopped_at
    assert info["JobState"] == "CANCELLED", info
    assert info["ExitCode"] == "143:0", (info, job_log(tmp_path, job))
    assert took < 20, f"the job took {took:.1f} s to end after scancel"
    record = read_json(dest / "run.json")
    assert (record["status"], record["exit_code"]) == ("stopped", 143), record["reason"]
    assert "SIGTERM" in record["reason"]
    # Slurm signals every process of the job step, so the kernel gets SIGTERM too (unlike a
    # container's PID 1 only): the cell ends as interrupted or with its kernel killed; the run
    # is a stop either way.
    stopped_cell, after = record["cells"][-2:]
    assert stopped_cell["status"] in {"interrupted", "kernel_died"}, stopped_cell
    assert after["status"] == "pending"
    nb = nbformat.read(dest / "train.ipynb", as_version=4)
    assert "attempt 1" in stream_text(nb)  # the partial output of the stopped cell
    assert "never runs" not in stream_text(nb)


def test_signal_before_the_time_limit_is_a_stop(slurm_cluster: SlurmCluster, tmp_path: Path):
    """``--signal=B:USR1@50`` with a 1-minute limit: USR1 reaches nbjob (the recipe's stop
    signals are TERM,INT,USR1) well before the limit's SIGTERM, and the results are stored."""
    job, dest = submit_long_job(slurm_cluster, tmp_path, "--time=1", "--signal=B:USR1@50")
    info = slurm_cluster.wait_state(job, DONE, 100)
    assert info["ExitCode"] == "143:0", (info, job_log(tmp_path, job))
    assert info["JobState"] == "FAILED", info  # ended by itself (143), before the time limit
    record = read_json(dest / "run.json")
    assert (record["status"], record["exit_code"]) == ("stopped", 143)
    assert "SIGUSR1" in record["reason"], record["reason"]
    assert record["duration_s"] < 58


# -- retries ------------------------------------------------------------------------------------


CHECKPOINT = (
    "import os, pathlib\n"
    "art = pathlib.Path(os.environ['NBJOB_ARTIFACTS_DIR'])\n"
    "ckpt = art / 'ckpt.txt'\n"
    "print('resumed from', ckpt.read_text() if ckpt.exists() else None, flush=True)\n"
    "if not ckpt.exists():\n"
    "    (art / 'ckpt.tmp').write_text('epoch 3')\n"
    "    os.replace(art / 'ckpt.tmp', ckpt)  # write, then rename"
)


def test_requeue_comes_back_as_attempt_2_and_resumes(
    slurm_cluster: SlurmCluster, s3_server: S3Server, bucket: str, tmp_path: Path
):
    """``scontrol requeue`` of a running job: SIGTERM (attempt 1 stored, 143), then the same
    job id again with SLURM_RESTART_COUNT=1: attempt 2, attempt 1 kept under attempts/1/ and
    its checkpoint restored from S3 before the first cell."""
    bundle = pack(tmp_path, [PARAMS, CHECKPOINT, SLOW_CELL, "print('after the cell')"])
    marker = tmp_path / "started"
    job = sbatch(
        slurm_cluster,
        tmp_path,
        str(PLATFORMS / "slurm.sbatch"),
        str(bundle),
        f"s3://{bucket}/runs",
        "-p", "marker", str(marker), "-p", "attempt_sleep", "300",
        **s3_server.env,
    )  # fmt: skip
    prefix = f"runs/{job}/"

    def attempt_1_running() -> bool:
        keys = s3_server.keys(bucket, prefix)
        if not marker.exists() or f"{prefix}artifacts/ckpt.txt" not in keys:
            return False
        if f"{prefix}run.json" not in keys:
            return False
        return bool(json.loads(s3_server.get(bucket, f"{prefix}run.json"))["status"] == "running")

    assert wait_until(attempt_1_running, 90, 0.3), job_log(tmp_path, job)
    marker.unlink()
    slurm_cluster.run("scontrol", "requeue", job)
    states: list[str] = []  # the job's states from the requeue on, for a failure's message

    def pending() -> bool:
        info = slurm_cluster.job(job)
        seen = f"{info.get('JobState')} {info.get('Reason')} {info.get('ExitCode')}"
        if not states or states[-1] != seen:
            states.append(seen)
        return info.get("JobState") == "PENDING"

    # Slurm holds a requeued job for 120 s (its BeginTime); make it eligible now.
    assert wait_until(pending, 60, 0.25), why(slurm_cluster, tmp_path, job, states)
    slurm_cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now", check=False)
    info = slurm_cluster.wait_state(job, DONE, 120)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), why(
        slurm_cluster, tmp_path, job, states
    )
    assert info["Restarts"] == "1"

    def get(name: str) -> bytes:
        return s3_server.get(bucket, prefix + name)

    record = json.loads(get("run.json"))
    assert (record["status"], record["run_id"], record["attempt"]) == ("succeeded", job, 2)
    assert (record["platform"]["SLURM_RESTART_COUNT"], record["resumed_from"]) == ("1", 1)
    (earlier,) = record["earlier_attempts"]
    assert (earlier["attempt"], earlier["status"], earlier["exit_code"]) == (1, "stopped", 143)
    first = json.loads(get("attempts/1/run.json"))
    assert (first["attempt"], first["status"], first["run_id"]) == (1, "stopped", job)
    first_text = stream_text(nbformat.reads(get("attempts/1/train.ipynb").decode(), 4))
    assert "resumed from None" in first_text and "attempt 1" in first_text
    text = stream_text(nbformat.reads(get("train.ipynb").decode(), 4))
    assert "resumed from epoch 3" in text and "attempt 2" in text and "cell done" in text
    assert marker.read_text() == "2"


# -- several ranks: srun -n 2 -----------------------------------------------------------------

# A gloo all-reduce between the ranks with torch.distributed, over the rendezvous variables the
# recipe derives from Slurm's (env:// init reads MASTER_ADDR/PORT, RANK, WORLD_SIZE).
ALLREDUCE = """\
import datetime, os
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the test cluster's one node is loopback
import torch, torch.distributed as dist
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
assert os.environ["SLURM_PROCID"] == str(rank) and os.environ["LOCAL_RANK"] == str(rank)
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
t = torch.tensor([float((rank + 1) * 10)])
dist.all_reduce(t)
total = int(t.item())
dist.destroy_process_group()
print(f"rank {rank} of {world}: sum {total}, GPUs {os.environ.get('CUDA_VISIBLE_DEVICES')}")
"""


def rank_folder(dest: Path, rank: int) -> Path:
    """Where a rank's results are: rank 0 at the top, the others under ``ranks/<r>/``."""
    return dest if rank == 0 else dest / "ranks" / str(rank)


@pytest.fixture(scope="module")
def ddp_job(
    slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """The two-rank recipe, run once for the tests below: (job id, its destination)."""
    tmp = tmp_path_factory.mktemp("ddp")
    bundle = pack(tmp, [ALLREDUCE])
    out = tmp / "runs"
    port = str(free_port())
    job = sbatch(
        slurm_cluster, tmp, str(PLATFORMS / "slurm-ddp.sbatch"), str(bundle), str(out),
        MASTER_PORT=port,
    )  # fmt: skip
    info = slurm_cluster.wait_state(job, DONE, 150)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), job_log(tmp, job)
    assert (info["NumTasks"], info["TresPerNode"]) == ("2", "gres:gpu:2")
    return job, out / job


def test_srun_two_ranks_run_the_notebook_together(ddp_job: tuple[str, Path]):
    job, dest = ddp_job
    for rank in (0, 1):
        folder = rank_folder(dest, rank)
        record = read_json(folder / "run.json")
        assert (record["status"], record["exit_code"], record["run_id"]) == ("succeeded", 0, job)
        platform = record["platform"]
        assert (platform["SLURM_PROCID"], platform["SLURM_NTASKS"]) == (str(rank), "2")
        assert (platform["RANK"], platform["WORLD_SIZE"]) == (str(rank), "2")
        text = stream_text(nbformat.read(folder / "train.ipynb", as_version=4))
        assert f"rank {rank} of 2: sum 30" in text  # both ranks took part in the all-reduce


def test_srun_two_ranks_give_one_canonical_result(ddp_job: tuple[str, Path]):
    job, dest = ddp_job
    record = read_json(dest / "run.json")  # rank 0's, at the top of the destination
    assert (record["status"], record["run_id"]) == ("succeeded", job)
    assert read_json(dest / "ranks" / "1" / "run.json")["status"] == "succeeded"
    assert {str(r["rank"]): r["exit_code"] for r in record["ranks"]} == {"0": 0, "1": 0}


# -- a sweep: an array job --------------------------------------------------------------------

SWEEP = "- {x: 1}\n- {x: 2}\n- {x: 3}\n"
SWEEP_CELLS: list[Any] = [("code", "x = 0", ["parameters"]), "print(f'x is {x}')"]


def test_array_recipe_is_accepted(slurm_cluster: SlurmCluster, tmp_path: Path):
    """The sweep recipe's directives and arguments pass sbatch's checks (``--test-only``)."""
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    for recipe, args in (
        ("slurm-array.sbatch", ["b.zip", "out", "sweep.yaml"]),
        ("slurm-ddp.sbatch", ["b.zip", "out"]),
    ):
        proc = subprocess.run(
            ["sbatch", "--test-only", f"--chdir={tmp_path}", str(PLATFORMS / recipe), *args],
            env=job_env(slurm_cluster),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0 and "to start at" in proc.stderr, (recipe, proc.stderr)
    directives = (PLATFORMS / "slurm-array.sbatch").read_text()
    assert "#SBATCH --array=0-2\n" in directives  # as many tasks as SWEEP has sets


def test_array_job_runs_a_three_point_sweep(slurm_cluster: SlurmCluster, tmp_path: Path):
    bundle = pack(tmp_path, SWEEP_CELLS)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(SWEEP)
    out = tmp_path / "runs"
    job = sbatch(
        slurm_cluster, tmp_path, str(PLATFORMS / "slurm-array.sbatch"), str(bundle), str(out),
        str(sweep),
    )  # fmt: skip
    ends = {i: slurm_cluster.wait_state(f"{job}_{i}", DONE, 120) for i in range(3)}
    for i in range(3):
        folder = out / job / "shards" / str(i)
        record = read_json(folder / "run.json")
        assert (record["status"], record["run_id"]) == ("succeeded", f"{job}_{i}"), ends[i]
        assert record["parameters"] == {"x": i + 1}
        assert f"x is {i + 1}" in stream_text(nbformat.read(folder / "train.ipynb", 4))
