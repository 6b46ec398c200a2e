"""The run's standard listeners to executor events: the log and the checkpointer.

The third, the run record, is ``record.RunRecord.on_event``. A new consumer of cell events
(MLflow, a progress bar) is one more small class here or in its own module, added to the bus
in ``job.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nbjob import events
from nbjob.record import RunRecord
from nbjob.results import Results


class LogListener:
    """cell_start / stream / cell_end events in executor.log (and on stderr)."""

    def __init__(self, log: Any) -> None:
        self.log = log

    def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.CellOutput):
            self.log.info("stream", cell=event.index, name=event.name, text=event.text)
        elif isinstance(event, events.CellStarted):
            self.log.info("cell_start", cell=event.index)
        elif isinstance(event, events.CellEnded):
            self.log.info(
                "cell_end",
                cell=event.index,
                status=event.status,
                execution_count=event.execution_count,
                duration_s=event.duration_s,
                **({"error": event.error} if event.error else {}),
            )


class Checkpointer:
    """Writes the notebook and run.json when a checkpoint is due (cells start, end, ticks)."""

    def __init__(self, results: Results, notebook: Callable[[], Any], record: RunRecord) -> None:
        self.results = results
        self.notebook = notebook  # the notebook being run (None before it is read)
        self.record = record

    def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.CellOutput, events.CellSkipped)):
            return
        if self.results.due():
            self.results.checkpoint(self.notebook(), self.record.to_json())
