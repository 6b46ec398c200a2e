"""The kernel's process tree from ``/proc``: its memory and CPU time, children included.

Deep-learning cells start processes (data-loader workers, DDP's ranks, a compiler): the tree is
the kernel and every process below it, found from the parent pids in ``/proc/*/stat``. Its
memory is the sum of their resident sets; its CPU time their user + system time plus what
their reaped children used (``cutime``/``cstime``), so a worker that ended still counts.

A peak between two samples is not lost for the kernel itself: its ``VmHWM`` (the high-water
mark of its resident set) is reset at each cell's start by writing ``5`` to its
``clear_refs`` (allowed for a process of the same user) and read at each sample.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Tree:
    """One reading of a process tree."""

    pids: int  # processes in it, the root included
    rss_bytes: int  # their resident sets, summed
    cpu_s: float  # their CPU seconds (user + system), with their reaped children's
    peak_bytes: int  # the root's high-water mark since its last reset + the others' RSS
    members: tuple[int, ...] = ()  # their pids, the root first


@dataclass(frozen=True)
class _Stat:
    ppid: int
    cpu_ticks: int
    rss_pages: int


def _stat(pid: int, proc: Path) -> _Stat | None:
    """The fields of ``/proc/PID/stat`` used here (None: the process is gone)."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(b")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    try:
        ppid = int(fields[1])
        utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
        rss = int(fields[21])
    except (IndexError, ValueError):
        return None
    return _Stat(ppid, utime + stime + cutime + cstime, rss)


def _parents(proc: Path) -> dict[int, int]:
    """pid -> parent pid for every process this one can see."""
    found: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(proc):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"{entry.path}/stat", "rb") as f:
                    text = f.read()
            except OSError:
                continue
            with contextlib.suppress(IndexError, ValueError):
                found[int(entry.name)] = int(text[text.rfind(b")") + 2 :].split(b" ", 2)[1])
    return found


def descendants(root: int, proc: Path = PROC) -> list[int]:
    """``root`` and every process below it (its children, theirs, ...)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents(proc).items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def high_water(pid: int, proc: Path = PROC) -> int | None:
    """The process's ``VmHWM`` in bytes (None: unreadable)."""
    try:
        with open(f"{proc}/{pid}/status", "rb") as f:
            text = f.read()
        at = text.find(b"\nVmHWM:")
        return None if at < 0 else int(text[at + 7 : text.find(b"kB", at)]) * 1024
    except (OSError, ValueError):
        return None


def reset_peak(pid: int, proc: Path = PROC) -> bool:
    """Reset the process's ``VmHWM`` to its current RSS (False: not allowed or gone)."""
    try:
        with open(f"{proc}/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def read_tree(root: int, proc: Path = PROC, members: tuple[int, ...] = ()) -> Tree | None:
    """The tree below ``root`` now; None when ``root`` is gone. ``members``: the tree as an
    earlier reading found it, read again without scanning ``/proc`` (a cell's start and end:
    a process started since is seen at the next full reading)."""
    pids = members or descendants(root, proc)
    stats = {pid: s for pid in pids if (s := _stat(pid, proc)) is not None}
    if root not in stats:
        return None
    rss = sum(s.rss_pages for s in stats.values()) * _PAGE
    cpu = sum(s.cpu_ticks for s in stats.values()) / _TICK
    hwm = high_water(root, proc)
    own = stats[root].rss_pages * _PAGE
    peak = rss if hwm is None else max(rss, rss - own + hwm)
    return Tree(len(stats), rss, round(cpu, 2), peak, tuple(stats))
