"""A long notebook's run.json mid-run: small, its finished cells in segments written once.

Real runs of a notebook with more than ``cellsegments.INLINE_MAX`` code cells whose last cell
waits for a file the test creates, so "mid-run" is certain: on a real S3 server (moto) through
a byte-counting proxy, and on a local folder killed with SIGKILL (its run.json stays mid-run
forever: ``nbjob watch`` and the next attempt must still see its cells).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from nbjob import cellsegments, runfile
from nbjob.errors import StorageError
from nbjob.events import CellState, CellStatus
from nbjob.layout import Destination
from nbjob.record import RunRecord
from nbjob.results import Results
from nbjob.storage import Options, Storage
from support import NbjobProcess, notebook, start_nbjob, wait_until
from support.proxy import FlakyProxy
from support.s3 import S3Server

CELLS = cellsegments.INLINE_MAX + 20  # quick cells, then one that waits


def _notebook(tmp_path: Path) -> tuple[Path, Path]:
    release = tmp_path / "release"
    wait = (
        "import pathlib, time\n"
        f"p = pathlib.Path({str(release)!r})\n"
        "for _ in range(600):\n"
        "    if p.exists():\n"
        "        break\n"
        "    time.sleep(0.1)"
    )
    cells = [f"x = {i}" for i in range(CELLS)] + [wait]
    return notebook(tmp_path / "long.ipynb", *cells), release


def _start(nb: Path, dest: str, env: dict[str, str] | None = None) -> NbjobProcess:
    args = ("--output", dest, "--checkpoint-interval", "0.5", "--no-report")
    return start_nbjob("run", nb, *args, env=env)


def _all_stored(storage: Storage, dest: Destination) -> Callable[[], Any]:
    """A check: the run.json (with its stored cells) once every quick cell is in a segment."""

    def check() -> runfile.RunView | None:
        try:
            view = runfile.read(storage, dest.run_json, cells=False)
            if view is None or view.cells_stored != CELLS:
                return None
            return runfile.read(storage, dest.run_json)
        except Exception:
            return None

    return check


def _assert_mid_run(raw: bytes, view: runfile.RunView) -> None:
    """run.json lists only the running cell; the view, every cell that ran, in order."""
    data = json.loads(raw)
    assert [c["index"] for c in data["cells"]] == [CELLS]
    assert data["cells"][0]["status"] == "running"
    assert data["cell_counts"] == {"total": CELLS + 1, "running": 1, "completed": CELLS}
    assert data["cells_stored"] == {"count": CELLS, "place": "cells/1/"}
    cells = view.cells()
    assert [c["index"] for c in cells] == list(range(CELLS + 1))
    assert {c["status"] for c in cells[:CELLS]} == {"completed"}
    assert view.cells_total == CELLS + 1 and view.status.value == "running"


@pytest.mark.e2e
def test_a_long_run_s_run_json_stays_small_and_each_finished_cell_is_stored_once(
    s3_server: S3Server,
    bucket: str,
    flaky_proxy: Callable[..., FlakyProxy],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = flaky_proxy()
    nb, release = _notebook(tmp_path)
    url = f"s3://{bucket}/runs/long"
    run = _start(nb, url, s3_server.env_for(proxy.url))
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    storage, dest = Storage(Options(endpoint_url=s3_server.endpoint_url)), Destination(url)
    try:
        view = wait_until(_all_stored(storage, dest), 90)
        assert view, run.output()
        raw = s3_server.get(bucket, "runs/long/run.json")
        assert len(raw) < 8000, len(raw)  # every cell listed: over 30 KB
        _assert_mid_run(raw, runfile.read(storage, dest.run_json) or view)
        release.touch()
        assert run.wait(60).returncode == 0
    finally:
        run.kill()
    final = json.loads(s3_server.get(bucket, "runs/long/run.json"))
    assert "cells_stored" not in final and "cell_counts" not in final
    assert [c["status"] for c in final["cells"]] == ["completed"] * (CELLS + 1)
    stored, _ = cellsegments.read_new(storage, dest, 1, 0, CELLS)
    assert stored == final["cells"][:CELLS]  # the same states as the final run.json lists
    puts = {k: n for k, n in proxy.requests_by.items() if k.startswith("PUT ") and "/cells/" in k}
    assert puts and set(puts.values()) == {1}, puts  # each segment written once
    assert all("/runs/long/cells/1/" in k and k.endswith(".jsonl") for k in puts)


@pytest.mark.e2e
def test_a_killed_long_run_s_cells_are_seen_by_watch_and_kept_by_the_next_attempt(
    tmp_path: Path,
) -> None:
    nb, release = _notebook(tmp_path)
    dest = Destination(str(tmp_path / "out"))
    run = _start(nb, dest.url)
    storage = Storage(Options())
    try:
        assert wait_until(_all_stored(storage, dest), 90), run.output()
    finally:
        run.kill()  # SIGKILL to its process group: run.json stays mid-run
    raw = (dest.path / "run.json").read_bytes()
    _assert_mid_run(raw, runfile.read(storage, dest.run_json) or runfile.RunView.unreadable())

    watched = start_nbjob("watch", dest.url, "--poll", "0.3", "--lost-after", "1", "--json")
    result = watched.wait(30)
    assert result.returncode == 9, result
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert next(e for e in events if e["event"] == "run")["cells"] == CELLS + 1
    ended = [e["cell"] for e in events if e["event"] == "cell_end"]
    assert ended == list(range(CELLS))  # the finished cells, from the segments

    release.touch()
    assert _start(nb, dest.url).wait(90).returncode == 0
    kept = json.loads((dest.path / "attempts" / "1" / "run.json").read_bytes())
    assert kept["status"] == "ended_without_record" and kept["running_cell"] == CELLS
    assert "cells_stored" not in kept  # kept whole: every cell that ran, listed
    assert [c["index"] for c in kept["cells"]] == list(range(CELLS + 1))
    final = json.loads((dest.path / "run.json").read_bytes())
    assert final["attempt"] == 2 and len(final["cells"]) == CELLS + 1


def test_a_short_notebook_s_run_json_is_as_before_and_a_finished_one_whole() -> None:
    record = RunRecord.start("r", "src", "out", "local", {})
    record.cells = {i: CellState(i) for i in range(cellsegments.INLINE_MAX)}
    record.cells[0] = CellState(0, CellStatus.COMPLETED)
    cut = cellsegments.Segments().cut
    data, segment = cut(record, Destination("/tmp/x"), 1)
    assert segment is None and len(data["cells"]) == cellsegments.INLINE_MAX
    assert "cells_stored" not in data
    record.cells[cellsegments.INLINE_MAX] = CellState(cellsegments.INLINE_MAX)
    data, segment = cut(record, Destination("/tmp/x"), 1)
    assert segment is not None and segment[0] == "/tmp/x/cells/1/000000000.jsonl"
    assert data["cells"] == [] and data["cells_stored"]["count"] == 1
    record.finished(None, [])
    data, segment = cut(record, Destination("/tmp/x"), 1)
    assert segment is None and len(data["cells"]) == cellsegments.INLINE_MAX + 1
    assert "cells_stored" not in data and list(data) == list(record.to_json())


class _Counting:
    """A storage whose GETs are counted (the follower's reads)."""

    def __init__(self, storage: Storage) -> None:
        self.storage, self.gets = storage, 0

    def get_bytes(self, url: str) -> bytes | None:
        self.gets += 1
        return self.storage.get_bytes(url)


def test_a_follower_reads_each_segment_once_and_a_new_attempt_from_the_start(
    tmp_path: Path,
) -> None:
    storage, dest = Storage(Options()), Destination(str(tmp_path))
    record = RunRecord.start("r", "src", "out", "local", {})
    total = cellsegments.INLINE_MAX + 50
    record.cells = {i: CellState(i) for i in range(total)}
    segments, counting = cellsegments.Segments(), _Counting(storage)
    follower = runfile.CellFollower(cast(Storage, counting), dest)
    for done in (10, 10, 60, total):  # cells finished at each checkpoint
        for i in range(done):
            record.cells[i] = CellState(i, CellStatus.COMPLETED, duration_s=0.1)
        if done < total:
            record.cells[done] = CellState(done, CellStatus.RUNNING)
        data, segment = segments.cut(record, dest, 1)
        if segment is not None:
            cellsegments.store(storage, segment)
        view = follower.whole(runfile.RunView.of(data))
        running = [done] if done < total else []
        assert [c["index"] for c in view.cells()] == [*range(done), *running]
        assert view.cells_total == total and view.cells_stored is None  # joined: whole
    assert counting.gets == 3  # the segments at 0, 10 and 60, each once
    assert sorted(p.name for p in (tmp_path / "cells" / "1").iterdir()) == [
        "000000000.jsonl",
        "000000010.jsonl",
        "000000060.jsonl",
    ]
    record.attempt = 2  # a later attempt's run.json: its own segments, from the start
    data, segment = cellsegments.Segments().cut(record, dest, 2)
    assert segment is not None
    cellsegments.store(storage, segment)
    view = follower.whole(runfile.RunView.of(data))
    assert len(view.cells()) == total and counting.gets == 4


def test_mid_run_counts_progress_and_errors_agree_with_the_whole_record() -> None:
    record = RunRecord.start("r", "src", "out", "local", {})
    total = cellsegments.INLINE_MAX + 10
    record.cells = {i: CellState(i) for i in range(total)}
    error = {"ename": "ValueError", "evalue": "boom"}
    segments, dest = cellsegments.Segments(), Destination("/tmp/x")
    for running in (60, 61):  # --allow-errors: cells 50 and 60 raised, the run goes on
        for i in range(running):
            failed = i in (50, 60)
            status = CellStatus.FAILED if failed else CellStatus.COMPLETED
            record.cells[i] = CellState(i, status, i + 1, error=error if failed else None)
        record.cells[running] = CellState(running, CellStatus.RUNNING)
        data, _ = segments.cut(record, dest, 1)
        whole = record.to_json()
        assert data["errors"] == whole["errors"] == record.errors()
        for key in ("cells_done", "cells_total", "running_cell"):
            assert data["progress"][key] == whole["progress"][key]
        statuses = Counter(c["status"] for c in whole["cells"])
        assert data["cell_counts"] == {"total": total, **statuses}
        assert [c["index"] for c in data["cells"]] == [running]


class _FailsFirstSegment:
    """Local storage whose first PUT of a cells segment fails (a store's bad moment)."""

    def __init__(self, storage: Storage) -> None:
        self.storage, self.failed = storage, False

    def put_bytes(self, url: str, data: bytes, content_type: str = "application/json") -> None:
        if "/cells/" in url and not self.failed:
            self.failed = True
            raise StorageError("503 Slow Down")
        self.storage.put_bytes(url, data, content_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)


def test_a_segment_not_stored_is_stored_before_the_next_run_json(tmp_path: Path) -> None:
    local = Storage(Options())
    dest = Destination(str(tmp_path / "out"))
    (tmp_path / "executor.log").write_text('{"event": "run_start"}\n')
    results = Results(
        cast(Storage, _FailsFirstSegment(local)),
        dest,
        None,
        tmp_path / "executor.log",
        tmp_path / "spool",
        tmp_path / "artifacts",
        interval=0.0,
    )
    record = RunRecord.start("r", "src", "out", "local", {})
    total = cellsegments.INLINE_MAX + 10
    record.cells = {i: CellState(i) for i in range(total)}

    def checkpoint(done: int) -> runfile.RunView:
        for i in range(done):
            record.cells[i] = CellState(i, CellStatus.COMPLETED)
        record.cells[done] = CellState(done, CellStatus.RUNNING)
        results.checkpoint(None, record)
        view = wait_until(lambda: _stored(local, dest, done), 10)
        assert view is not None
        return view

    first = checkpoint(10)  # its segment failed: run.json counts 10 cells it cannot show yet
    assert [c["index"] for c in first.cells()] == [10]
    second = checkpoint(20)  # the failed segment first, then the new one, then run.json
    assert [c["index"] for c in second.cells()] == list(range(21))
    record.finished(None, [])
    results.final(None, record.to_json(), timeout=10)
    final = json.loads((dest.path / "run.json").read_bytes())
    assert "cells_stored" not in final and len(final["cells"]) == total


def _stored(storage: Storage, dest: Destination, count: int) -> runfile.RunView | None:
    """run.json (its stored cells joined) once it counts ``count`` cells in segments."""
    try:
        view = runfile.read(storage, dest.run_json, cells=False)
    except (StorageError, OSError):
        return None
    if view is None or view.cells_stored != count:
        return None
    return runfile.read(storage, dest.run_json)
