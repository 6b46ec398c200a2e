"""Where a run's results go (``nbjob.layout``) and how a run.json is read back (``nbjob.runfile``).

The places are checked through ``config.resolve``, as a run gets them; the reader reads what a
real run wrote (a real kernel, a failing cell) and what a broken or half-written run.json holds,
through the real local store.
"""

from __future__ import annotations

import json
from pathlib import Path

from nbjob import attempts, config, ranks, runfile
from nbjob.events import RunStatus
from nbjob.layout import Destination
from nbjob.platforms import Identity
from nbjob.storage import Storage
from support import notebook, run_nbjob


def test_a_sweep_rank_writes_under_its_shard_and_rank(tmp_path: Path) -> None:
    flags = {"source": "a.ipynb", "output": str(tmp_path), "shard": "2", "rank": "1"}
    s = config.resolve({**flags, "world_size": "2"}, {})
    top, own = s.places.top, s.places.own
    assert top.url == str(tmp_path / "shards" / "2")
    assert own.url == s.output == str(tmp_path / "shards" / "2" / "ranks" / "1")
    assert (top.rank(1), top.rank(0)) == (own, top)
    assert own.run_json == str(tmp_path / "shards/2/ranks/1/run.json")
    assert top.log == str(tmp_path / "shards/2/executor.log")
    assert top.attempt(3).artifacts == str(tmp_path / "shards/2/attempts/3/artifacts")
    s3 = Destination("s3://b/run")
    assert s3.unread("20260101T10").run_json == "s3://b/run/attempts/unread-20260101T10/run.json"
    assert not s3.is_local and top.is_local


def test_the_reader_sees_what_a_failed_run_wrote(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "x = 1", "1 / 0", "print('never')")
    out = tmp_path / "out"
    result = run_nbjob("run", nb, "--output", out, "--run-id", "r7")
    assert result.returncode == 1, result.stderr
    view = runfile.read(Storage(), Destination(str(out)).run_json)
    assert view is not None
    assert (view.status, view.final, view.exit_code) == (RunStatus.FAILED, True, 1)
    assert view.failed_cell == 1 and "ZeroDivisionError" in (view.reason or "")
    assert (view.run_id, view.attempt) == ("r7", 1)
    assert (view.notebook, view.report) == ("nb.ipynb", "nb.html")
    assert view.identity["canonical"] is True


def test_unreadable_and_missing_run_json(tmp_path: Path) -> None:
    assert runfile.parse(b'{"status": "succ').status is RunStatus.UNREADABLE
    assert runfile.parse(b"[1, 2]").status is RunStatus.UNREADABLE
    running = runfile.parse(json.dumps({"status": "running", "attempt": 0}).encode())
    assert (running.status, running.final, running.attempt) == (RunStatus.RUNNING, False, 1)
    assert runfile.read(Storage(), str(tmp_path / "run.json")) is None


def test_an_unreadable_run_json_is_kept_and_reported_the_same_way_by_attempts_and_ranks(
    tmp_path: Path,
) -> None:
    (tmp_path / "ranks" / "1").mkdir(parents=True)
    (tmp_path / "ranks" / "1" / "run.json").write_bytes(b'{"status": "fail')  # half-written
    # A rank's view: no final record of this run, last seen unreadable.
    own = {"run_id": "r1", "started_at": "2026-01-01T10:00:00+00:00", "status": "succeeded"}
    entries, _ = ranks.gather(Storage(), str(tmp_path), Identity(0, 2), own, 0.0)
    assert entries[1]["status"] == "unknown" and "last seen: unreadable" in entries[1]["reason"]
    # The next attempt's view: the earlier one is kept aside and summed up as unreadable.
    (tmp_path / "run.json").write_bytes(b"not json")
    begun = attempts.begin(Storage(), Destination(str(tmp_path)), attempts.Continuing("r1"))
    assert begun.number == 2 and begun.earlier[0]["status"] == attempts.UNREADABLE_SHOWN
    kept = json.loads((tmp_path / "attempts" / "1" / "run.json").read_text())
    assert kept == {"status": "unreadable run.json"}
