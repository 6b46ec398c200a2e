"""Why a kernel died, from evidence, in a real cgroup v1 memory group (root only; skipped with
the reason elsewhere), and what a cell used.

- a kernel killed by the group's out-of-memory killer in cell 3 is named so, with the limit;
- a cell that SIGKILLs its own kernel is not called out-of-memory;
- the whole group killed at once (Kubernetes' OOM kill of a container, nbjob included) leaves
  a run.json whose last sample the next attempt reports as a probable out-of-memory;
- a cell holding 400 MB has a peak of at least 400 MB in run.json, and resources.jsonl has it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from support import (
    kill_group,
    log_events,
    memory_group,
    notebook_json,
    read_json,
    run_nbjob,
    start_nbjob,
    wait_until,
)

MiB = 2**20

# Grows the kernel 20 MiB at a time until it is killed (the group's limit is far below 4 GiB).
GROW = "hold = []\nfor _ in range(200):\n    hold.append(b'x' * (20 * 2**20))"
# Grows until the group is at 93 % of its limit, then waits (to be killed with the group).
NEAR_LIMIT = """
import time
line = [l for l in open('/proc/self/cgroup').read().splitlines() if ':memory:' in l][0]
path = '/sys/fs/cgroup/memory' + line.split(':', 2)[2]
limit = int(open(path + '/memory.limit_in_bytes').read())
hold = []
while int(open(path + '/memory.usage_in_bytes').read()) < 0.93 * limit:
    hold.append(b'x' * (4 * 2**20))
print('near the limit', flush=True)
time.sleep(300)
"""


def write_notebook(folder: Path, cells: list[str]) -> Path:
    path = folder / "nb.ipynb"
    path.write_bytes(notebook_json(cells))
    return path


def test_a_kernel_oom_killed_in_cell_3_is_named_from_evidence(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path, ["a = 1", "b = 2", "c = 3", GROW, "d = 4"])
    with memory_group(600 * MiB) as group:
        result = run_nbjob("run", nb, "--output", tmp_path / "out", cgroup=group)
    record = read_json(tmp_path / "out" / "run.json")
    assert result.returncode == 5, result.stderr[-2000:]
    assert record["status"] == "kernel_died"
    assert record["reason"].startswith(
        "the kernel was killed by SIGKILL while running In [4] (cell 3): out of memory: the"
        " container's limit is 600 MiB, its use reached 600 MiB; the kernel used"
    )
    assert record["reason"].endswith(", in In [4] (cell 3)")
    cause = record["failed_cell"]["cause"]
    assert cause["kind"] == "out_of_memory" and cause["memory_limit_bytes"] == 600 * MiB
    assert cause["oom_kills"] >= 1 and record["failed_cell"]["index"] == 3
    assert record["resources"]["limits"]["memory_bytes"] == 600 * MiB


def test_a_cell_that_sigkills_its_kernel_is_not_called_out_of_memory(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path, ["a = 1", "import os, time\ntime.sleep(0.3)\nos.kill(os.getpid(), 9)"]
    )
    with memory_group(600 * MiB) as group:
        result = run_nbjob("run", nb, "--output", tmp_path / "out", cgroup=group)
    record = read_json(tmp_path / "out" / "run.json")
    assert result.returncode == 5
    assert re.fullmatch(
        r"the kernel was killed by SIGKILL while running (In \[2\] \()?cell 1\)?, not by this"
        r" container's out-of-memory killer",
        record["reason"],
    ), record["reason"]
    assert record["failed_cell"]["cause"] == {"kind": "not_out_of_memory"}
    assert "out of memory" not in record["reason"]


def test_a_container_killed_whole_is_a_probable_oom_for_the_next_attempt(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path, ["a = 1", NEAR_LIMIT])
    out = tmp_path / "out"

    def near_limit_stored() -> bool:
        try:
            last = read_json(out / "run.json")["resources"]["last_sample"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return last["cell"] == 1 and last["memory_bytes"] >= 0.9 * last["memory_limit_bytes"]

    with memory_group(700 * MiB) as group:
        run = start_nbjob("run", nb, "--output", out, cgroup=group)
        try:
            assert wait_until(near_limit_stored, timeout=60), run.output()[1][-2000:]
            kill_group(group)  # nbjob, its kernel, everything: no time to write the end
        finally:
            run.kill()
    after = run_nbjob("run", write_notebook(tmp_path, ["a = 1"]), "--output", out)
    assert after.returncode == 0, after.stderr[-2000:]
    lost = read_json(out / "run.json")["earlier_attempts"][0]
    assert lost["status"] == "ended_without_record"
    assert "while cell 1 ran; probable out-of-memory: 9" in lost["reason"]
    assert "% of the 700 MiB limit at its last sample" in lost["reason"]
    kept = read_json(out / "attempts" / "1" / "run.json")
    assert kept["resources"]["last_sample"]["cell"] == 1
    pressure = [e for e in log_events(out / "attempts" / "1") if e["event"] == "memory_pressure"]
    assert pressure and pressure[0]["cell"] == 1  # a checkpoint was asked for at once


def test_a_gpu_out_of_memory_exception_is_named_in_failed_cell(tmp_path: Path) -> None:
    raises = (
        "class OutOfMemoryError(RuntimeError): pass\nraise OutOfMemoryError('CUDA out of memory')"
    )
    nb = write_notebook(tmp_path, ["a = 1", raises])
    result = run_nbjob("run", nb, "--output", tmp_path / "out")
    assert result.returncode == 1
    record = read_json(tmp_path / "out" / "run.json")
    assert record["reason"] == (
        "In [2] (cell 1) raised OutOfMemoryError: CUDA out of memory (a GPU's memory ran out;"
        " its peak is unknown: no GPU was sampled)"
    )  # no GPU on this machine: the peak is said to be unknown
    assert record["failed_cell"]["cause"] == {"kind": "gpu_out_of_memory", "gpus": []}
    assert record["failed_cell"]["ename"] == "OutOfMemoryError"


def test_a_cell_holding_400_mb_has_a_peak_of_400_mb(tmp_path: Path) -> None:
    hold = "b = bytearray(400 * 2**20)\nb[::4096] = b'x' * len(b[::4096])  # every page"
    nb = write_notebook(tmp_path, ["a = 1", hold, "del b"])
    result = run_nbjob("run", nb, "--output", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    record = read_json(tmp_path / "out" / "run.json")
    cells = {c["index"]: c for c in record["cells"]}
    assert cells[1]["resources"]["peak_rss_bytes"] >= 400 * MiB
    assert cells[0]["resources"]["peak_rss_bytes"] < 400 * MiB
    assert cells[1]["resources"]["cpu_s"] >= 0 and cells[1]["resources"]["gpus"] == []
    assert record["resources"]["peaks"]["rss_bytes"] >= 400 * MiB
    lines = (tmp_path / "out" / "resources.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line)["t"] > 0 for line in lines)
    assert any(json.loads(line)["cell"] == 1 for line in lines)
