"""The sampler: a thread reading the kernel's process tree, the memory cgroup and the GPUs.

Every ``interval`` seconds (``--resource-interval``, 1 by default) it takes one ``Sample``: the
kernel's tree (``procs``: memory, CPU seconds, children included), the memory cgroup
(``cgroup``: usage, limit, out-of-memory counters) and each visible GPU (``gpus``). Each sample
updates the running cell's figures (``CellMeter``: the tree's peak memory, CPU seconds, per GPU
its peak memory and mean utilization), the run's peaks, the newest sample and the timeline.
A cell's start and its reply (``cell_replied``: the kernel's ``execute_reply``, before the next
cell is sent early) take one more sample at once, so a short cell has figures too, and the
next cell, already running while this one's last outputs arrive, is not counted in them. Near the
memory limit (``NEAR`` of it) the thread samples every ``NEAR_INTERVAL_S``: the last sample
before an out-of-memory kill is the evidence the next attempt, or the cause of death, cites.

Memory pressure — usage at ``PRESSURE`` of the limit or more, or the group hitting its limit
again (v1 ``failcnt``, v2 ``max`` events) — calls ``on_pressure`` (at most every
``PRESSURE_EVERY_S``): the run checkpoints at once, so a kill of the whole container (cgroup
v2's ``memory.oom.group``, as Kubernetes sets it) loses nothing, its last sample included.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nbjob.resources import procs
from nbjob.resources.cgroup import Memory, MemoryGroup
from nbjob.resources.gpus import Gpu, Nvml
from nbjob.resources.timeline import Timeline

PRESSURE = 0.9  # of the memory limit
PRESSURE_EVERY_S = 5.0
NEAR = 0.75  # of the memory limit: from here on the sampler samples more often ...
NEAR_INTERVAL_S = 0.25  # ... this often (when --resource-interval is longer)


@dataclass(frozen=True)
class Sample:
    """One reading: when, during which cell, and what was used."""

    t: float  # Unix time
    cell: int | None  # the running cell's index
    tree: procs.Tree | None  # None: no local kernel, or it is gone
    memory: Memory | None  # None: no memory cgroup found
    gpus: tuple[Gpu, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A line of resources.jsonl, and run.json's ``resources.last_sample``."""
        data: dict[str, Any] = {"t": round(self.t, 2), "cell": self.cell}
        if self.tree is not None:
            data |= {"rss_bytes": self.tree.rss_bytes, "cpu_s": self.tree.cpu_s,
                     "pids": self.tree.pids}  # fmt: skip
        if self.memory is not None:
            data |= {"memory_bytes": self.memory.usage_bytes,
                     "memory_limit_bytes": self.memory.limit_bytes}  # fmt: skip
        if self.gpus:
            data["gpus"] = [g.to_json() for g in self.gpus]
        return data


@dataclass
class CellMeter:
    """One cell's figures so far."""

    cpu_start: float | None
    peak_rss: int = 0
    cpu_end: float | None = None
    gpu_peak: dict[int, int] = field(default_factory=dict)
    gpu_busy: dict[int, list[int]] = field(default_factory=dict)  # [sum, count] of utilization

    def add(self, sample: Sample) -> None:
        if sample.tree is not None:
            self.peak_rss = max(self.peak_rss, sample.tree.peak_bytes)
            if self.cpu_start is None:
                self.cpu_start = sample.tree.cpu_s
            self.cpu_end = sample.tree.cpu_s
        for g in sample.gpus:
            self.gpu_peak[g.index] = max(self.gpu_peak.get(g.index, 0), g.memory_used_bytes)
            if g.utilization is not None:
                busy = self.gpu_busy.setdefault(g.index, [0, 0])
                busy[0], busy[1] = busy[0] + g.utilization, busy[1] + 1

    def to_json(self) -> dict[str, Any]:
        """run.json's ``resources`` of the cell."""
        cpu = None
        if self.cpu_start is not None and self.cpu_end is not None:
            cpu = round(max(0.0, self.cpu_end - self.cpu_start), 2)
        gpus = []
        for index, peak in sorted(self.gpu_peak.items()):
            total, count = self.gpu_busy.get(index, [0, 0])
            mean = round(total / count, 1) if count else None
            gpus.append({"index": index, "peak_memory_bytes": peak, "mean_utilization": mean})
        return {"peak_rss_bytes": self.peak_rss or None, "cpu_s": cpu, "gpus": gpus}


class Sampler:
    """Samples on a thread of its own (``start``/``stop``); cells are framed by
    ``cell_started``/``cell_ended``. ``pid``: the kernel's (None: a remote kernel)."""

    def __init__(
        self,
        interval: float,
        group: MemoryGroup | None,
        nvml: Nvml | None = None,
        on_sample: Callable[[Sample], None] | None = None,
        on_pressure: Callable[[Sample], None] | None = None,
    ) -> None:
        self.interval, self.group, self.nvml = interval, group, nvml
        self.on_sample, self.on_pressure = on_sample, on_pressure
        self.pid: int | None = None
        self.timeline = Timeline()
        self.last: Sample | None = None
        self.last_alive: Sample | None = None  # the newest sample that found the kernel's tree
        self.peaks: dict[str, Any] = {}
        self.cpu_time = 0.0  # the sampler thread's own CPU seconds (its cost) ...
        self.rounds = 0  # ... over this many samples
        self._cell: int | None = None
        self._meter: CellMeter | None = None  # with _cell None: the cell replied, figures final
        self._peak_reset = False  # the high-water mark was reset at the last reply
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hits: int | None = None
        self._members: tuple[int, ...] = ()  # the tree's pids at the last full reading
        self._gpus: tuple[Gpu, ...] = ()  # the GPUs as last read
        self._pressed_at = -PRESSURE_EVERY_S

    def start(self, pid: int | None) -> None:
        """Sample the tree below ``pid`` from now on, every ``interval`` seconds."""
        self.pid = pid
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="resources", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.nvml is not None:
            self.nvml.close()

    def _loop(self) -> None:
        while not self._stop.wait(self._next_wait()):
            began = time.thread_time()
            with contextlib.suppress(Exception):  # a reading must never end the run
                self.sample()
            self.cpu_time += time.thread_time() - began
            self.rounds += 1

    def _next_wait(self) -> float:
        """The interval; shorter near the memory limit, where the last sample before a kill
        is the evidence that matters."""
        m = self.last.memory if self.last is not None else None
        near = m is not None and m.fraction is not None and m.fraction >= NEAR
        return min(self.interval, NEAR_INTERVAL_S) if near else self.interval

    # -- readings ------------------------------------------------------------------------------

    def read(self, full: bool = True) -> Sample:
        """A reading now, recorded nowhere. Not ``full`` (a cell's start or end, on the run's
        own thread): the tree as last found, without scanning ``/proc``, the cgroup as last
        read, and no GPU."""
        tree = None
        if self.pid is not None:
            tree = procs.read_tree(self.pid, members=() if full else self._members)
            if tree is not None and full:
                self._members = tree.members
        memory = self.group.read() if self.group is not None and full else None
        if not full and self.last is not None:
            memory = self.last.memory  # the cgroup as last read: a cell's figures need none
        gpus = tuple(self.nvml.read()) if self.nvml is not None and full else ()
        return Sample(time.time(), self._cell, tree, memory, gpus)

    def sample(self, full: bool = True) -> Sample:
        """A reading now, added to the cell's figures, the peaks and the timeline."""
        s = self.read(full)
        with self._lock:
            if self._meter is not None and s.cell is not None and s.cell == self._cell:
                self._meter.add(s)
            self._keep(s)
        if full:  # the thread's: a cell's own readings change only the cell's figures
            if self.on_sample is not None:
                self.on_sample(s)
            self._check_pressure(s)
        return s

    def _keep(self, s: Sample) -> None:
        """``s`` in the peaks, as the newest sample and on the timeline (the lock held)."""
        self._peak(s)
        self.last = s
        if s.gpus:
            self._gpus = s.gpus
        if s.tree is not None:
            self.last_alive = s
        self.timeline.add(s.to_json())

    def _peak(self, s: Sample) -> None:
        p = self.peaks
        if s.tree is not None:
            p["rss_bytes"] = max(p.get("rss_bytes", 0), s.tree.peak_bytes)
        if s.memory is not None and s.memory.usage_bytes is not None:
            top = max(s.memory.usage_bytes, s.memory.peak_bytes or 0)
            p["memory_bytes"] = max(p.get("memory_bytes", 0), top)
        for g in s.gpus:
            gpus = p.setdefault("gpus", {})
            gpus[g.index] = max(gpus.get(g.index, 0), g.memory_used_bytes)

    def _check_pressure(self, s: Sample) -> None:
        m = s.memory
        if m is None or self.on_pressure is None:
            return
        hit = self._hits is not None and m.limit_hits is not None and m.limit_hits > self._hits
        self._hits = m.limit_hits
        high = m.fraction is not None and m.fraction >= PRESSURE
        now = time.monotonic()
        if (high or hit) and now - self._pressed_at >= PRESSURE_EVERY_S:
            self._pressed_at = now
            self.on_pressure(s)

    # -- cells ---------------------------------------------------------------------------------

    def cell_started(self, index: int) -> None:
        """A cell begins: its peak starts from here (the kernel's high-water mark reset), or
        from the previous cell's reply when that one reset it (this cell, sent early, may have
        been running since)."""
        if self.interval <= 0:
            return
        if self.pid is not None and not self._peak_reset:
            procs.reset_peak(self.pid)
        self._peak_reset = False
        s = self.read(full=not self._members)
        started = Sample(s.t, index, s.tree, s.memory, s.gpus)
        with self._lock:
            self._cell = index
            self._meter = CellMeter(s.tree.cpu_s if s.tree is not None else None)
            self._meter.add(started)
            self._keep(started)  # the cell's start on the timeline

    def cell_replied(self, index: int) -> None:
        """The cell's code is done (its reply came; the next cell may be sent at once): its
        last reading now, its figures final, the high-water mark reset for the next one."""
        if self.interval <= 0 or self._meter is None or self._cell != index:
            return  # not started, or replied already
        with contextlib.suppress(Exception):
            self.sample(full=False)
        with self._lock:
            self._cell = None  # later samples are not this cell's
        if self.pid is not None:
            self._peak_reset = procs.reset_peak(self.pid)

    def cell_ended(self, index: int) -> dict[str, Any] | None:
        """The cell's figures (``CellMeter.to_json``); one more reading taken first unless it
        replied (a cell timed out, stopped or whose kernel died never did)."""
        if self.interval <= 0 or self._meter is None:
            return None
        if self._cell is not None:  # it did not reply
            with contextlib.suppress(Exception):
                self.sample(full=False)
        with self._lock:
            meter, self._meter, self._cell = self._meter, None, None
        return meter.to_json() if meter is not None else None

    def timeline_bytes(self) -> bytes:
        """resources.jsonl's contents now."""
        with self._lock:
            return self.timeline.to_bytes()

    def summary(self) -> dict[str, Any]:
        """run.json's top-level ``resources``: the limits, peaks, newest sample, interval."""
        with self._lock:
            last = self.last
            peaks = dict(self.peaks)
        limits: dict[str, Any] = {"memory_bytes": None, "gpus": []}
        if last is not None and last.memory is not None:
            limits["memory_bytes"] = last.memory.limit_bytes
        limits["gpus"] = [
            {"index": g.index, "name": g.name, "memory_total_bytes": g.memory_total_bytes}
            for g in self._gpus
        ]
        if "gpus" in peaks:
            peaks["gpus"] = [
                {"index": i, "memory_bytes": b} for i, b in sorted(peaks["gpus"].items())
            ]
        return {
            "interval_s": self.interval,
            "limits": limits,
            "peaks": peaks,
            "last_sample": last.to_json() if last is not None else None,
        }
