"""The Ray recipes in examples/platforms, submitted to a real one-node Ray cluster.

The head (``raycluster.py``) is started once per session on 127.0.0.2 with one GPU. The
recipes submit a bundle folder as the job's ``working_dir`` with ``nbjob run .`` as the
entrypoint: ``ray-job.py`` (Jobs API) and ``ray-job.sh`` (``ray job submit``). Results go to a
local destination folder; the run id must be Ray's submission id; ``stop_job`` mid-cell must end
in results stored with status stopped (143) and the Ray job STOPPED.

The entrypoint runs in the environment of Ray's workers, so the tests name this checkout's
nbjob in ``NBJOB`` (``env PYTHONPATH=<checkout>/executor <python> -m nbjob``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nbformat
import pytest
from raycluster import RayCluster, ray_cluster
from support import SECRET_KEY, S3Server, make_notebook, read_json, stream_text, wait_until

__all__ = ["ray_cluster"]  # the fixture, imported for pytest

pytestmark = [pytest.mark.clusters, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
PLATFORMS = ROOT / "examples" / "platforms"
NBJOB = f"env PYTHONPATH={ROOT / 'executor'} NBJOB_LOG_FORMAT=json {sys.executable} -m nbjob"


def recipe_env(cluster: RayCluster, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBJOB_", "RAY_"))}
    env.update(
        NBJOB=NBJOB,
        RAY_ADDRESS=cluster.dashboard_url,
        RAY=str(Path(sys.executable).with_name("ray")),
        PYTHONPATH=str(ROOT / "executor"),
    )
    env.update(extra)
    return env


def bundle_dir(tmp: Path, cells: list[Any]) -> Path:
    """A bundle folder: the notebook and a helper module it imports (from the working_dir)."""
    folder = tmp / "bundle"
    make_notebook(folder / "train.ipynb", ["import helper", *cells])
    (folder / "helper.py").write_text("ANSWER = 42\n")
    return folder


def ray_job_py(
    cluster: RayCluster, *args: str | Path, env: dict[str, str] | None = None, timeout: float = 150
) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, str(PLATFORMS / "ray-job.py"), "--address", cluster.dashboard_url]
        + [str(a) for a in args],
        env=recipe_env(cluster, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


def client(cluster: RayCluster) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(cluster.dashboard_url)


def new_id() -> str:
    return f"nbjob-test-{uuid.uuid4().hex[:10]}"


def test_jobs_api_recipe_runs_a_bundle(ray_cluster: RayCluster, tmp_path: Path):
    folder = bundle_dir(
        tmp_path,
        ["import os\nprint('answer', helper.ANSWER, os.environ.get('CUDA_VISIBLE_DEVICES'))"],
    )
    out, job = tmp_path / "runs", new_id()
    code, output = ray_job_py(ray_cluster, "--submission-id", job, folder, out)
    assert code == 0, output
    info = client(ray_cluster).get_job_info(job)
    assert (str(info.status), info.driver_exit_code) == ("SUCCEEDED", 0)
    dest = out / job
    record = read_json(dest / "run.json")
    assert (record["status"], record["exit_code"], record["run_id"]) == ("succeeded", 0, job)
    assert record["platform"]["RAY_JOB_SUBMISSION_ID"] == job
    assert record["platform"]["CUDA_VISIBLE_DEVICES"] == "0"  # Ray's GPU for the entrypoint
    text = stream_text(nbformat.read(dest / "train.ipynb", as_version=4))
    assert "answer 42 0" in text


def test_a_bundle_from_s3_with_results_to_s3(
    ray_cluster: RayCluster, s3_server: S3Server, bucket: str, tmp_path: Path
):
    """The other way to ship a bundle: an s3:// URL nbjob fetches, credentials passed with
    ``--env NAME``; Ray's job config holds them, nbjob's results must not."""
    src = make_notebook(tmp_path / "src" / "train.ipynb", ["print('from s3')"])
    subprocess.run(
        [sys.executable, "-m", "nbjob", "pack", str(src), "-o", str(tmp_path / "train.zip")],
        env={**os.environ, "PYTHONPATH": str(ROOT / "executor")},
        check=True,
        capture_output=True,
        timeout=60,
    )
    s3_server.client.upload_file(str(tmp_path / "train.zip"), bucket, "bundles/train.zip")
    job = new_id()
    names = sorted(s3_server.env)
    code, output = ray_job_py(
        ray_cluster,
        "--submission-id", job, *[f"--env={n}" for n in names],
        f"s3://{bucket}/bundles/train.zip", f"s3://{bucket}/runs",
        env=s3_server.env,
    )  # fmt: skip
    assert code == 0, output
    record = json.loads(s3_server.get(bucket, f"runs/{job}/run.json"))
    assert (record["status"], record["run_id"]) == ("succeeded", job)
    assert record["source"] == f"s3://{bucket}/bundles/train.zip"
    nb = s3_server.get(bucket, f"runs/{job}/train.ipynb").decode()
    assert "from s3" in stream_text(nbformat.reads(nb, 4))
    for key in s3_server.keys(bucket, f"runs/{job}/"):
        assert SECRET_KEY.encode() not in s3_server.get(bucket, key), key


def test_a_failing_cell_is_exit_1_and_a_failed_ray_job(ray_cluster: RayCluster, tmp_path: Path):
    folder = bundle_dir(tmp_path, ["raise ValueError('bad data')"])
    out, job = tmp_path / "runs", new_id()
    code, output = ray_job_py(ray_cluster, "--submission-id", job, folder, out)
    assert code == 1, output
    assert str(client(ray_cluster).get_job_info(job).status) == "FAILED"
    assert (out / job / "run.json").exists(), output
    record = read_json(out / job / "run.json")
    assert (record["status"], record["exit_code"]) == ("failed", 1)
    assert record["failed_cell"]["ename"] == "ValueError"


def test_ray_job_stop_mid_cell_stores_results(ray_cluster: RayCluster, tmp_path: Path):
    marker = tmp_path / "started"
    folder = bundle_dir(
        tmp_path,
        [
            "import pathlib, time\nprint('working', flush=True)\n"
            f"pathlib.Path({str(marker)!r}).write_text('x')\ntime.sleep(300)",
            "print('never runs')",
        ],
    )
    out, job = tmp_path / "runs", new_id()
    code, output = ray_job_py(ray_cluster, "--submission-id", job, "--no-wait", folder, out)
    assert code == 0 and job in output, output
    dest = out / job

    def running() -> bool:
        if not (marker.exists() and (dest / "run.json").exists()):
            return False
        try:
            return read_json(dest / "run.json")["status"] == "running"
        except ValueError:
            return False

    assert wait_until(running, 90, 0.2), client(ray_cluster).get_job_logs(job)[-3000:]
    ray = client(ray_cluster)
    stopped_at = time.monotonic()
    assert ray.stop_job(job)
    assert wait_until(lambda: ray.get_job_status(job).is_terminal(), 60, 0.2)
    took = time.monotonic() - stopped_at
    assert str(ray.get_job_status(job)) == "STOPPED"
    record = read_json(dest / "run.json")
    assert (record["status"], record["exit_code"], record["run_id"]) == ("stopped", 143, job)
    assert "SIGTERM" in record["reason"]
    # Ray signals the entrypoint's children too, so the kernel may be killed by the same SIGTERM.
    assert record["cells"][-2]["status"] in {"interrupted", "kernel_died"}
    assert record["cells"][-1]["status"] == "pending"
    text = stream_text(nbformat.read(dest / "train.ipynb", as_version=4))
    assert "working" in text and "never runs" not in text
    assert took < 20, f"the job took {took:.1f} s to stop"


def test_cli_recipe_runs_a_bundle(ray_cluster: RayCluster, tmp_path: Path):
    folder = bundle_dir(tmp_path, ["print('answer', helper.ANSWER)"])
    out, job = tmp_path / "runs", new_id()
    proc = subprocess.run(
        ["sh", str(PLATFORMS / "ray-job.sh"), str(folder), str(out), "-p", "unused", "1"],
        env=recipe_env(ray_cluster, NBJOB_SUBMISSION_ID=job),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert str(client(ray_cluster).get_job_status(job)) == "SUCCEEDED"
    record = read_json(out / job / "run.json")
    assert (record["status"], record["run_id"]) == ("succeeded", job)
    assert record["parameters"] == {"unused": 1}  # nbjob options after DEST reach nbjob
    assert "answer 42" in stream_text(nbformat.read(out / job / "train.ipynb", as_version=4))
