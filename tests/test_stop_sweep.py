"""SIGTERM at every moment of a run's life, bundle and results in a real S3 server (moto).

One undisturbed run is timed first; then SIGTERM is sent at offsets spread from just after the
process starts (its handler is installed before the heavy imports) to just past that run's end,
so the signal lands in the fetch, the unpack, the kernel start, the cells, a checkpoint and the
final store. Each run must end in 143 with run.json stored (status ``stopped``) or, when the
signal came after the results were stored, in 0 with a completed run.json; it must end within
the grace period; and no process it started (found by a marker in their environment) may be left.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from support import S3Server, make_zip, notebook_json, start_nbjob, wait_until

GRACE_S = 5.0
MARGIN_S = 4.0  # a loaded CI machine
OFFSETS = 10  # signals spread over one run's life (and 4 more among the cells)
CELLS = [
    "import os, time\nos.makedirs(os.environ['NBJOB_ARTIFACTS_DIR'], exist_ok=True)",
    "open(os.path.join(os.environ['NBJOB_ARTIFACTS_DIR'], 'a.txt'), 'w').write('a')\n"
    "time.sleep(0.4)",
    "print('second', flush=True)\ntime.sleep(0.4)",
    "print('third', flush=True)\ntime.sleep(0.4)",
    "print('done')",
]


def _leftovers(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds ``marker`` (nbjob's and its children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found


def _run(s3: S3Server, source: str, dest: str, delay: float | None) -> tuple[int, float, str]:
    """Run nbjob; send SIGTERM after ``delay`` s (None: never). (exit code, s to exit, marker)."""
    marker = f"NBJOB_SWEEP_MARKER={uuid.uuid4().hex}"
    env = {**s3.env, marker.split("=")[0]: marker.split("=")[1]}
    run = start_nbjob(
        "run", source, "--output", dest, "--stop-grace", str(GRACE_S),
        "--checkpoint-interval", "0.3", env=env,
    )  # fmt: skip
    try:
        sent = time.monotonic()
        if delay is not None:
            time.sleep(delay)
            sent = time.monotonic()
            run.proc.send_signal(signal.SIGTERM)
        result = run.wait(timeout=GRACE_S + MARGIN_S + (0 if delay is not None else 60))
        return result.returncode, time.monotonic() - sent, marker
    finally:
        run.kill()


@pytest.fixture(scope="module")
def bundle(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    bucket = s3_server.new_bucket()
    folder = tmp_path_factory.mktemp("sweep")
    zipped = make_zip(folder / "b.zip", {"nb.ipynb": notebook_json(CELLS)})
    s3_server.client.upload_file(str(zipped), bucket, "b.zip")
    return f"s3://{bucket}/b.zip"


def _offsets(whole: float, first_cell: float) -> list[float]:
    """Spread over the whole run, plus more while the cells run (the longest phase to hit)."""
    spread = [0.15 + i * (whole + 0.3) / (OFFSETS - 1) for i in range(OFFSETS)]
    in_cells = [first_cell + i * (whole - first_cell) / 4 for i in range(4)]
    return sorted(spread + in_cells)


def test_sigterm_at_any_moment_is_143_or_0_with_run_json_and_nothing_left(
    s3_server: S3Server, bucket: str, bundle: str
) -> None:
    for _warm_up_then_timed in range(2):  # the first run of the session warms caches up
        started = time.time()
        code, whole, marker = _run(s3_server, bundle, f"s3://{bucket}/undisturbed", None)
        assert code == 0 and wait_until(lambda m=marker: not _leftovers(m), 10)
    first = json.loads(s3_server.get(bucket, "undisturbed/run.json"))["cells"][0]["started_at"]
    first_cell = datetime.fromisoformat(first).timestamp() - started
    outcomes = []
    for i, delay in enumerate(_offsets(whole, first_cell)):
        prefix = f"sweep-{i}"
        code, took, marker = _run(s3_server, bundle, f"s3://{bucket}/{prefix}", delay)
        where = f"SIGTERM at {delay:.2f} s of a {whole:.2f} s run"
        assert code in (0, 143), f"{where}: exit {code}"
        assert took < GRACE_S + MARGIN_S, f"{where}: ended {took:.1f} s after the signal"
        assert wait_until(lambda m=marker: not _leftovers(m), 10), f"{where}: processes left"
        record = json.loads(s3_server.get(bucket, f"{prefix}/run.json"))
        expected = ("succeeded", 0) if code == 0 else ("stopped", 143)
        assert (record["status"], record["exit_code"]) == expected, f"{where}: {record}"
        if code == 143:
            assert record["reason"].startswith("stopped by SIGTERM"), record["reason"]
        ran = sum(c["status"] != "pending" for c in record["cells"])
        outcomes.append((round(delay, 2), code, ran, record["reason"]))
    print(f"undisturbed run {whole:.2f} s, first cell at {first_cell:.2f} s; {outcomes}")
    stopped = [o for o in outcomes if o[1] == 143]
    # The sweep really covered the run: stops before any cell ran and stops among the cells.
    assert any(o[2] == 0 for o in stopped), outcomes
    assert any(o[2] > 0 for o in stopped), outcomes
