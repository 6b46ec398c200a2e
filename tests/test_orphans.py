"""Processes a run leaves behind are ended with it, however it ends (issue 15, finding 5).

A cell starts a daemon the classic way (fork, ``setsid``, fork again: a ``sleep 300`` in a
session of its own, reparented when its parent exits) and a background job with
``os.system("sleep 300 &")`` (left in the kernel's process group) in a kernel that cannot
import psutil. After the run ends — exit 0, 1, 4 or 143 — neither process is alive, and
executor.log names what nbjob ended (``orphans_ended``). The same holds with nbjob as PID 1 of
a PID namespace, and under an init (a stand-in for tini: PID 1 that is not nbjob), where the
processes left in the namespace after nbjob exits are listed by that init.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from nbjob import reaper
from support import NBJOB, log_events, make_notebook, read_json, start_nbjob, wait_until

PR_GET_CHILD_SUBREAPER = 37  # linux/prctl.h

DAEMONS = """import os, pathlib, sys, time
sys.modules["psutil"] = None  # the kernel cannot import psutil (ipykernel's own child sweep)
pids = pathlib.Path(os.environ["PIDS"])
child = os.fork()
if child == 0:  # the classic daemon: a session of its own, its parent gone
    os.setsid()
    if os.fork() == 0:
        (pids / "daemon").write_text(str(os.getpid()))
        os.execvp("sleep", ["sleep", "300"])
    os._exit(0)
os.waitpid(child, 0)
os.system(f"sleep 300 & echo $! > {pids / 'background'}")
for _ in range(100):
    if (pids / "daemon").exists() and (pids / "background").exists():
        break
    time.sleep(0.05)
for _ in range(1200):  # the test has seen both alive: the run may go on (and end)
    if (pids / "go").exists():
        break
    time.sleep(0.05)
print("started")"""

ENDINGS: dict[int, tuple[list[str], list[str]]] = {
    0: ([DAEMONS, "print('done')"], []),
    1: ([DAEMONS, "raise ValueError('boom')"], []),
    4: ([DAEMONS, "import time; time.sleep(60)"], ["--cell-timeout", "2"]),
    143: ([DAEMONS, "import time; print('waiting', flush=True); time.sleep(60)"], []),
}


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    found = reaper.read(pid)
    return found is not None and found.state != "Z"


def pid_in(path: Path) -> int:
    found = wait_until(lambda: path.exists() and path.read_text().strip(), timeout=60)
    assert found, f"{path} never appeared"
    return int(found)


def orphans_logged(out: Path) -> dict[int, str]:
    """pid -> where, for every process the run's log says nbjob ended."""
    ended: dict[int, str] = {}
    for event in log_events(out):
        if event["event"] == "orphans_ended":
            assert len(event["pids"]) == len(event["names"])
            ended.update(dict.fromkeys(event["pids"], event["where"]))
    return ended


@pytest.mark.parametrize("code", sorted(ENDINGS))
def test_daemons_a_cell_started_end_with_the_run(tmp_path: Path, code: int) -> None:
    cells, flags = ENDINGS[code]
    nb = make_notebook(tmp_path / "nb.ipynb", cells)
    out, pids = tmp_path / "out", tmp_path / "pids"
    pids.mkdir()
    proc = start_nbjob("run", nb, "--output", out, *flags, env={"PIDS": str(pids)})
    daemon, background = pid_in(pids / "daemon"), pid_in(pids / "background")
    try:
        assert alive(daemon) and alive(background)
        (pids / "go").touch()  # only now may the run end (else it could end them first)
        if code == 143:
            assert wait_until(lambda: "waiting" in (out / "nb.ipynb").read_text(), timeout=30)
            os.kill(proc.proc.pid, signal.SIGTERM)
        result = proc.wait(90)
        assert result.returncode == code, result.stderr[-3000:]
        assert read_json(out / "run.json")["exit_code"] == code
        assert wait_until(lambda: not alive(daemon) and not alive(background), timeout=5)
        ended = orphans_logged(out)
        assert ended.get(daemon) == "below nbjob", ended
        assert ended.get(background) in ("the kernel's process group", "below nbjob"), ended
    finally:
        for pid in (daemon, background):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


STUBBORN = """import os, pathlib, signal, subprocess, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # like a collective stuck in C++
child = subprocess.Popen(["sh", "-c", "trap '' TERM INT; while :; do sleep 1; done"])
pathlib.Path(os.environ["PIDS"], "stubborn").write_text(str(child.pid))
print("stubborn", flush=True)
while True:
    time.sleep(0.1)"""


def test_a_timed_out_kernel_that_ignores_the_interrupt_is_killed_after_5_s(tmp_path: Path) -> None:
    """--cell-timeout 2 on a cell that ignores SIGINT, with a child that ignores SIGTERM: the
    kernel is killed 5 s after the interrupt (exit 4), and the child with its group."""
    nb = make_notebook(tmp_path / "nb.ipynb", [STUBBORN])
    out, pids = tmp_path / "out", tmp_path / "pids"
    pids.mkdir()
    proc = start_nbjob("run", nb, "--output", out, "--cell-timeout", "2", env={"PIDS": str(pids)})
    child = pid_in(pids / "stubborn")
    started = time.monotonic()
    try:
        result = proc.wait(60)
        took = time.monotonic() - started
        assert result.returncode == 4, result.stderr[-3000:]
        assert 2 + 5 <= took + 0.5 < 2 + 5 + 6, took  # the limit, the 5 s wind-down, the end
        assert read_json(out / "run.json")["cells"][0]["status"] == "timed_out"
        assert wait_until(lambda: not alive(child), timeout=5)
        ended = orphans_logged(out)
        assert ended.get(child) == "the kernel's process group", ended
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


INIT = """import os, subprocess, sys
code = subprocess.call(sys.argv[1:])
me = os.getpid()
left = [
    open(f"/proc/{p}/comm").read().strip()
    for p in os.listdir("/proc")
    if p.isdigit() and int(p) != me
]
print("left:", ",".join(left))
sys.exit(code)"""


def _namespaced(init: str) -> list[str]:
    """The command that starts nbjob in a new PID namespace, as PID 1 or under ``init``."""
    prefix = ["unshare", "--pid", "--fork", "--mount-proc"]
    if init == "none":
        return prefix
    if init == "tini":
        return [*prefix, shutil.which("tini") or "tini", "--"]
    return [*prefix, sys.executable, "-c", INIT]


def _can_unshare() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


@pytest.mark.skipif(not _can_unshare(), reason="a PID namespace needs root and unshare(1)")
@pytest.mark.parametrize("init", ["none", "stand-in", "tini"])
def test_as_pid_1_and_under_an_init(tmp_path: Path, init: str) -> None:
    if init == "tini" and shutil.which("tini") is None:
        pytest.skip("tini is not installed here (the images have it)")
    import subprocess

    nb = make_notebook(tmp_path / "nb.ipynb", [DAEMONS, "print('done')"])
    out, pids = tmp_path / "out", tmp_path / "pids"
    pids.mkdir()
    (pids / "go").touch()  # nothing to look at before the run ends
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("NBJOB_")}
    env.update(PIDS=str(pids), NBJOB_LOG_FORMAT="json")
    argv = [*_namespaced(init), NBJOB, "run", str(nb), "--output", str(out)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    names = {n for e in log_events(out) if e["event"] == "orphans_ended" for n in e["names"]}
    assert "sleep" in names  # both sleeps: the daemon and the background job
    ended = [e for e in log_events(out) if e["event"] == "orphans_ended"]
    assert any(e["where"] == "below nbjob" for e in ended), ended  # the daemon came to nbjob
    if init == "stand-in":  # what was left in the namespace once nbjob had exited
        left = next(line for line in done.stdout.splitlines() if line.startswith("left:"))
        assert "sleep" not in left, left


def test_proc_reading() -> None:
    """This process as /proc shows it; a pid above any pid_max is no process."""
    me = reaper.read(os.getpid())
    assert me is not None and me.pid == os.getpid() and me.ppid == os.getppid()
    assert me.pgid == os.getpgrp() and me.state in "RS"
    assert me.name == Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert reaper.read(2**22 + 1) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux prctl")
def test_subreaper_flag_is_set() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    flag = ctypes.c_int(0)
    assert not reaper.is_subreaper()
    try:
        assert reaper.become_subreaper() and reaper.is_subreaper()
        assert libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0
        assert flag.value == 1
    finally:  # pytest itself must not stay the subreaper of later tests' orphans
        libc.prctl(reaper.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    assert not reaper.is_subreaper()


@pytest.mark.parametrize("asked", [True, False])
def test_embedding_ends_orphans_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asked: bool
) -> None:
    """``nbjob.run(settings, end_orphans=True)``: the daemon is ended too, and this process is
    no subreaper afterwards; without it only the kernel's process group is ended."""
    import nbjob

    nb = make_notebook(tmp_path / "nb.ipynb", [DAEMONS, "print('done')"])
    pids = tmp_path / "pids"
    pids.mkdir()
    (pids / "go").touch()  # the test looks only after the run
    monkeypatch.setenv("PIDS", str(pids))
    settings = nbjob.resolve({"source": str(nb), "output": str(tmp_path / "out")}, {})
    daemon = background = 0
    try:
        assert nbjob.run(settings, end_orphans=asked) == 0
        daemon, background = pid_in(pids / "daemon"), pid_in(pids / "background")
        assert wait_until(lambda: not alive(background), timeout=5)
        if asked:
            assert wait_until(lambda: not alive(daemon), timeout=5)
        else:
            assert alive(daemon)  # reparented elsewhere: the program's to handle
        assert not reaper.is_subreaper()
    finally:
        for pid in (daemon, background):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)
