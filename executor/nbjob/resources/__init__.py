"""What a run used — memory, CPU, GPUs — per cell and over time, and why a kernel died.

``Resources`` is the run's one object for it: a listener on the cell events (the cell's figures
end at its reply, ``cell_replied``, and go to the record when it ends) around a
``sampler.Sampler`` thread started when the kernel is ready (``start``) and stopped at the end
(``end``, a step of ``nbjob.finish``, which also explains a dead kernel from evidence:
``death``). The readings are ``procs`` (the kernel's process tree), ``cgroup`` (the memory
cgroup) and ``gpus`` (NVML); the samples over time are ``timeline``'s, stored as
``resources.jsonl`` with each checkpoint. Memory pressure asks the results for a checkpoint at
once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

from nbjob import events
from nbjob.errors import CellExecutionError, DeadKernelError, NbjobError, cell_name
from nbjob.resources import death
from nbjob.resources.cgroup import Memory, MemoryGroup
from nbjob.resources.gpus import Nvml
from nbjob.resources.sampler import Sample, Sampler

__all__ = ["Memory", "MemoryGroup", "Resources", "Sample", "Sampler"]

REMOTE = "not sampled: the kernel runs on another machine (its server's)"


class _Kernel(Protocol):
    def process_id(self) -> int | None: ...


class _Record(Protocol):
    resources: dict[str, Any] | None
    cell_resources: dict[int, dict[str, Any]]


class Resources:
    """The run's sampler, its figures in ``record`` and its pressure signal (``hurry``)."""

    def __init__(
        self,
        interval: float,
        record: _Record,
        hurry: Callable[[], None] | None = None,
        log: Any = None,
        group: MemoryGroup | None = None,
    ) -> None:
        self.record, self.hurry, self.log = record, hurry, log
        self.group = group if group is not None else MemoryGroup.find()
        self.before = self.group.read() if self.group is not None else None  # the counter now
        self.note: str | None = None
        self.sampler = Sampler(
            interval, self.group, on_sample=self._sampled, on_pressure=self._pressed
        )

    @property
    def on(self) -> bool:
        return self.sampler.interval > 0

    def start(self, kernel: _Kernel, nvml: Nvml | None = None) -> None:
        """Sample ``kernel`` (its process tree when it is local) from now on."""
        if not self.on:
            return
        pid = kernel.process_id()
        if pid is None:
            self.note = REMOTE
        self.sampler.nvml = nvml if nvml is not None else Nvml.open(os.environ)
        self.sampler.start(pid)
        self.sampler.sample()  # the limits and a first reading in run.json at once

    def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.CellStarted):
            self.sampler.cell_started(event.index)
        elif isinstance(event, events.CellEnded):
            figures = self.sampler.cell_ended(event.index)
            if figures is not None:
                self.record.cell_resources[event.index] = figures

    def cell_replied(self, index: int) -> None:
        """The cell's reply came (``Executor``'s ``on_reply``): its figures end here, before
        the next cell, sent early, runs."""
        self.sampler.cell_replied(index)

    def _sampled(self, _: Sample) -> None:
        summary = self.sampler.summary()
        if self.note:
            summary["kernel_tree"] = self.note
        self.record.resources = summary  # one assignment: a checkpoint sees old or new

    def _pressed(self, sample: Sample) -> None:
        m = sample.memory
        if self.log is not None and m is not None:
            self.log.warning(
                "memory_pressure",
                memory_bytes=m.usage_bytes,
                limit_bytes=m.limit_bytes,
                cell=sample.cell,
            )
        if self.hurry is not None:
            self.hurry()

    def timeline(self) -> bytes:
        """resources.jsonl's contents (empty: nothing sampled)."""
        return self.sampler.timeline_bytes()

    def end(
        self, error: NbjobError | None, cells: dict[int, Any] | None = None
    ) -> NbjobError | None:
        """Stop sampling; ``error`` with its cause when evidence shows one (a SIGKILLed
        kernel: the out-of-memory counter; a GPU out-of-memory exception: the GPU's peak)."""
        self.sampler.stop()
        if self.on and self.sampler.last is not None:
            self._sampled(self.sampler.last)
        if isinstance(error, DeadKernelError):
            now = self.group.read() if self.group is not None else None
            last = self.sampler.last_alive or self.sampler.last
            where = None
            if last is not None and last.cell is not None:
                state = (cells or {}).get(last.cell)
                where = cell_name(last.cell, getattr(state, "execution_count", None))
            data = last.to_json() if last is not None else None
            return death.explain_death(error, self.before, now, data, where)
        if isinstance(error, CellExecutionError):
            index = error.details.get("cell_index")
            figures = self.record.cell_resources.get(index) if isinstance(index, int) else None
            return death.explain_gpu(error, figures)
        return error
