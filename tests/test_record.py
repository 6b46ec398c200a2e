"""The run record and the event bus, without a kernel: fast checks of run.json's shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nbjob import events, results
from nbjob.errors import CellTimeoutError, StoppedError
from nbjob.listeners import Checkpointer, LogListener
from nbjob.record import RunRecord
from support import wait_until

RUN_JSON_KEYS = [
    "run_id", "status", "exit_code", "reason", "source", "output", "notebook", "failed_cell",
    "errors",
    "started_at", "ended_at", "duration_s", "parameters", "kernel", "gpus", "gpu_probe",
    "unmet_requirements", "cells", "artifacts", "report", "platform", "versions", "host",
    "progress", "heartbeat_at", "metrics", "attempt", "earlier_attempts", "resumed_from",
    "lease", "identity", "shard",
]  # fmt: skip


def new_record() -> RunRecord:
    return RunRecord.start(
        "run-1",
        "https://h/b.zip?X-Amz-Signature=secret",
        "out",
        "slurm",
        {"SLURM_JOB_ID": "7"},
    )


def ended(index: int, status: str, error: dict[str, str] | None = None) -> events.CellEnded:
    state = events.CellState(index, events.CellStatus(status), index + 1, "t0", "t1", 0.5, error)
    return events.CellEnded(state)


def test_a_new_record_has_run_json_shape() -> None:
    data = new_record().to_json()
    assert list(data) == RUN_JSON_KEYS
    assert (data["status"], data["exit_code"], data["cells"]) == ("running", None, [])
    assert data["source"] == "https://h/b.zip?X-Amz-Signature=REDACTED"
    assert data["platform"] == {"name": "slurm", "SLURM_JOB_ID": "7"}
    assert data["versions"]["nbjob"] and data["host"]["hostname"]
    json.dumps(data)  # serializable as it is


def test_rank_zero_record_lists_the_ranks() -> None:
    record = new_record()
    record.placed({"rank": 0, "world_size": 2, "source": "RANK", "canonical": True}, 1, "flags")
    record.ranks_gathered([{"rank": 0, "status": "peer_lost"}, {"rank": 1, "status": "missing"}],
                          1, 0.5)  # fmt: skip
    data = record.to_json()
    assert list(data) == [*RUN_JSON_KEYS, "ranks", "first_failed_rank", "ranks_waited_s"]
    assert data["identity"]["source"] == "RANK" and data["first_failed_rank"] == 1
    assert (data["shard"], data["identity"]["shard_source"]) == (1, "flags")


def test_cells_follow_events_through_the_bus() -> None:
    record, seen = new_record(), []
    bus = events.Bus([record, seen.append])  # an object with on_event, and a plain callable
    bus.publish(events.CellsListed((1, 3, 4)))
    assert [(c["index"], c["status"]) for c in record.to_json()["cells"]] == [
        (1, "pending"),
        (3, "pending"),
        (4, "pending"),
    ]
    bus.publish(events.CellStarted(1, "t0"))
    assert record.to_json()["cells"][0]["status"] == "running"
    progress = record.to_json()["progress"]
    assert (progress["cells_done"], progress["cells_total"], progress["running_cell"]) == (0, 3, 1)
    assert progress["running_s"] >= 0
    bus.publish(events.CellOutput(1, "stdout", "hi\n"))
    bus.publish(ended(1, "completed"))
    bus.publish(events.CellStarted(3, "t0"))
    bus.publish(ended(3, "timed_out"))
    bus.publish(events.TICK)
    cells = record.to_json()["cells"]
    assert [c["status"] for c in cells] == ["completed", "timed_out", "pending"]
    progress = record.to_json()["progress"]
    assert (progress["cells_done"], progress["running_cell"], progress["running_s"]) == (
        2,
        None,
        None,
    )
    assert cells[1] == {
        "index": 3,
        "status": "timed_out",
        "execution_count": 4,
        "started_at": "t0",
        "ended_at": "t1",
        "duration_s": 0.5,
        "error": None,
        "output_truncated": False,
        "warning": None,
    }
    assert len(seen) == 7 and seen[-1] is events.TICK  # every event, in order


def test_finished_fills_status_reason_and_failed_cell() -> None:
    record = new_record()
    record.on_event(events.CellsListed((0, 1)))
    record.on_event(ended(0, "failed", {"ename": "ValueError", "evalue": "x"}))
    record.finished(CellTimeoutError("cell 0 ran too long", cell_index=0), ["model.bin"])
    data = record.to_json()
    assert (data["status"], data["exit_code"]) == ("timed_out", 4)
    assert data["failed_cell"] == {"index": 0, "ename": "ValueError", "evalue": "x"}
    assert data["artifacts"] == ["model.bin"] and data["duration_s"] is not None
    record.finished(StoppedError("stopped by SIGTERM"), [])
    assert (record.status, record.exit_code, record.failed_cell) == ("stopped", 143, None)


def test_a_success_that_cannot_be_stored_is_not_a_success() -> None:
    from nbjob.errors import StorageError

    record = new_record()
    record.finished(None, [])
    assert (record.status, record.exit_code, record.reason) == ("succeeded", 0, "succeeded")
    record.not_stored(StorageError("no space"))
    assert (record.status, record.exit_code, record.reason) == ("storage_error", 6, "no space")


def test_preparation_steps() -> None:
    record = new_record()
    record.bundle_opened("sub/nb.ipynb")
    record.requirements_checked(["torch==9"])
    record.parameters_merged({"lr": 0.1})
    record.kernel_ready("python3", "python", {"implementation": "ipython"}, {"kind": "local"})
    record.gpus_probed({"gpus": [{"index": "0"}], "error": None})
    data = record.to_json()
    assert data["notebook"] == "sub/nb.ipynb" and data["unmet_requirements"] == ["torch==9"]
    assert data["parameters"] == {"lr": 0.1}
    assert data["kernel"] == {
        "name": "python3",
        "language": "python",
        "implementation": "ipython",
        "implementation_version": None,
        "kind": "local",
    }
    assert data["gpus"] == [{"index": "0"}] and data["gpu_probe"]["error"] is None


class FakeLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []
        self.levels: list[str] = []

    def _at(self, level: str, event: str, fields: dict[str, object]) -> None:
        self.lines.append((event, fields))
        self.levels.append(level)

    def info(self, event: str, **fields: object) -> None:
        self._at("info", event, fields)

    def warning(self, event: str, **fields: object) -> None:
        self._at("warning", event, fields)

    def error(self, event: str, **fields: object) -> None:
        self._at("error", event, fields)


def test_log_listener_event_names_and_fields() -> None:
    log = FakeLog()
    listener = LogListener(log)
    for event in (
        events.CellStarted(2, "t0"),
        events.CellOutput(2, "stderr", "warn\n"),
        ended(2, "kernel_died"),
        events.TICK,
        events.CellSkipped(3),
    ):
        listener.on_event(event)
    assert log.lines == [
        ("cell_start", {"cell": 2}),
        ("stream", {"cell": 2, "name": "stderr", "text": "warn\n"}),
        (
            "cell_end",
            {"cell": 2, "status": "kernel_died", "execution_count": 3, "duration_s": 0.5},
        ),
    ]
    assert log.levels == ["info", "info", "error"]  # a cell that failed: at error


def test_checkpointer_writes_the_record_when_due(tmp_path: Path) -> None:
    from nbjob.storage import Storage

    out, log = tmp_path / "out", tmp_path / "executor.log"
    log.write_text("")
    res = results.Results(Storage(), str(out), None, log, tmp_path / "spool", tmp_path, 3600)
    record = new_record()
    checkpointer = Checkpointer(res, lambda: None, record)
    bus = events.Bus([record, checkpointer])
    bus.publish(events.CellsListed((0,)))  # due at once: the first checkpoint
    assert wait_until((out / "run.json").is_file, 10)  # written by the background thread
    stored = json.loads((out / "run.json").read_text())
    assert stored["status"] == "running"
    assert [c["status"] for c in stored["cells"]] == ["pending"]
    assert not res.due()  # the next checkpoint waits for the interval
    res.final(None, record.to_json(), timeout=10)


def test_log_listener_folds_progress_lines() -> None:
    log = FakeLog()
    listener = LogListener(log, progress_every=3600)
    for i in range(1000):
        listener.on_event(events.CellOutput(1, "stderr", f"\r{i:4d}/999"))
    listener.on_event(events.CellOutput(1, "stdout", "a\nb\nunfinished"))
    listener.on_event(events.CellOutput(1, "stderr", "\n"))
    listener.on_event(events.CellOutput(1, "stderr", "\rspin\b\b\b\bdone"))
    listener.on_event(ended(1, "completed"))
    streams = [(f["name"], f["text"]) for e, f in log.lines if e == "stream"]
    assert streams[:2] == [("stdout", "a\nb\n"), ("stderr", " 999/999\n")]
    assert sorted(streams[2:]) == [("stderr", "done"), ("stdout", "unfinished")]  # at the end


def test_log_listener_logs_a_rewritten_line_now_and_then() -> None:
    log = FakeLog()
    listener = LogListener(log, progress_every=0.0)
    for i in range(3):
        listener.on_event(events.CellOutput(0, "stdout", f"\r{i}"))
    partial = [f["text"] for e, f in log.lines if e == "stream" and f.get("partial")]
    assert partial == ["0", "1", "2"]


def test_run_json_is_scrubbed_exactly_as_string_by_string(monkeypatch: Any) -> None:
    import nbjob.storage  # noqa: F401 (backends register their secret parameters)
    from nbjob import logs

    secret = 'se"cr\\et/K\x01ey+pässwörd'  # escaped in JSON text, and not ASCII
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setattr(logs, "_secrets", None)  # read from the environment on each use
    samples = [
        f"boto said {secret}!",
        'see https://user:p%40ss"w@host/x and more',
        "https://b/k.zip?X-Amz-Signature=abc&x=1",
        "conn\nAccountKey=zzz;EndpointSuffix=core",  # a parameter after a newline
        "DefaultEndpointsProtocol=https;AccountKey=k\\ey==",
        "a=b c@d https://no-credentials/here",
    ]
    for sample in samples:
        doc = {"cells": {"0": {"error": {"evalue": sample}}}, "list": [sample, 1, None, ("t",)]}
        before = json.dumps(logs.scrub(doc), indent=2, default=str)
        assert results.record_bytes(doc).decode() == before + "\n", sample
        listed = {"a": sample, "cells": [{"evalue": sample, "n": [1]}, {}, {"x": "y"}], "z": 1}
        before = json.dumps(logs.scrub(listed), indent=2, default=str)  # made a cell at a time
        assert results.record_bytes(listed).decode() == before + "\n", sample
    assert secret not in results.record_bytes({"x": [f"k={secret}"]}).decode()
    cells = {str(i): {"status": "completed", "ts": "2026-12-02T18:00:00"} for i in range(9)}
    clean = {"cells": cells, "source": "s3://bucket/nb.ipynb"}

    def walked(value: Any) -> Any:
        raise AssertionError("walked string by string")

    monkeypatch.setattr(logs, "scrub", walked)  # nothing to redact: one pass over its text
    assert logs.redacted_json(clean, indent=2) == json.dumps(clean, indent=2)


def test_a_cell_state_is_stored_as_the_event_carries_it() -> None:
    record = new_record()
    record.on_event(events.CellsListed((0,)))
    event = ended(0, "completed")
    record.on_event(event)
    assert record.cells[0] is event.state  # one copy, not rebuilt
    assert record.to_json()["cells"][0]["status"] == "completed"


def test_run_events_carry_the_record_facts() -> None:
    record = new_record()
    record.parameters_merged({"lr": 0.1})
    record.bundle_opened("nb.ipynb")
    record.kernel_ready("python3", "python", {"implementation": "cpython"}, {"kind": "local"})
    started = record.run_started()
    assert (started.run_id, started.attempt, started.notebook) == ("run-1", 1, "nb.ipynb")
    assert started.parameters == {"lr": 0.1} and started.kernel["kind"] == "local"
    record.finished(CellTimeoutError("cell 0 ran too long", cell_index=0), [])
    end = record.run_ended("https://u:pw@h/out", True, "nb.ipynb")
    assert (end.status, end.exit_code, end.reason) == ("timed_out", 4, "cell 0 ran too long")
    assert end.status is events.RunStatus.TIMED_OUT and end.output == "https://u:REDACTED@h/out"
    assert (end.stored, end.notebook, end.report) == (True, "nb.ipynb", None)


def test_run_json_to_store_makes_each_cell_entry_when_written() -> None:
    """The record to be stored lists its cells lazily: the same run.json text, an entry made
    as it is written (not every entry at once for a run of many cells)."""
    record = new_record()
    record.on_event(events.CellsListed((0, 1, 2)))
    for index in (0, 1):
        record.on_event(ended(index, "completed"))
    lazy = record.to_json(to_store=True)
    assert not isinstance(lazy["cells"], list) and len(lazy["cells"]) == 3
    assert lazy["cells"][1] == record.to_json()["cells"][1]
    whole = record.to_json()
    whole["heartbeat_at"] = lazy["heartbeat_at"]  # when each was made
    whole["progress"]["updated_at"] = lazy["progress"]["updated_at"]
    assert results.record_bytes(lazy) == results.record_bytes(whole)
    empty = new_record().to_json(to_store=True)
    assert json.loads(results.record_bytes(empty))["cells"] == []
