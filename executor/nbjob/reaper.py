"""Processes a run leaves behind: found, ended (TERM, a short wait, KILL), reaped and named.

A cell may start processes that outlive its kernel: ``os.system("server &")`` leaves a child
in the kernel's process group; a daemon (double fork + ``setsid``) leaves the group and is
reparented. Under Slurm, Ray or on a bare VM such processes keep GPUs and ports after the job.

Two nets catch them, both without psutil (``/proc`` is read directly; Linux only, nothing to
do elsewhere):

- the kernel's **process group**: ``nbjob.kernel.local`` ends what is left of it (``group``)
  whenever the kernel stops, however the run ended;
- nbjob as a **child subreaper** (``become_subreaper``: ``prctl(PR_SET_CHILD_SUBREAPER)``):
  an orphan below nbjob is reparented to nbjob instead of to PID 1, so at the end of the run
  every process below nbjob that was not there when it began (``Orphans``) is ended, and the
  zombies are reaped (``waitpid``). As PID 1 (a container without an init) nbjob is their
  parent anyway; under tini it is the nearest subreaper, so they come to nbjob, not to tini.

The command line asks for both at its start; ``nbjob.run`` only when asked (``end_orphans``),
as a program that embeds nbjob may have children of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
PR_GET_CHILD_SUBREAPER = 37
TERM_WAIT_S = 2.0  # after SIGTERM, how long processes left behind get before SIGKILL
POLL_S = 0.05
PROC = Path("/proc")


@dataclass(frozen=True)
class Proc:
    """One process as /proc/<pid>/stat shows it; ``start`` (clock ticks after boot) tells a
    process from a later one that got the same pid."""

    pid: int
    ppid: int
    pgid: int
    name: str
    state: str
    start: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.start)

    def label(self) -> str:
        return f"{self.name} ({self.pid})"


def read(pid: int) -> Proc | None:
    """The process ``pid``, or None when it is gone (or there is no /proc)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # "pid (comm) state ppid pgrp ... starttime": comm may hold spaces and parentheses.
    head, _, rest = text.rpartition(")")
    fields = rest.split()
    try:
        name = head.split("(", 1)[1]
        return Proc(pid, int(fields[1]), int(fields[2]), name, fields[0], int(fields[19]))
    except (IndexError, ValueError):
        return None


def processes() -> list[Proc]:
    """Every process this one can see."""
    try:
        pids = [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return []
    return [p for p in map(read, pids) if p is not None]


def descendants(root: int | None = None) -> list[Proc]:
    """The processes below ``root`` (this process by default), parents before children."""
    root = os.getpid() if root is None else root
    children: dict[int, list[Proc]] = {}
    for p in processes():
        children.setdefault(p.ppid, []).append(p)
    found, todo = [], list(children.get(root, []))
    while todo:
        p = todo.pop(0)
        found.append(p)
        todo.extend(children.get(p.pid, []))
    return found


def group(pgid: int) -> list[Proc]:
    """The live processes of process group ``pgid`` (zombies are already ended)."""
    return [p for p in processes() if p.pgid == pgid and p.state != "Z"]


def stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped by a signal (SIGSTOP, SIGTSTP: state T)."""
    p = read(pid)
    return p is not None and p.state == "T"


def _prctl(option: int, arg: Any) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def become_subreaper(on: bool = True) -> bool:
    """Make this process the child subreaper of its descendants (``on=False``: no longer);
    whether that worked (Linux only)."""
    return _prctl(PR_SET_CHILD_SUBREAPER, int(on))


def is_subreaper() -> bool:
    flag = ctypes.c_int(0)
    return _prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag)) and flag.value != 0


def _signal(procs: Iterable[Proc], sig: signal.Signals) -> None:
    for p in procs:
        if (now := read(p.pid)) is not None and now.key == p.key and now.state != "Z":
            with contextlib.suppress(OSError):
                os.kill(p.pid, sig)
            if sig == signal.SIGTERM and now.state == "T":  # a stopped process: let it see it
                with contextlib.suppress(OSError):
                    os.kill(p.pid, signal.SIGCONT)


def _alive(procs: Iterable[Proc]) -> list[Proc]:
    reap(procs)
    return [p for p in procs if (now := read(p.pid)) and now.key == p.key and now.state != "Z"]


def reap(procs: Iterable[Proc]) -> None:
    """Collect the exit status of those of ``procs`` that are this process's children."""
    me = os.getpid()
    for p in procs:
        if p.ppid == me or ((now := read(p.pid)) is not None and now.ppid == me):
            with contextlib.suppress(OSError):
                os.waitpid(p.pid, os.WNOHANG)


def end(procs: list[Proc], wait: float = TERM_WAIT_S) -> tuple[list[Proc], list[Proc]]:
    """SIGTERM to ``procs``, up to ``wait`` seconds, then SIGKILL to the rest; each one reaped
    when it is a child of this process. Returns (ended, of them killed)."""
    if not procs:
        return [], []
    if wait > 0:
        _signal(procs, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while _alive(procs) and time.monotonic() < deadline:
            time.sleep(POLL_S)
    killed = _alive(procs)
    _signal(killed, signal.SIGKILL)
    deadline = time.monotonic() + 1.0  # SIGKILL is not instant: wait for it, to reap
    while _alive(killed) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return procs, killed


class Orphans:
    """The processes below this one at the start of a run; ``left`` is what is below it now
    and was not then (what the run left behind)."""

    def __init__(self) -> None:
        self.was_subreaper = is_subreaper()  # the command line makes itself one at its start
        self.subreaper = become_subreaper()
        self.before = {p.key for p in descendants()}

    def left(self) -> list[Proc]:
        return [p for p in descendants() if p.key not in self.before and p.state != "Z"]

    def end(self, wait: float = TERM_WAIT_S) -> tuple[list[Proc], list[Proc]]:
        """End what the run left below this process (twice: a process may start another as it
        ends), then reap the run's zombies."""
        ended, killed = end(self.left(), wait)
        late, late_killed = end(self.left(), 0.0)
        ended, killed = ended + late, killed + late_killed
        me = os.getpid()
        reap(p for p in processes() if p.ppid == me and p.state == "Z" and p.key not in self.before)
        if self.subreaper and not self.was_subreaper:  # an embedding program: as it was
            become_subreaper(False)
        return ended, killed


def summary(ended: list[Proc], killed: list[Proc]) -> dict[str, object]:
    """The log fields for ``orphans_ended``."""
    return {
        "pids": [p.pid for p in ended],
        "names": [p.name for p in ended],
        "killed": [p.pid for p in killed],
    }
