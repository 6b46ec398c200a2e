"""Finished cells' states during the run, in append-only segments written once.

run.json is rewritten at every checkpoint (the heartbeat, every ~2 s). Listing every cell in it
made each checkpoint cost the whole cell list: on a run of hundreds of thousands of cells,
hundreds of MB rewritten every few minutes. So, during the run of a notebook with more than
``INLINE_MAX`` code cells, each finished cell's state is stored **once**, as a JSON line in a
segment (``layout.Destination.cell_segment``): ``cells/<attempt>/<first>.jsonl``, where
``first`` is the position (0-based, 9 digits) of its first cell among the run's code cells, in
order. A checkpoint with newly finished cells writes at most one new segment, of at most
``SEGMENT_MAX`` bytes (what is left goes in the next); a segment is never rewritten.

run.json mid-run then holds (``Segments.cut``) everything it holds at the end except the whole
cell list: ``cells`` holds only the cells after the stored ones that are not pending (the
running cell, and finished cells not in a segment yet); ``cells_stored`` says how many cells
are in the segments and where (``{"count": n, "place": "cells/<attempt>/"}``); ``cell_counts``
counts the cells by status (and ``total``). Pending cells are only counted. A notebook with at
most ``INLINE_MAX`` code cells keeps run.json as before (every cell in it, at most tens of KB),
and the final run.json, whatever the ending, lists every cell, as before: ``cells_stored`` is
never in it. The segments are kept after the end (as the log's; a store's lifecycle rule can
expire ``cells/``).

Readers: ``read_new(storage, dest, attempt, after, upto)`` reads the segments from position
``after`` up to ``upto`` (the next segment's name follows from the lines read, as the live log's
offsets do: one GET per segment, no listing); ``runfile`` joins them with run.json's ``cells``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from nbjob import logs
from nbjob.events import CellStatus
from nbjob.layout import CELL_SEGMENTS, Destination
from nbjob.storage import Storage

if TYPE_CHECKING:
    from nbjob.events import CellState
    from nbjob.record import RunRecord

__all__ = ["INLINE_MAX", "SEGMENT_MAX", "Segment", "Segments", "read_new", "stored"]

INLINE_MAX = 100  # code cells: a notebook with no more keeps every cell in run.json mid-run
SEGMENT_MAX = 4 * 1024 * 1024  # bytes of one segment, at most (a first cell always goes in)
STORED = "cells_stored"  # run.json's key, mid-run only: how many cells are in segments, where
COUNTS = "cell_counts"  # run.json's key, mid-run only: the cells by status, and their total
_WAITING = (CellStatus.PENDING, CellStatus.RUNNING)
_KIND = "application/x-ndjson"

Segment = tuple[str, bytes]  # a segment's URL and its bytes


class Segments:
    """Cuts the run's record at each checkpoint into run.json's mapping and a new segment.

    Called on the thread that serializes checkpoints; the segment must be stored before the
    run.json that counts it (``Results`` does). A new folder or attempt starts again at
    position 0 (``Results.move_to``, a later attempt's number)."""

    def __init__(self) -> None:
        self._where: tuple[str, int] | None = None
        self.count = 0  # cells (a prefix of the run's, in order) put in segments there
        self.counts: Counter[str] = Counter()  # those cells by status
        self.errors: list[dict[str, Any]] = []  # those that raised: run.json's ``errors``

    def cut(
        self, record: RunRecord, dest: Destination, attempt: int
    ) -> tuple[dict[str, Any], Segment | None]:
        """run.json's mapping now, and the segment to store before it (None: none new)."""
        if record.status.final or len(record.cells) <= INLINE_MAX:
            return record.to_json(), None
        if self._where != (dest.url, attempt):
            self._where, self.count, self.counts = (dest.url, attempt), 0, Counter()
            self.errors = []
        later = islice(record.cells.values(), self.count, None)
        new, lines = _finished(record, later, self.counts, self.errors)
        segment = None
        if new:
            segment = (dest.cell_segment(attempt, self.count), lines)
            self.count += new
        live, counts = self._rest(record)
        done = counts["total"] - counts.get("pending", 0) - counts.get("running", 0)
        running = next((c.index for c in live if c.status is CellStatus.RUNNING), None)
        errors = self.errors + [_error(c) for c in live if _raised(c)]
        data = record.to_json(live, (done, running), errors)
        return _mid_run(data, self.count, attempt, counts), segment

    def _rest(self, record: RunRecord) -> tuple[list[CellState], dict[str, int]]:
        """The cells after the stored ones to list (at most ``INLINE_MAX``; more, on a
        folder's first cut: in the next ones), and every cell's count by status. The executor
        runs the cells in order: from the first pending one on, all are pending, and are
        counted, not read (a checkpoint costs the cells that changed, not the notebook's)."""
        counts = Counter(self.counts)
        live: list[CellState] = []
        seen = self.count
        for cell in islice(record.cells.values(), self.count, None):
            if cell.status is CellStatus.PENDING:
                break
            seen += 1
            counts[str(cell.status)] += 1
            if len(live) < INLINE_MAX:
                live.append(cell)
        if len(record.cells) > seen:
            counts[str(CellStatus.PENDING)] += len(record.cells) - seen
        return live, {"total": len(record.cells), **dict(sorted(counts.items()))}


def _finished(
    record: RunRecord, cells: Iterator[CellState], counts: Counter[str], errors: list[Any]
) -> tuple[int, bytes]:
    """The finished cells at the start of ``cells`` (at most ``SEGMENT_MAX`` bytes): how many,
    and their JSON lines, scrubbed as run.json is; ``counts`` counts them by status, ``errors``
    gets those that raised (as ``RunRecord.errors`` lists them)."""
    lines: list[bytes] = []
    size = 0
    for cell in cells:
        if cell.status in _WAITING:
            break
        line = logs.redacted_json(record.cell_json(cell), default=str).encode()
        if lines and size + len(line) + 1 > SEGMENT_MAX:
            break
        lines.append(line + b"\n")
        size += len(line) + 1
        counts[str(cell.status)] += 1
        if _raised(cell):
            errors.append(_error(cell))
    return len(lines), b"".join(lines)


def _raised(cell: CellState) -> bool:
    return cell.status is CellStatus.FAILED and bool(cell.error)


def _error(cell: CellState) -> dict[str, Any]:
    """A cell that raised, as run.json's ``errors`` lists it (``RunRecord.errors``)."""
    return {"index": cell.index, "execution_count": cell.execution_count, **(cell.error or {})}


def _mid_run(
    data: dict[str, Any], count: int, attempt: int, counts: dict[str, int]
) -> dict[str, Any]:
    """run.json's mapping with the stored cells' count and place, and the counts by status,
    right after ``cells``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        out[key] = value
        if key == "cells":
            out[STORED] = {"count": count, "place": f"{CELL_SEGMENTS}/{attempt}/"}
            out[COUNTS] = counts
    return out


def stored(data: dict[str, Any]) -> int | None:
    """How many cells a mid-run run.json's segments hold (None: every cell is in it)."""
    marker = data.get(STORED)
    count = marker.get("count") if isinstance(marker, dict) else None
    return count if isinstance(count, int) and count >= 0 else None


def read_new(
    storage: Storage, dest: Destination, attempt: int, after: int, upto: int
) -> tuple[list[dict[str, Any]], int]:
    """The cells stored in segments from position ``after`` (a segment's first, or 0) up to
    ``upto``, and the position to ask next: one GET per segment; a segment not there (not
    stored yet) ends the reading. Lines that are not JSON objects are skipped."""
    cells: list[dict[str, Any]] = []
    position = after
    while position < upto:
        data = storage.get_bytes(dest.cell_segment(attempt, position))
        if not data:
            break
        lines = data.splitlines()
        for line in lines:
            try:
                cell = json.loads(line)
            except ValueError:
                continue
            if isinstance(cell, dict):
                cells.append(cell)
        position += len(lines)
    return cells, position


def store(storage: Storage, segment: Segment) -> None:
    """Write one segment (once)."""
    storage.put_bytes(segment[0], segment[1], _KIND)
