"""The stop token: real signals at every moment of a run end in 143 with run.json, never a hang.

Unit tests drive ``nbjob.stop`` with real signals sent to this process; the in-process runs use
a real kernel and a listener that sends the signal at an exact moment (between cells, after the
last cell); the end-to-end runs signal an ``nbjob`` subprocess during a slow download, during a
kernel start that never finishes, and with ``--stop-signals USR1``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from nbjob import config, events, stop
from nbjob.errors import StoppedError
from nbjob.job import Job
from support import FlakyProxy, S3Server, log_events, notebook, read_json, start_nbjob, wait_until

MARGIN_S = 4.0  # safety margin on top of the grace period (a loaded CI machine)


@pytest.fixture
def usr1() -> Iterator[stop.StopToken]:
    """A token that SIGUSR1 sets in this process; the default handler is back afterwards."""
    token = stop.StopToken()
    stop.install(token, ["SIGUSR1"])
    try:
        yield token
    finally:
        stop.install(stop.StopToken(), [])
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


# -- the token ----------------------------------------------------------------------------------


def test_the_handler_only_sets_the_token(usr1: stop.StopToken) -> None:
    assert not usr1.requested and usr1.remaining(10) == 10
    os.kill(os.getpid(), signal.SIGUSR1)  # no exception: the handler raises nothing
    assert wait_until(lambda: usr1.requested, 5)
    assert (usr1.signal, usr1.reason) == ("SIGUSR1", "stopped by SIGUSR1")
    first = usr1.requested_at
    os.kill(os.getpid(), signal.SIGUSR1)
    usr1.request("later")  # the first request counts
    assert usr1.requested_at == first and usr1.reason == "stopped by SIGUSR1"
    assert 9 < usr1.remaining(10) <= 10
    with pytest.raises(StoppedError, match="stopped by SIGUSR1 during the test"):
        usr1.check("during the test")


def test_wait_for_gives_up_on_a_blocking_step_when_stopped(usr1: stop.StopToken) -> None:
    assert stop.wait_for(usr1, lambda: 42, "a quick step") == 42
    with pytest.raises(ValueError, match="boom"):
        stop.wait_for(usr1, lambda: int("boom"), "a failing step")
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1)).start()
    started = time.monotonic()
    with pytest.raises(StoppedError, match="during a slow step"):
        stop.wait_for(usr1, lambda: time.sleep(20), "a slow step")
    assert time.monotonic() - started < 2  # not the 20 s of the step
    with pytest.raises(StoppedError, match="before a quick step"):
        stop.wait_for(usr1, lambda: 1, "a quick step")


def test_timebox_gives_work_at_most_its_budget() -> None:
    assert stop.timebox(lambda: 42, 5, "a quick step").value == 42
    failed = stop.timebox(lambda: int("boom"), 5, "a failing step")
    assert isinstance(failed.error, ValueError) and not failed.ok
    with pytest.raises(ValueError, match="boom"):
        failed.result("a failing step")
    started = time.monotonic()
    slow = stop.timebox(lambda: time.sleep(20), 0.3, "a slow step")
    assert slow.late and slow.stopped_by is None and time.monotonic() - started < 2
    with pytest.raises(TimeoutError):
        slow.result("a slow step")
    started = time.monotonic()
    assert stop.timebox(lambda: time.sleep(20), 0, "a step", at_least=0.3).late
    assert 0.25 < time.monotonic() - started < 2  # the floor, not nothing and not 20 s


def test_a_stop_ends_a_budgeted_step_when_its_grace_runs_out(usr1: stop.StopToken) -> None:
    budget = stop.Budget(token=usr1, grace=0.5)
    assert budget.left() == math.inf  # nothing pressing: the step's own bound counts
    assert 59 < budget.share(1 / 3, calm=60).left() <= 60
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1)).start()
    started = time.monotonic()
    done = stop.timebox(lambda: time.sleep(20), budget, "the final write")
    assert 0.5 < time.monotonic() - started < 2  # the signal, then the grace
    assert done.stopped_by == "stopped by SIGUSR1"
    with pytest.raises(StoppedError, match="stopped by SIGUSR1 during the final write"):
        done.result("the final write")
    assert not stop.timebox(lambda: 1, budget, "a late step").ok  # no time left: not started


def test_a_budget_shares_what_is_left_of_the_grace() -> None:
    token = stop.StopToken()
    token.request("stopped by SIGTERM", "SIGTERM")
    budget = stop.Budget(token=token, grace=9.0)
    assert 8.5 < budget.left() <= 9
    assert 2.5 < budget.share(1 / 3).left() <= 3
    assert 7 < budget.less(1.5).left() <= 7.5
    assert 0.9 < stop.Budget(token=token, grace=2).share(0.1, at_least=1).left() <= 1
    assert stop.Budget(token=token, grace=0.1).share(0.1, at_least=1).left() <= 0.1  # the grace
    assert stop.Budget.within(5).share(0.5, calm=1).left() <= 1


def test_a_final_process_exits_within_the_bound_whatever_is_left_running() -> None:
    # a thread Python's exit would wait for (a library's abandoned upload pool, say)
    code = (
        "import threading, time\n"
        "from nbjob import stop\n"
        "threading.Thread(target=time.sleep, args=(60,)).start()\n"
        "print('stored', flush=True)\n"
        "stop.exit_within(0.5, 7)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (7, "stored\n")
    assert time.monotonic() - started < 10  # not the thread's 60 s


def test_a_final_process_skips_the_teardown_but_not_the_exit_handlers(tmp_path: Path) -> None:
    """What Python's exit does before the teardown still happens (threads joined, exit
    handlers run, stdout flushed), with the outcome's exit code; the teardown (which would
    flush an object's buffered file as it is freed) does not."""
    code = (
        "import atexit, threading, time\n"
        "from nbjob import stop\n"
        "stop.exit_without_teardown()\n"
        "threading.Thread(target=time.sleep, args=(0.3,)).start()\n"
        "atexit.register(print, 'handler ran')\n"
        f"kept = open({str(tmp_path / 'left-open')!r}, 'w'); kept.write('buffered')\n"
        "print('stored', end='')\n"
        "stop.exit_without_teardown(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (3, "storedhandler ran\n", "")
    assert (tmp_path / "left-open").read_text() == ""  # no teardown: nothing freed and flushed
    done = subprocess.run(  # no outcome given: Python's own exit, teardown included
        [sys.executable, "-c", code.replace("stop.exit_without_teardown(3)\n", "")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, (tmp_path / "left-open").read_text()) == (0, "buffered")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("TERM,INT", ("SIGTERM", "SIGINT")),
        ("sigusr1, term ,USR1", ("SIGUSR1", "SIGTERM")),
        ("10", (signal.Signals(10).name,)),
    ],
)
def test_parse_signals(text: str, names: tuple[str, ...]) -> None:
    assert stop.parse_signals(text) == names


@pytest.mark.parametrize("text", ["KILL", "STOP", "NOPE", "", " , "])
def test_parse_signals_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        stop.parse_signals(text)


# -- in-process runs: a real kernel, a real signal at an exact moment ---------------------------


class SignalAfter:
    """A listener that sends ``sig`` to this process when cell ``index`` has ended."""

    def __init__(self, index: int, sig: signal.Signals = signal.SIGUSR1) -> None:
        self.index, self.sig = index, sig

    def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.CellEnded) and event.index == self.index:
            os.kill(os.getpid(), self.sig)


def _run_in_process(
    tmp_path: Path, token: stop.StopToken, after_cell: int, cells: int = 4
) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    nb = notebook(tmp_path / "nb.ipynb", *[f"print({i})" for i in range(cells)])
    out = tmp_path / "out"
    settings = config.resolve(
        {"source": str(nb), "output": str(out), "stop_signals": "USR1", "log_format": "json"}, {}
    )
    code = Job(settings, token, [SignalAfter(after_cell)]).run()
    return code, read_json(out / "run.json"), log_events(out)


def test_stop_between_cells(tmp_path: Path, usr1: stop.StopToken) -> None:
    """Cell 2 went to the kernel when cell 1 replied (nbjob.execute sends the next cell
    early): the stop at cell 1's end finds it running (interrupted) or replied (completed),
    and nothing after it runs."""
    code, record, logged = _run_in_process(tmp_path, usr1, after_cell=1)
    assert code == 143
    assert (record["status"], record["exit_code"]) == ("stopped", 143)
    statuses = [c["status"] for c in record["cells"]]
    assert statuses[:2] == ["completed", "completed"] and statuses[3] == "pending"
    if statuses[2] == "completed":
        assert record["reason"] == "stopped by SIGUSR1 before cell 3"
    else:
        assert statuses[2] == "interrupted"
        assert record["reason"] == "stopped by SIGUSR1 while In [3] (cell 2) was running"
    assert [e["cell"] for e in logged if e["event"] == "cell_start"] == [0, 1, 2]
    assert logged[-1]["event"] == "run_end" and logged[-1]["exit_code"] == 143


def test_stop_right_after_the_last_cell(tmp_path: Path, usr1: stop.StopToken) -> None:
    code, record, logged = _run_in_process(tmp_path, usr1, after_cell=3)
    assert code == 143  # the results were not stored yet when the stop came
    assert (record["status"], record["reason"]) == ("stopped", "stopped by SIGUSR1")
    assert [c["status"] for c in record["cells"]] == ["completed"] * 4
    assert record["failed_cell"] is None
    assert [e["event"] for e in logged].count("cell_end") == 4


# -- end to end: a subprocess, a real platform signal --------------------------------------------


class SlowServer:
    """An HTTP server that sends a big body one small chunk at a time (a slow download)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sending = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(100 * 2**20))
                self.end_headers()
                for _ in range(600):  # at most a minute
                    if server.release.is_set():
                        return
                    try:
                        self.wfile.write(b"\0" * 1024)
                        self.wfile.flush()
                    except OSError:
                        return  # the client went away
                    server.sending.set()
                    time.sleep(0.1)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/bundle.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_sigterm_during_a_slow_download(tmp_path: Path) -> None:
    server = SlowServer()
    out = tmp_path / "out"
    run = start_nbjob("run", server.url, "--output", out, "--stop-grace", "3")
    try:
        assert server.sending.wait(30), run.output()
        time.sleep(0.3)  # well inside the download
        sent = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        result = run.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        run.kill()
        server.close()
    assert result.returncode == 143, result.stderr
    assert took < 3 + MARGIN_S
    record = read_json(out / "run.json")
    assert (record["status"], record["exit_code"]) == ("stopped", 143)
    assert record["reason"] == "stopped by SIGTERM during the fetch"
    assert result.last_event["reason"] == record["reason"]


def _never_ready_kernel(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A kernelspec whose process never answers (it writes its PID and sleeps)."""
    pid_file = tmp_path / "kernel.pid"
    spec = tmp_path / "jupyter" / "kernels" / "never-ready"
    spec.mkdir(parents=True)
    code = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-c", code, str(pid_file), "{connection_file}"],
                "display_name": "never ready",
                "language": "python",
            }
        )
    )
    return {"JUPYTER_PATH": str(tmp_path / "jupyter")}, pid_file


def test_sigterm_while_the_kernel_starts(tmp_path: Path) -> None:
    env, pid_file = _never_ready_kernel(tmp_path)
    nb = notebook(tmp_path / "nb.ipynb", "print('never')")
    out = tmp_path / "out"
    run = start_nbjob(
        "run", nb, "--output", out, "--kernel", "never-ready", "--kernel-start-timeout", "4",
        env=env,
    )  # fmt: skip
    pid = 0
    try:
        assert wait_until(lambda: pid_file.is_file() and pid_file.read_text(), 30), run.output()
        pid = int(pid_file.read_text())
        # The cells are listed (the first checkpoint) right before the kernel start is
        # waited for: the log, written as events happen, says "bundle" before the kernel list.
        assert wait_until(lambda: _cells_listed(out), 30), run.output()
        sent = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        result = run.wait(timeout=30)
        took = time.monotonic() - sent
        assert wait_until(lambda: _gone(pid), 10), (_state(pid), result)
    finally:
        run.kill()
        if pid and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    assert result.returncode == 143, result.stderr
    assert took < 10 + MARGIN_S
    record = read_json(out / "run.json")
    assert (record["status"], record["exit_code"]) == ("stopped", 143)
    assert record["reason"] == "stopped by SIGTERM during the kernel start"
    assert [c["status"] for c in record["cells"]] == ["pending"]  # listed before any ran


@pytest.mark.parametrize("given", ["variable", "flag"])
def test_stop_signals_setting(tmp_path: Path, given: str) -> None:
    """Slurm's --signal=USR1@60: USR1 stops the run like SIGTERM does."""
    nb = notebook(tmp_path / "nb.ipynb", "import time\nprint('long', flush=True)\ntime.sleep(60)")
    out = tmp_path / "out"
    if given == "flag":
        run = start_nbjob("run", nb, "--output", out, "--stop-signals", "TERM,USR1")
    else:
        run = start_nbjob("run", nb, "--output", out, env={"NBJOB_STOP_SIGNALS": "TERM,USR1"})
    try:
        assert wait_until(lambda: "long" in _log(out), 60), run.output()
        run.proc.send_signal(signal.SIGUSR1)
        result = run.wait(timeout=10 + MARGIN_S)
    finally:
        run.kill()
    assert result.returncode == 143, result.stderr
    record = read_json(out / "run.json")
    assert record["status"] == "stopped" and "SIGUSR1" in record["reason"]
    assert record["cells"][0]["status"] == "interrupted"
    ended = [e for e in log_events(out) if e["event"] == "cell_end"]
    assert [(e["cell"], e["status"]) for e in ended] == [(0, "interrupted")]


def _cells_listed(out: Path) -> bool:
    try:
        return bool(read_json(out / "run.json")["cells"])
    except (OSError, ValueError, KeyError):
        return False


def _log(out: Path) -> str:
    path = out / "executor.log"
    return path.read_text() if path.exists() else ""


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "gone"


def _gone(pid: int) -> bool:
    return _state(pid) in ("gone", "Z")  # a zombie has ended; only its parent can reap it


def test_sigterm_while_the_results_are_stored(
    tmp_path: Path, s3_server: S3Server, bucket: str, flaky_proxy: Callable[..., FlakyProxy]
) -> None:
    """Storage that keeps failing (and retrying): a stop still ends the run within the grace."""
    proxy = flaky_proxy(fail_first=0)  # the start reads the destination (earlier attempts)
    go = tmp_path / "go"
    wait = (
        f"import os, time\nfor _ in range(600):\n    if os.path.exists({str(go)!r}): break\n"
        "    time.sleep(0.1)"
    )
    nb = notebook(tmp_path / "nb.ipynb", wait + "\nprint('done')")
    work = tmp_path / "work"
    run = start_nbjob(
        "run", nb, "--output", f"s3://{bucket}/out", "--workdir", work, "--stop-grace", "3",
        env=s3_server.env_for(proxy.url),
    )  # fmt: skip
    try:
        assert wait_until(lambda: '"cell_start"' in run.output()[1], 60), run.output()
        proxy.fail_first = 10**6  # from now on every request is answered 503: retries
        go.touch()
        assert wait_until(lambda: '"cell_end"' in run.output()[1], 60), run.output()
        time.sleep(0.5)  # the final write has begun, and keeps retrying
        assert run.running(), run.output()
        sent = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        result = run.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        run.kill()
    assert result.returncode == 143, result.stderr
    assert took < 3 + MARGIN_S
    if s3_server.keys(bucket, "out/run.json"):  # a checkpoint, never the final state
        assert json.loads(s3_server.get(bucket, "out/run.json"))["status"] == "running"
    record = read_json(work / "results" / "run.json")  # the local copy named in the reason
    assert (record["status"], record["exit_code"]) == ("stopped", 143)
    assert record["reason"].startswith("stopped by SIGTERM during the final write")
    assert str(work / "results") in record["reason"]
    assert record["cells"][0]["status"] == "completed"
