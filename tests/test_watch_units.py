"""The fast layer of ``nbjob watch`` and ``--notify``: the log follower, the watcher against a
destination folder the test writes itself (run.json as checkpoints leave it), the views, and the
notification's body. No process is started (the e2e tests are tests/test_watch.py and
tests/test_notify.py)."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest
from nbjob import config, events
from nbjob.errors import RunLostError, UsageError
from nbjob.follow import LogFollower
from nbjob.layout import Destination
from nbjob.listeners import notify
from nbjob.storage import Storage
from nbjob.watch import Progress, Update, Watcher, WatchSettings
from nbjob.watchview import JsonView, PlainView, TerminalView, footer_lines, lines


def _line(**event: Any) -> bytes:
    return (json.dumps(event) + "\n").encode()


def test_the_follower_hands_out_complete_new_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "executor.log"
    follower = LogFollower(Storage(), Destination(str(tmp_path)))
    assert follower.read_new() == []  # no log yet
    log.write_bytes(_line(event="a") + b'{"event": "b"')  # the last line half written
    assert [e["event"] for e in follower.read_new()] == ["a"]
    with log.open("ab") as f:
        f.write(b"}\n" + _line(event="c"))
    assert [e["event"] for e in follower.read_new()] == ["b", "c"]
    assert follower.read_new() == []
    assert follower.bytes_read == log.stat().st_size  # each byte read once
    log.write_bytes(_line(event="new attempt"))  # shorter: rewritten from the start
    assert [e["event"] for e in follower.read_new()] == ["new attempt"]


def _now(seconds_ago: float = 0.0) -> str:
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds_ago)
    return when.isoformat(timespec="milliseconds")


def _record(
    status: str = "running", cells: list[dict[str, Any]] | None = None, **more: Any
) -> dict[str, Any]:
    return {
        "run_id": "r1",
        "status": status,
        "exit_code": None if status == "running" else more.pop("exit_code", 0),
        "notebook": "nb.ipynb",
        "attempt": 1,
        "started_at": _now(5),
        "heartbeat_at": _now(),
        "cells": cells or [],
        "metrics": {},
        "identity": {"rank": 0, "world_size": 1},
        **more,
    }


class Recorder:
    def __init__(self) -> None:
        self.updates: list[Update] = []
        self.footers: list[Progress] = []

    def show(self, update: Update) -> None:
        self.updates.append(update)

    def footer(self, progress: Progress) -> None:
        self.footers.append(progress)

    def close(self) -> None:
        pass


def _watcher(
    dest: Path, steps: list[Any] | None = None, **settings: Any
) -> tuple[Watcher, Recorder]:
    """A watcher whose every sleep runs the next of ``steps`` (the run going on)."""
    view = Recorder()
    todo = list(steps or [])

    def sleep(_: float) -> None:
        assert todo, "the watcher polled once more than the run had steps"
        todo.pop(0)()

    return Watcher(WatchSettings(str(dest), **settings), view, sleep), view


def _write(dest: Path, record: dict[str, Any], *log: bytes) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "run.json").write_text(json.dumps(record))
    if log:
        with (dest / "executor.log").open("ab") as f:
            f.write(b"".join(log))


def test_the_watcher_tells_each_change_in_order_and_ends_with_the_run_code(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    (tmp_path / "out").mkdir()
    (dest / "nb.ipynb").write_text(
        json.dumps({"cells": [{"cell_type": "code", "source": ["\n", "for i in range(3):\n"]}]})
    )
    running = [{"index": 0, "status": "running", "started_at": _now(1)}]
    ended = [{"index": 0, "status": "failed", "execution_count": 1, "duration_s": 1.5,
              "error": {"ename": "ValueError", "evalue": "boom"}}]  # fmt: skip
    steps = [
        lambda: _write(dest, _record(cells=running), _line(event="stream", cell=0, text="t 0\n")),
        lambda: _write(
            dest,
            _record("failed", ended, exit_code=1, metrics={"loss": 0.5}, reason="raised"),
            _line(event="stream", cell=0, text="50%", partial=True),
            _line(event="stream", cell=0, text="t 1\n"),
        ),
    ]
    _write(dest, _record(cells=[{"index": 0, "status": "pending"}]))
    watcher, view = _watcher(dest, steps)
    assert watcher.run() == 1
    kinds = [(u.kind, u.data.get("text") or u.data.get("name")) for u in view.updates]
    assert kinds == [
        ("run", None),
        ("cell_start", None),
        ("output", "t 0\n"),
        ("output", "50%"),
        ("output", "t 1\n"),
        ("cell_end", None),
        ("metric", "loss"),
        ("end", None),
    ]
    assert view.updates[1].data["source"] == "for i in range(3):"
    end = view.updates[-1].data
    assert end["exit_code"] == 1 and end["notebook"] == str(dest / "nb.ipynb")
    assert view.footers[1].running == 0 and view.footers[1].source == "for i in range(3):"


def test_output_before_run_json_shows_its_cell_waits_for_the_cell_start(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    pending = [{"index": 0, "status": "pending"}]
    _write(dest, _record(cells=pending), _line(event="stream", cell=0, text="early\n"))
    steps = [lambda: _write(dest, _record("succeeded", [{"index": 0, "status": "completed"}]))]
    watcher, view = _watcher(dest, steps)
    assert watcher.run() == 0
    assert [u.kind for u in view.updates] == ["run", "cell_start", "output", "cell_end", "end"]


def test_a_finished_run_is_summed_up_at_once(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    _write(dest, _record("stopped", exit_code=143, reason="stopped by SIGTERM"))
    watcher, view = _watcher(dest)  # no steps: a sleep would fail the test
    assert watcher.run() == 143
    assert [u.kind for u in view.updates] == ["end"]
    assert watcher.polls == 1


def test_a_running_run_without_heartbeat_or_lease_is_lost(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    _write(dest, _record(heartbeat_at=_now(120)))
    watcher, view = _watcher(dest)
    assert watcher.run() == RunLostError.exit_code == 9
    assert view.updates[-1].kind == "lost"


def test_a_live_lease_keeps_a_quiet_run_alive(tmp_path: Path) -> None:
    import os
    import socket

    dest = tmp_path / "out"
    _write(dest, _record(heartbeat_at=_now(120)))
    alive = os.getppid()  # a live process of this host (not this one: a restarted container's)
    lease = {"host": socket.gethostname(), "pid": alive, "heartbeat_at": _now(1)}
    (dest / ".nbjob-lease").mkdir()
    (dest / ".nbjob-lease" / "1.json").write_text(json.dumps(lease))
    steps = [lambda: _write(dest, _record("succeeded"))]
    watcher, _ = _watcher(dest, steps, lost_after=60)
    assert watcher.run() == 0


def test_no_run_within_wait_start_is_lost(tmp_path: Path) -> None:
    watcher, _ = _watcher(tmp_path / "none", [lambda: None] * 3, wait_start=0, poll=0.01)
    with pytest.raises(RunLostError, match="no run appeared"):
        watcher.run()


def test_the_ranks_states_come_from_their_own_run_json(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    identity = {"rank": 0, "world_size": 3}
    _write(dest, _record(identity=identity))
    _write(dest / "ranks" / "1", _record("failed", exit_code=1))
    gathered = [
        {"rank": 0, "status": "failed", "exit_code": 1},
        {"rank": 1, "status": "failed", "exit_code": 1},
        {"rank": 2, "status": "missing", "exit_code": None},
    ]
    steps = [
        # Rank 0 shows its end to its peers first, then waits for theirs: not over yet.
        lambda: _write(dest, _record("failed", exit_code=1, identity=identity)),
        lambda: _write(dest, _record("failed", exit_code=1, identity=identity, ranks=gathered)),
    ]
    watcher, view = _watcher(dest, steps)
    assert watcher.run() == 1
    ranks = [u.data for u in view.updates if u.kind == "rank"]
    assert ranks == [
        {"rank": 1, "state": "failed (exit 1)"},
        {"rank": 2, "state": "not started"},
        {"rank": 2, "state": "missing"},
    ]
    assert view.updates[-1].kind == "end"


def test_plain_lines_and_the_terminal_footer() -> None:
    error = {"ename": "E", "evalue": "x"}
    end = Update("cell_end", {"cell": 3, "execution_count": 2, "status": "failed",
                              "duration_s": 0.25, "error": error})  # fmt: skip
    assert lines(end) == ["In [2] cell 3 failed in 0.2 s: E: x"]
    assert lines(Update("output", {"text": "a\nb\n"})) == ["    a", "    b"]
    now = dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.timezone.utc)
    p = Progress(done=1, total=4, running=2, since=now - dt.timedelta(seconds=5),
                 source="train()", partial="42%", started=now - dt.timedelta(seconds=60),
                 ranks={1: "running 1/4"})  # fmt: skip
    assert footer_lines(p, now) == [
        "[" + "█" * 6 + "░" * 18 + "] 1/4 cells · 0:01:00",
        "In [*] cell 2 · 0:00:05: train()",
        "    42%",
        "rank 1: running 1/4",
    ]
    out = io.StringIO()
    tty = TerminalView(out)
    tty.footer(p)
    tty.show(Update("metric", {"name": "loss", "value": 1}))
    before = out.getvalue()
    tty.show(Update("output", {"cell": 2, "text": "43%", "partial": True}))
    assert out.getvalue() == before  # a line being rewritten: the footer's, not scrolled
    screen = out.getvalue()
    assert "\x1b[4F\x1b[J" in screen and screen.index("metric loss = 1") > screen.index("\x1b[4F")
    plain = io.StringIO()
    PlainView(plain).footer(p)
    assert plain.getvalue() == ""
    js = io.StringIO()
    JsonView(js).show(Update("metric", {"name": "loss", "value": 1}))
    assert json.loads(js.getvalue()) == {"event": "metric", "name": "loss", "value": 1}


def test_the_notification_body_and_its_text() -> None:
    ended = events.RunEnded(
        events.RunStatus.FAILED, 1, "In [2] (cell 3) raised E: x", 12.34, "s3://b/r", True,
        "nb.ipynb", None,
    )  # fmt: skip
    body = notify.summary(ended, "r1", 2, {"acc": 0.9})
    assert body["notebook"] == "s3://b/r/nb.ipynb" and body["report"] is None
    assert body["text"] == (
        "nbjob run r1 failed (exit 1) in 12.3 s: In [2] (cell 3) raised E: x · acc=0.9"
        " · results: s3://b/r/nb.ipynb"
    )
    url = "https://bot:pw-secret@hooks.example.com/services/T0/B0/abcdefghijkl?token=tok-secret"
    assert notify.shown(url) == "https://hooks.example.com/…"
    hidden = notify.secrets_of([url])
    assert {url, "pw-secret", "tok-secret", "/services/T0/B0/abcdefghijkl"} <= set(hidden)


def test_notify_takes_http_urls_only() -> None:
    settings = config.resolve({"source": "nb.ipynb", "notify": ["http://a/x", "https://b/y"]}, {})
    assert settings.notify == ("http://a/x", "https://b/y")
    env = {"NBJOB_NOTIFY": "https://a/x,https://b/y"}
    assert config.resolve({"source": "nb.ipynb"}, env).notify == ("https://a/x", "https://b/y")
    with pytest.raises(UsageError, match="--notify") as caught:
        config.resolve({"source": "nb.ipynb", "notify": ["ftp://secret-key@a/x"]}, {})
    assert "secret-key" not in str(caught.value)


def test_the_newest_resource_sample_and_the_peaks_in_words() -> None:
    from nbjob.resources.words import peaks_line, resources_line

    res = {
        "last_sample": {
            "memory_bytes": 3 * 2**30 // 2, "memory_limit_bytes": 8 * 2**30,
            "rss_bytes": 900 * 2**20, "cpu_s": 12.34,
            "gpus": [{"index": 0, "memory_used_bytes": 10 * 2**30, "utilization": 45}],
        },
        "peaks": {"memory_bytes": 2 * 2**30, "rss_bytes": 950 * 2**20,
                  "gpus": [{"index": 0, "memory_bytes": 11 * 2**30}]},
    }  # fmt: skip
    line = resources_line(res)
    assert line == "memory 1.5 GiB of 8.0 GiB · kernel 900 MiB, CPU 12.3 s · GPU 0 45 % 10.0 GiB"
    assert peaks_line(res) == "memory 2.0 GiB, kernel 950 MiB, GPU 0 11.0 GiB"
    assert resources_line(None) == "" and peaks_line({"peaks": {}}) == ""
    assert line in footer_lines(Progress(total=3, resources=line))
