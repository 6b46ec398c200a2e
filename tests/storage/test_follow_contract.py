"""The live log's follower (``nbjob.follow.LogFollower``, what ``nbjob watch`` reads) against
every store: the lines written since the last read, each once, read with a ranged read (the new
bytes only) where the store has ranges, from the start again when the log became shorter."""

from __future__ import annotations

import json

import pytest
from nbjob.config import storage_options
from nbjob.follow import LogFollower
from nbjob.storage import Storage, join
from stores import Store


def _lines(*names: str) -> bytes:
    return b"".join(json.dumps({"event": n}).encode() + b"\n" for n in names)


def test_the_follower_reads_only_what_is_new(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    url = join(store.new_root(), "run/executor.log")
    follower = LogFollower(Storage(storage_options({}, store.env)), url)
    assert follower.read_new() == []  # no log yet
    first = _lines("a", "b")
    store.put(url, first + b'{"event": "c"')  # a checkpoint: the whole log so far
    assert [e["event"] for e in follower.read_new()] == ["a", "b"]
    assert follower.bytes_read == len(first) + len(b'{"event": "c"')
    more = b"}\n" + _lines("d")
    store.put(url, first + b'{"event": "c"' + more)
    before = follower.bytes_read
    assert [e["event"] for e in follower.read_new()] == ["c", "d"]
    assert follower.bytes_read - before == len(more)  # a ranged read: the new bytes only
    assert follower.read_new() == []  # nothing new: nothing read
    store.put(url, _lines("x"))  # a new attempt's log, shorter
    assert [e["event"] for e in follower.read_new()] == ["x"]


def test_a_follower_joining_late_reads_the_tail_only(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    url = join(store.new_root(), "run/executor.log")
    log = _lines(*(f"line {i:04d}" for i in range(1000)))  # 25 bytes a line
    store.put(url, log)
    follower = LogFollower(Storage(storage_options({}, store.env)), url, tail=100)
    assert [e["event"] for e in follower.read_new()] == [f"line {i:04d}" for i in range(996, 1000)]
    assert follower.bytes_read <= 101  # the tail, not the whole log
    store.put(url, log + _lines("next"))
    assert [e["event"] for e in follower.read_new()] == ["next"]
