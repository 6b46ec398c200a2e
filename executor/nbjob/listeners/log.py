"""The log's listener: cell starts, stream text, metrics and cell ends in executor.log."""

from __future__ import annotations

import time
from typing import Any

from nbjob import events
from nbjob.outputs import LineFolder

PROGRESS_EVERY_S = 5.0  # a line only being rewritten (\r, \b) is logged at most this often

# A cell's end at the level log collectors alert on: a cell that failed (raised, timed out, lost
# its kernel) at ``error``; one interrupted by a stop at ``warning``; the others at ``info``.
_CELL_LEVELS = {
    events.CellStatus.FAILED: "error",
    events.CellStatus.TIMED_OUT: "error",
    events.CellStatus.KERNEL_DIED: "error",
    events.CellStatus.INTERRUPTED: "warning",
}


def cell_level(status: events.CellStatus | str) -> str:
    """The log level of a ``cell_end`` with ``status``."""
    return _CELL_LEVELS.get(events.CellStatus(status), "info")


class LogListener:
    """cell_start / stream / cell_end events in executor.log (and on stderr).

    Stream text is folded as the notebook folds it (``outputs.LineFolder``): a ``stream`` event
    holds only completed lines (those one message completed: one event per line would cost
    minutes for a cell printing a million lines); a line that is only being rewritten (a
    progress bar) is logged as ``stream`` with ``partial: true`` at most every
    ``PROGRESS_EVERY_S`` seconds (its latest state), and its final state always (when it
    completes, or when the cell ends).
    """

    def __init__(self, log: Any, progress_every: float = PROGRESS_EVERY_S) -> None:
        self.log = log
        self.progress_every = progress_every
        self._lines: dict[tuple[int, str], LineFolder] = {}
        self._logged: dict[tuple[int, str], tuple[float, str]] = {}  # last partial: when, what

    def _stream(self, event: events.CellOutput) -> None:
        key = (event.index, event.name)
        folder = self._lines.get(key)
        if folder is None:
            folder = self._lines[key] = LineFolder()
        lines = folder.feed(event.text)
        if lines:  # the completed lines of one message: one event (an event costs ~0.4 ms)
            self._logged.pop(key, None)
            self.log.info("stream", cell=event.index, name=event.name, text="".join(lines))
        if folder.line:
            now = time.monotonic()
            when, _ = self._logged.setdefault(key, (now, ""))
            if now - when >= self.progress_every:
                self._partial(key, folder.line, now)

    def _partial(self, key: tuple[int, str], line: str, now: float) -> None:
        self._logged[key] = (now, line)
        self.log.info("stream", cell=key[0], name=key[1], text=line, partial=True)

    def _flush(self, index: int) -> None:
        """The cell ended: the final state of each line still being written."""
        for key in [k for k in self._lines if k[0] == index]:
            folder = self._lines.pop(key)
            self._logged.pop(key, None)
            if folder.line:
                self.log.info("stream", cell=index, name=key[1], text=folder.line)

    def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.CellOutput):
            self._stream(event)
        elif isinstance(event, events.CellStarted):
            self.log.info("cell_start", cell=event.index)
        elif isinstance(event, events.CellMetric):
            self.log.info("metric", cell=event.index, name=event.name, value=event.value)
        elif isinstance(event, events.CellEnded):
            self._ended(event.state)

    def _ended(self, cell: events.CellState) -> None:
        self._flush(cell.index)
        if cell.warning:
            self.log.warning("cell_warning", cell=cell.index, warning=cell.warning)
        log = getattr(self.log, cell_level(cell.status))
        log(
            "cell_end",
            cell=cell.index,
            status=str(cell.status),
            execution_count=cell.execution_count,
            duration_s=cell.duration_s,
            **({"error": cell.error} if cell.error else {}),
        )
