"""``nbjob watch DEST`` against real runs, local and on a real S3 server (moto) on loopback.

Each run's notebook prints ticks and then waits for a file the test creates (``release``), so
"the ticks appear while the run goes on" is checked while the run is certainly still running;
then the run ends as the case asks (success, a raising cell, SIGTERM) and the watcher must end
with the run's own exit code. A terminal is a real pseudo-terminal (``pty``).
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support import NBJOB, NbjobProcess, S3Server, nbjob_env, notebook, start_nbjob, wait_until

pytestmark = pytest.mark.e2e

TICKS = (
    "import time, pathlib\n"
    "for i in range(4):\n"
    "    print('tick', i, flush=True)\n"
    "    time.sleep(0.2)"
)
BAR = (
    "for i in range(5):\n"
    "    print(f'\\rstep {i}/5', end='', flush=True)\n"
    "    time.sleep(0.2)\n"
    "print()"
)
GLUE = (
    "display({'application/scrapbook.scrap.json+json':\n"
    "         {'name': 'accuracy', 'data': 0.9, 'encoder': 'json', 'version': 1}},\n"
    "        raw=True, metadata={'scrapbook': {'name': 'accuracy'}})"
)


def _wait_for(release: Path) -> str:
    return (
        f"p = pathlib.Path({str(release)!r})\n"
        "for _ in range(600):\n"
        "    if p.exists():\n"
        "        break\n"
        "    time.sleep(0.1)"
    )


def _start_run(tmp_path: Path, dest: str, *last: str, env: dict[str, str] | None = None) -> Any:
    release = tmp_path / "release"
    nb = notebook(tmp_path / "watched.ipynb", TICKS, BAR, GLUE, _wait_for(release), *last)
    return start_nbjob("run", nb, "--output", dest, "--no-report", env=env), release


def _watch(dest: str, *flags: str, env: dict[str, str] | None = None) -> NbjobProcess:
    return start_nbjob("watch", dest, "--poll", "0.3", *flags, env=env)


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _waiting(watcher: NbjobProcess) -> bool:
    """The watcher shows the ticks and the run's waiting cell (index 3) started."""
    events = _events(watcher.output()[0])
    started = any(e["event"] == "cell_start" and e["cell"] == 3 for e in events)
    return started and len(_ticks(watcher)) == 4


def _ticks(watcher: NbjobProcess) -> list[str]:
    return [
        e["text"]
        for e in _events(watcher.output()[0])
        if e["event"] == "output" and e["text"].startswith("tick")
    ]


@pytest.mark.parametrize(
    ("last", "stop", "code"),
    [("", False, 0), ("raise ValueError('boom')", False, 1), ("", True, 143)],
    ids=["success", "a cell raised", "stopped"],
)
def test_watch_follows_a_local_run_and_exits_with_its_code(
    tmp_path: Path, last: str, stop: bool, code: int
) -> None:
    dest = str(tmp_path / "out")
    run, release = _start_run(tmp_path, dest, *([last] if last else []))
    watcher = _watch(dest, "--json")
    # The ticks arrive while the run waits for the release file: it is certainly running.
    assert wait_until(lambda: _waiting(watcher), 60), watcher.output()
    assert run.running()
    if stop:
        os.kill(run.proc.pid, signal.SIGTERM)
    else:
        release.touch()
    assert run.wait(60).returncode == code
    result = watcher.wait(10)  # the bound on the watcher's lag after the run's end
    assert result.returncode == code, result
    events = _events(result.stdout)
    assert _ticks(watcher) == [f"tick {i}\n" for i in range(4)]  # each once, in order
    kinds = [e["event"] for e in events]
    assert kinds[0] in ("waiting", "run") and kinds[-1] == "end"
    assert {"cell_start", "cell_end", "metric"} <= set(kinds)
    end = events[-1]
    assert end["exit_code"] == code and end["metrics"] == {"accuracy": 0.9}
    assert end["notebook"] == os.path.join(dest, "watched.ipynb")
    bars = [e["text"] for e in events if e["event"] == "output" and "step" in e["text"]]
    assert bars[-1].rstrip("\n") == "step 4/5"  # the progress bar folded: its last state
    if code == 1:
        assert end["failed_cell"]["ename"] == "ValueError"
        assert "ValueError: boom" in end["reason"]


def test_watch_follows_a_run_on_s3_reading_only_new_log_bytes(
    tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    dest = f"s3://{bucket}/runs/one"
    run, release = _start_run(tmp_path, dest, env=s3_server.env)
    watcher = _watch(dest, "--json", env=s3_server.env)
    assert wait_until(lambda: _waiting(watcher), 60), watcher.output()
    assert run.running()
    release.touch()
    assert run.wait(60).returncode == 0
    result = watcher.wait(10)
    assert result.returncode == 0, result
    assert _ticks(watcher) == [f"tick {i}\n" for i in range(4)]  # ranged reads: none twice
    end = _events(result.stdout)[-1]
    assert end["event"] == "end" and end["metrics"] == {"accuracy": 0.9}
    log = s3_server.get(bucket, "runs/one/executor.log")
    run_json = s3_server.get(bucket, "runs/one/run.json")
    # What the watcher read is far less than the log and run.json once per poll.
    assert end["bytes_read"] < end["polls"] * (len(log) + len(run_json)) / 2


def test_watch_on_a_finished_run_prints_the_summary_and_exits_at_once(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    nb = notebook(tmp_path / "done.ipynb", "print('hi')", "1/0")
    assert start_nbjob("run", nb, "--output", dest).wait(60).returncode == 1
    result = _watch(str(dest)).wait(20)
    assert result.returncode == 1, result
    out = result.stdout
    assert "run failed (exit 1)" in out
    assert "failed cell 1: ZeroDivisionError: division by zero" in out
    assert f"notebook: {dest / 'done.ipynb'}" in out
    assert f"report: {dest / 'done.html'}" in out
    assert "\x1b[" not in out  # not a terminal: plain lines


def test_a_run_killed_without_a_word_is_reported_lost(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    run, _ = _start_run(tmp_path, str(dest))
    assert wait_until(lambda: '"running_cell": 3' in _text(dest / "run.json"), 60), (
        "the run never reached its waiting cell"
    )
    run.kill()  # SIGKILL to its process group: no record of an end
    result = _watch(str(dest), "--lost-after", "1", "--json").wait(30)
    assert result.returncode == 9, result
    lost = _events(result.stdout)[-1]
    assert lost["event"] == "lost" and lost["status"] == "lost"
    assert "heartbeat stopped" in lost["reason"]


def test_no_run_at_the_destination_is_lost_after_wait_start(tmp_path: Path) -> None:
    result = _watch(str(tmp_path / "nothing"), "--wait-start", "1").wait(20)
    assert result.returncode == 9
    assert "no run appeared" in result.stderr


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_a_terminal_shows_a_progress_bar_and_the_running_cell(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    run, release = _start_run(tmp_path, str(dest))
    master, slave = pty.openpty()
    watcher = subprocess.Popen(
        [NBJOB, "watch", str(dest), "--poll", "0.3"],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.STDOUT,
        env={**nbjob_env(), "COLUMNS": "100", "LINES": "30"},
        start_new_session=True,
    )
    os.close(slave)
    screen = bytearray()
    try:
        assert wait_until(lambda: b"tick 3" in _drain(master, screen), 60), bytes(screen)
        text = bytes(_drain(master, screen)).decode("utf-8", "replace")
        assert "█" in text or "░" in text  # the bar
        assert "cells" in text and "In [*] cell" in text
        assert "\x1b[" in text  # the footer is redrawn in place
        release.touch()
        assert run.wait(60).returncode == 0
        assert watcher.wait(10) == 0
        text = bytes(_drain(master, screen)).decode("utf-8", "replace")
        assert "run succeeded (exit 0)" in text
    finally:
        if watcher.poll() is None:
            os.killpg(watcher.pid, signal.SIGKILL)
            watcher.wait(10)
        os.close(master)


def _drain(fd: int, into: bytearray) -> bytearray:
    """Whatever the terminal shows now (read until nothing more comes at once)."""
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline and select.select([fd], [], [], 0.05)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the watcher closed its end
            break
        if not chunk:
            break
        into.extend(chunk)
    return into


def test_a_multi_rank_run_shows_each_rank(tmp_path: Path) -> None:
    release = tmp_path / "release"
    nb = notebook(tmp_path / "ranks.ipynb", TICKS, _wait_for(release))
    dest = str(tmp_path / "out")
    flags = ("--world-size", "2", "--run-id", "two", "--no-report")
    ranks = [start_nbjob("run", nb, "--output", dest, "--rank", str(r), *flags) for r in (0, 1)]
    watcher = _watch(dest, "--json")
    try:

        def rank_one() -> list[str]:
            events = _events(watcher.output()[0])
            return [e["state"] for e in events if e["event"] == "rank" and e["rank"] == 1]

        assert wait_until(lambda: any(s.startswith("running") for s in rank_one()), 60)
        release.touch()
        assert [r.wait(90).returncode for r in ranks] == [0, 0]
        result = watcher.wait(10)
    finally:
        for proc in (*ranks, watcher):
            proc.kill()
    assert result.returncode == 0, result
    assert rank_one()[-1] == "succeeded (exit 0)", result.stdout
    assert _events(result.stdout)[-1]["event"] == "end"
