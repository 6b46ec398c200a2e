"""The checkpointer: the notebook and run.json written while the run goes, when one is due."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nbjob import events
from nbjob.record import RunRecord
from nbjob.results import Results

_CHANCES = (
    events.CellsListed,
    events.CellStarted,
    events.CellMetric,
    events.CellEnded,
    events.Tick,
)


class Checkpointer:
    """Writes the notebook and run.json when a checkpoint is due (cells start, end, ticks)."""

    def __init__(self, results: Results, notebook: Callable[[], Any], record: RunRecord) -> None:
        self.results = results
        self.notebook = notebook  # the notebook being run (None before it is read)
        self.record = record

    def on_event(self, event: events.Event) -> None:
        if isinstance(event, _CHANCES) and self.results.due():
            self.results.checkpoint(self.notebook(), self.record)  # cut: nbjob.cellsegments
