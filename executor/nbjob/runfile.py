"""One typed reader of a run.json: what an earlier attempt, a peer rank or a watcher sees.

``RunRecord`` (``nbjob.record``) writes run.json; everything that reads one back (the earlier
attempt at the start, rank 0 gathering its peers, a rank watching them, ``nbjob watch``) reads
it through ``RunView``: the status as a ``RunStatus`` (``UNREADABLE`` for bytes that are not a
run.json, or a file that could not be read), whether the run is over, its exit code, reason,
failed cell, attempt, run id, notebook and report names and identity. ``data`` keeps the whole
mapping as it was read, for what is copied on as is.

A long notebook's run.json mid-run lists only its unfinished cells, the finished ones being in
segments (``nbjob.cellsegments``): ``read`` and ``peek`` join them into ``cells`` as the final
run.json lists them (pending cells only counted: ``cells_total``), so a reader sees one shape;
``CellFollower`` does so reading only the segments that are new since its last call (``nbjob
watch``). A segment not there yet (a write failed) leaves the cells after it out until later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nbjob import cellsegments
from nbjob.errors import StorageError
from nbjob.events import RunStatus
from nbjob.layout import RUN_JSON, Destination
from nbjob.storage import Storage


@dataclass(frozen=True)
class RunView:
    """A run.json as read: typed accessors over the mapping (``data``, empty if unreadable)."""

    status: RunStatus
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, data: dict[str, Any]) -> RunView:
        """The view of a run.json mapping (a status nbjob does not know: unreadable)."""
        try:
            status = RunStatus(data.get("status"))
        except ValueError:
            status = RunStatus.UNREADABLE
        return cls(status, data)

    @classmethod
    def unreadable(cls) -> RunView:
        return cls(RunStatus.UNREADABLE)

    @property
    def readable(self) -> bool:
        return self.status is not RunStatus.UNREADABLE

    @property
    def final(self) -> bool:
        """The run is over (its status is one of the endings, not running or unreadable)."""
        return self.status.final

    @property
    def failed(self) -> bool:
        """The run ended with a non-zero exit code."""
        return bool(self.exit_code)

    @property
    def exit_code(self) -> int | None:
        value = self.data.get("exit_code")
        return value if isinstance(value, int) else None

    @property
    def reason(self) -> str | None:
        return _text(self.data.get("reason"))

    @property
    def run_id(self) -> str | None:
        return _text(self.data.get("run_id"))

    @property
    def attempt(self) -> int:
        """The attempt's number (1 when the record has none)."""
        value = self.data.get("attempt")
        return value if isinstance(value, int) and value >= 1 else 1

    @property
    def failed_cell(self) -> int | None:
        """The index of the cell the run failed in, if any."""
        cell = self.data.get("failed_cell")
        index = cell.get("index") if isinstance(cell, dict) else None
        return index if isinstance(index, int) else None

    @property
    def notebook(self) -> str | None:
        return _text(self.data.get("notebook"))

    @property
    def report(self) -> str | None:
        """The HTML report's name, when the run wrote one."""
        report = self.data.get("report")
        return _text(report.get("name")) if isinstance(report, dict) else None

    @property
    def identity(self) -> dict[str, Any]:
        value = self.data.get("identity")
        return value if isinstance(value, dict) else {}

    @property
    def started_at(self) -> str | None:
        return _text(self.data.get("started_at"))

    @property
    def ended_at(self) -> str | None:
        return _text(self.data.get("ended_at"))

    @property
    def earlier_attempts(self) -> list[dict[str, Any]]:
        return [e for e in self.data.get("earlier_attempts") or [] if isinstance(e, dict)]

    def cells(self) -> list[dict[str, Any]]:
        return [c for c in self.data.get("cells") or [] if isinstance(c, dict)]

    @property
    def cells_total(self) -> int:
        """How many code cells the run has (mid-run, pending ones are counted, not listed)."""
        counts = self.data.get(cellsegments.COUNTS)
        total = counts.get("total") if isinstance(counts, dict) else None
        return total if isinstance(total, int) else len(self.cells())

    @property
    def cells_stored(self) -> int | None:
        """How many finished cells are in segments, not in ``cells`` (None: none are)."""
        return cellsegments.stored(self.data)

    def with_stored(self, stored: list[dict[str, Any]]) -> RunView:
        """This view with the segments' cells (``stored``) joined before its own, as a final
        run.json lists them (``cells_stored`` gone: what is copied on is whole)."""
        if self.cells_stored is None:
            return self
        data = {k: v for k, v in self.data.items() if k != cellsegments.STORED}
        data["cells"] = [*stored, *self.cells()]
        return RunView(self.status, data)

    def get(self, key: str) -> Any:
        return self.data.get(key)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse(data: bytes) -> RunView:
    """run.json's bytes -> its view (``UNREADABLE`` when they are not a JSON object)."""
    try:
        record = json.loads(data)
    except ValueError:
        return RunView.unreadable()
    return RunView.of(record) if isinstance(record, dict) else RunView.unreadable()


def read(storage: Storage, url: str, cells: bool = True) -> RunView | None:
    """The run.json at ``url``; None when there is none. Storage errors raise. Mid-run, with
    its finished cells from their segments (``cells``: False, without: only the running)."""
    data = storage.get_bytes(url)
    if data is None:
        return None
    view = parse(data)
    return CellFollower(storage, _folder(url)).whole(view) if cells else view


def _folder(url: str) -> Destination:
    """The folder of a run.json's URL."""
    return Destination(url[: -len(RUN_JSON)].rstrip("/") if url.endswith(RUN_JSON) else url)


class CellFollower:
    """Joins a mid-run run.json's stored cells to it, reading only the segments it has not
    read yet (one GET per new segment; none when no cell finished)."""

    def __init__(self, storage: Storage, dest: Destination) -> None:
        self.storage, self.dest = storage, dest
        self.attempt = 0
        self.stored: list[dict[str, Any]] = []  # the cells read from segments, in order
        self.next = 0  # the next segment's first position

    def whole(self, view: RunView) -> RunView:
        """``view`` with every finished cell (itself when it has no segments)."""
        count = view.cells_stored
        if count is None:
            return view
        if view.attempt != self.attempt or count < self.next:  # another attempt or folder
            self.attempt, self.stored, self.next = view.attempt, [], 0
        if count > self.next:
            new, self.next = cellsegments.read_new(
                self.storage, self.dest, view.attempt, self.next, count
            )
            self.stored.extend(new)
        return view.with_stored(self.stored)


def peek(storage: Storage, url: str, cells: bool = True) -> RunView | None:
    """``read``, with a storage error as ``UNREADABLE`` (for looking at a peer's run.json)."""
    try:
        return read(storage, url, cells)
    except (StorageError, OSError):
        return RunView.unreadable()
