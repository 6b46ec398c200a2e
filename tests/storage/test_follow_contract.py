"""The live log against every store: what a run ships at each checkpoint (``livelog.Shipper``:
append-only segments; a local destination's executor.log is written in place) and what a
follower reads (``follow.LogFollower``, what ``nbjob watch`` reads): the lines written since the
last read, each byte once; a new attempt from its own start; a follower joining late, the end
only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nbjob.config import storage_options
from nbjob.follow import LogFollower
from nbjob.layout import Destination
from nbjob.livelog import Shipper
from nbjob.storage import Storage, join
from stores import Store


def _lines(*names: str) -> bytes:
    return b"".join(json.dumps({"event": n}).encode() + b"\n" for n in names)


class _Run:
    """A run's log as it grows: written locally, shipped to ``dest`` as a checkpoint does."""

    def __init__(self, storage: Storage, dest: Destination, tmp: Path) -> None:
        self.storage, self.dest = storage, dest
        self.log = dest.path / "executor.log" if dest.is_local else tmp / "executor.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.shipper = Shipper(storage, self.log)

    def write(self, data: bytes, attempt: int = 1, new: bool = False) -> None:
        with self.log.open("wb" if new else "ab") as f:
            f.write(data)
        if not self.dest.is_local:
            self.shipper.ship(self.dest, attempt)


def _setup(store: Store, monkeypatch: pytest.MonkeyPatch, tmp: Path) -> tuple[Storage, _Run]:
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    storage = Storage(storage_options({}, store.env))
    return storage, _Run(storage, Destination(join(store.new_root(), "run")), tmp)


def test_the_follower_reads_only_what_is_new(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    storage, run = _setup(store, monkeypatch, tmp_path)
    follower = LogFollower(storage, run.dest)
    assert follower.read_new(1) == []  # no log yet
    run.write(_lines("a", "b") + b'{"event": "c"')  # the last line half written
    assert [e["event"] for e in follower.read_new(1)] == ["a", "b"]
    run.write(b"}\n" + _lines("d"))
    before = follower.bytes_read
    assert [e["event"] for e in follower.read_new(1)] == ["c", "d"]
    assert follower.bytes_read - before == len(b'{"event": "c"}\n' + _lines("d"))  # new only
    assert follower.read_new(1) == []  # nothing new: nothing read
    run.write(_lines("x"), attempt=2, new=True)  # a new attempt's log, shorter
    assert [e["event"] for e in follower.read_new(2)] == ["x"]


def test_a_follower_joining_late_reads_the_end_only(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    storage, run = _setup(store, monkeypatch, tmp_path)
    for part in range(10):  # ten checkpoints of 100 lines (25 bytes a line)
        run.write(_lines(*(f"line {part}{i:03d}" for i in range(100))))
    follower = LogFollower(storage, run.dest, tail=2600)
    seen = [e["event"] for e in follower.read_new(1)]
    assert seen[-1] == "line 9099" and 100 <= len(seen) <= 210, len(seen)
    assert follower.bytes_read <= 2 * 2600 + 100  # about the end, not the whole log
    run.write(_lines("next"))
    assert [e["event"] for e in follower.read_new(1)] == ["next"]
