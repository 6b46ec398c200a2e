"""External listeners: isolated from the run, filtered by event type, fed on a queue thread,
loaded as plug-ins; and ``nbjob.run`` embedded without touching the process's signals or
logging.

The bus's rules are checked in-process (fast); the run's outcome with a raising listener, the
embedding and a listener package installed in the test environment with real runs.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import nbjob
import pytest
from nbjob import delivery, events
from support import make_notebook, read_json, run_nbjob


class Log:
    """Collects what the bus logs, as (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for _, name, fields in self.lines if name == event]


def boom(event: events.Event) -> None:
    if isinstance(event, events.CellStarted):
        raise RuntimeError(f"no luck with cell {event.index}\nsecond line")


def cell_events() -> list[events.Event]:
    state = events.CellState(0, events.CellStatus.COMPLETED, 1, "t0", "t1", 0.1)
    return [
        events.CellsListed((0, 1)),
        events.CellStarted(0, "t0"),
        events.CellEnded(state),
        events.CellStarted(1, "t1"),
        events.TICK,
    ]


# -- the bus -----------------------------------------------------------------------------------


def test_a_raising_listener_is_logged_once_and_the_others_still_get_every_event() -> None:
    log, own, after = Log(), [], []
    bus = events.Bus([own.append], log=log)
    bus.subscribe(boom)
    bus.subscribe(after.append)
    for event in cell_events():
        bus.publish(event)  # never raises
    bus.close(events.RunEnded(events.RunStatus.SUCCEEDED, 0, "ok", 1.0, "out", True, "nb", None))
    assert len(own) == len(after) == 6
    failed = log.named("listener_failed")
    assert failed == [
        {"listener": f"{__name__}.boom", "error": "RuntimeError: no luck with cell 0"}
    ]
    assert log.named("listener_errors") == [{"listener": f"{__name__}.boom", "errors": 2}]


def test_own_listeners_are_not_isolated() -> None:
    bus = events.Bus([boom], log=Log())
    with pytest.raises(RuntimeError):
        bus.publish(events.CellStarted(0, "t0"))


def test_event_types_pick_what_a_listener_gets() -> None:
    got: list[events.Event] = []
    bus = events.Bus(log=Log())
    sub = bus.subscribe(got.append, event_types={events.CellStarted, events.RunEnded}, name="x")
    assert sub.name == "x" and sub.event_types == frozenset({events.CellStarted, events.RunEnded})
    for event in cell_events():
        bus.publish(event)
    assert [type(e) for e in got] == [events.CellStarted, events.CellStarted]
    with pytest.raises(TypeError, match="not nbjob event types"):
        bus.subscribe(got.append, event_types={int})


def test_a_slow_queued_listener_never_holds_up_the_run_and_catches_up_at_the_end() -> None:
    got: list[events.Event] = []
    release = threading.Event()

    def slow(event: events.Event) -> None:
        release.wait(5)  # held until the run has published everything
        got.append(event)

    log = Log()
    bus = events.Bus(log=log)
    bus.subscribe(nbjob.Subscription(slow, queued=True))
    for event in cell_events():
        bus.publish(event)
    assert got == []  # published while the listener is held: the run did not wait for it
    release.set()
    last = events.CellSkipped(1)
    bus.close(last, timeout=5)
    assert got == [*cell_events()[:4], last]  # in order, the last one too; the tick skipped
    assert log.lines == []


def test_a_queued_listener_that_does_not_catch_up_is_abandoned_with_a_warning() -> None:
    release = threading.Event()
    log = Log()
    bus = events.Bus(log=log)
    bus.subscribe(lambda event: release.wait(10), queued=True, name="stuck")
    for event in cell_events():
        bus.publish(event)
    started = time.monotonic()
    bus.close(timeout=0.3)
    assert time.monotonic() - started < 2
    assert log.named("listener_abandoned") == [{"listener": "stuck", "events_left": 3}]  # no tick
    release.set()


def test_ticks_are_not_queued_behind_other_events() -> None:
    release, got = threading.Event(), []
    bus = events.Bus(log=Log())
    bus.subscribe(lambda event: release.wait(10) and got.append(event), queued=True)
    bus.publish(events.CellStarted(0, "t0"))
    time.sleep(0.1)  # the listener holds the first event
    for _ in range(100):
        bus.publish(events.CellOutput(0, "stdout", "x"))
        bus.publish(events.TICK)
    release.set()
    bus.close(timeout=5)
    assert [type(e).__name__ for e in got] == ["CellStarted"] + ["CellOutput"] * 100


def test_a_full_queue_drops_events_and_counts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "QUEUE_SIZE", 2)
    release = threading.Event()
    log = Log()
    bus = events.Bus(log=log)
    bus.subscribe(events.Subscription(lambda event: release.wait(10), queued=True, name="full"))
    for event in cell_events():
        bus.publish(event)
    release.set()
    bus.close(timeout=5)
    assert log.named("listener_queue_full") == [{"listener": "full", "size": 2}]
    assert log.named("listener_events_dropped")[0]["count"] >= 2


# -- real runs ---------------------------------------------------------------------------------


def _embedded(notebook: Path, out: Path, listeners: list[Any]) -> tuple[int, dict[str, Any]]:
    settings = nbjob.resolve({"source": str(notebook), "output": str(out)}, {})
    code = nbjob.run(settings, listeners=listeners)
    return code, read_json(out / "run.json")


def _log_events(out: Path, name: str) -> list[dict[str, Any]]:
    lines = (out / "executor.log").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


def test_a_raising_listener_leaves_the_run_as_it_was(tmp_path: Path) -> None:
    """Embedded in this process: no signal handler is installed, structlog is left alone."""
    import structlog

    notebook = make_notebook(tmp_path / "nb.ipynb", ["print('hello')", "x = 1"])
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    structlog_config = structlog.get_config()
    code, plain = _embedded(notebook, tmp_path / "plain", [])
    seen: list[str] = []
    code_with, record = _embedded(
        notebook, tmp_path / "with", [boom, lambda e: seen.append(type(e).__name__)]
    )
    assert code == code_with == 0
    assert (record["status"], record["exit_code"], record["reason"]) == (
        plain["status"],
        plain["exit_code"],
        plain["reason"],
    )
    assert [c["status"] for c in record["cells"]] == ["completed", "completed"]
    assert [c["status"] for c in plain["cells"]] == ["completed", "completed"]
    failed = _log_events(tmp_path / "with", "listener_failed")
    assert [(e["listener"], e["error"]) for e in failed] == [
        (f"{__name__}.boom", "RuntimeError: no luck with cell 0")
    ]
    assert [e["errors"] for e in _log_events(tmp_path / "with", "listener_errors")] == [2]
    assert seen.count("RunStarted") == seen.count("RunEnded") == 1 and seen[-1] == "RunEnded"
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert structlog.get_config() == structlog_config


PLUGIN = '''
import json, os

class Recorder:
    """Writes each event it gets to RECORDER_FILE, one JSON line each."""

    def __init__(self, settings):
        self.path = os.environ["RECORDER_FILE"]
        self.write({"event": "made", "run_id": settings.run_id})

    def write(self, data):
        with open(self.path, "a") as f:
            f.write(json.dumps(data, default=str) + "\\n")

    def on_event(self, event):
        if type(event).__name__ not in ("Tick", "CellOutput"):
            self.write({"event": type(event).__name__, **vars(event)})
'''


def _install_plugin(site: Path) -> None:
    """A distribution, as pip would install it: a module and its .dist-info with one entry
    point in the group ``nbjob.listeners``."""
    site.mkdir()
    (site / "nbjob_recorder.py").write_text(PLUGIN)
    info = site / "nbjob_recorder-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nbjob-recorder\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[nbjob.listeners]\nrecorder = nbjob_recorder:Recorder\n"
    )


def test_a_listener_package_named_with_listener_gets_the_run_start_to_end(tmp_path: Path) -> None:
    site, events_file, out = tmp_path / "site", tmp_path / "events.jsonl", tmp_path / "out"
    _install_plugin(site)
    notebook = make_notebook(tmp_path / "nb.ipynb", ["print('hello')", "1 / 0"])
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "RECORDER_FILE": str(events_file)}
    result = run_nbjob("run", notebook, "--output", out, "--listener", "recorder", "--run-id", "r7",
                       env=env)  # fmt: skip
    assert result.returncode == 1, result.stderr
    got = [json.loads(line) for line in events_file.read_text().splitlines()]
    names = [e["event"] for e in got]
    assert names == [
        "made",
        "CellsListed",
        "RunStarted",
        "CellStarted",
        "CellEnded",
        "CellStarted",
        "CellEnded",
        "RunEnded",
    ]
    assert got[0]["run_id"] == "r7"
    started, ended = got[2], got[-1]
    assert (started["run_id"], started["attempt"], started["notebook"]) == ("r7", 1, "nb.ipynb")
    assert started["kernel"]["name"] == "python3"
    assert (ended["status"], ended["exit_code"], ended["stored"]) == ("failed", 1, True)
    assert ended["output"] == str(out) and ended["notebook"] == "nb.ipynb"
    assert ended["reason"] == read_json(out / "run.json")["reason"]


def test_an_unknown_listener_is_a_usage_error_before_any_kernel(tmp_path: Path) -> None:
    site, out = tmp_path / "site", tmp_path / "out"
    _install_plugin(site)
    notebook = make_notebook(tmp_path / "nb.ipynb", ["open('ran', 'w').close()"])
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "NBJOB_LISTENERS": "recorder,nope"}  # fmt: skip
    result = run_nbjob("run", notebook, "--output", out, env=env, cwd=tmp_path)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("nbjob: error: unknown listener 'nope'") and "recorder" in last
    assert not out.exists() and not (tmp_path / "ran").exists()


def test_listener_names_from_repeated_flags_commas_or_the_variable() -> None:
    from nbjob import cli, config

    args = cli.build_parser().parse_args(
        ["run", "nb.ipynb", "--listener", "a", "--listener", "b, c,a"]
    )
    flags = {"source": "nb.ipynb", "listeners": args.listeners}
    assert config.resolve(flags, {}).listeners == ("a", "b", "c")
    from_env = config.resolve({"source": "nb.ipynb"}, {"NBJOB_LISTENERS": "x,y"})
    assert from_env.listeners == ("x", "y")
    assert config.resolve({"source": "nb.ipynb"}, {}).listeners == ()
