"""The live log: executor.log stored as it grows, in append-only segments written once.

A remote destination gets the log during the run as segments (``layout.Destination.
log_segment``): ``log/<attempt>/<offset>.log``, where ``offset`` is where the segment's first
byte is in the whole log (15 digits). Each checkpoint uploads only what the local log gained
since the last one (``Shipper.ship``), cut after its last whole line, at most ``SEGMENT_MAX``
bytes per segment: over a run the segments hold each byte of the log once. executor.log itself
is stored whole at the end (and after a SIGKILL, the next attempt rebuilds it from the segments
when it keeps the earlier attempt: ``whole``). The segments are kept after the end: removing
them would cost one request per segment inside a stop's grace; a store's lifecycle rule can
expire ``log/``.

A follower (``nbjob watch``) reads only what is new with ``read_new(storage, dest, attempt,
after)``: ``after`` is the byte offset it has read up to, and the next segment's name follows
from it, so a poll with nothing new is one GET answered "not found", and a poll with new bytes
costs one GET per new segment plus that one, downloading only the new bytes. A follower that
wants only the newest lines of a long log starts at ``near_end`` (one listing of the attempt's
segments: a request per 1,000 segments, once). A local
destination holds executor.log itself, written as the run goes: ``read_new`` reads it from
``after``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from nbjob.layout import LOG_SEGMENTS, Destination
from nbjob.storage import Storage

__all__ = ["SEGMENT_MAX", "Shipper", "near_end", "read_new", "whole"]

SEGMENT_MAX = 8 * 1024 * 1024  # bytes in one segment, at most (one PUT, never multipart)
READ_MAX = 64 * 1024 * 1024  # what one read_new returns, at most (the rest: the next call)
_KIND = "text/plain; charset=utf-8"


class Shipper:
    """Uploads what a local log file gained since the last ``ship``, as new segments."""

    def __init__(self, storage: Storage, path: Path) -> None:
        self.storage = storage
        self.path = path
        self._where: tuple[str, int] | None = None  # the folder and attempt shipped to
        self.offset = 0  # bytes of the log stored as segments there
        self._lock = threading.Lock()  # the checkpoints' thread and the final write

    def ship(self, dest: Destination, attempt: int) -> int:
        """Store the log's new whole lines at ``dest`` (attempt ``attempt``): bytes stored.
        A new folder or attempt starts again at offset 0 (``Results.move_to``)."""
        with self._lock:
            return self._ship(dest, attempt)

    def ships_to(self, dest: Destination, attempt: int) -> bool:
        """Whether segments were stored at ``dest`` for ``attempt`` (the end adds to them)."""
        return self._where == (dest.url, attempt) and self.offset > 0

    def _ship(self, dest: Destination, attempt: int) -> int:
        if self._where != (dest.url, attempt):
            self._where, self.offset = (dest.url, attempt), 0
        stored = 0
        while data := self._next_piece():
            self.storage.put_bytes(dest.log_segment(attempt, self.offset), data, _KIND)
            self.offset += len(data)
            stored += len(data)
        return stored

    def _next_piece(self) -> bytes:
        """The log's next bytes after ``offset``, up to its last newline (a whole segment)."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read(SEGMENT_MAX)
        except OSError:
            return b""
        if len(data) == SEGMENT_MAX and b"\n" not in data:
            return data  # one line longer than a segment: split, the reader joins them
        return data[: data.rfind(b"\n") + 1]


def read_new(
    storage: Storage, dest: Destination, attempt: int, after: int = 0
) -> tuple[bytes, int]:
    """The log's bytes after offset ``after`` stored so far, and the offset to ask next.

    Remote: the segments from ``after`` on, one GET each, until one is not there (at most
    ``READ_MAX`` bytes a call). Local: executor.log from ``after``. ``after`` must be an offset
    this function returned (or 0): a segment starts exactly there."""
    if dest.is_local:
        return _read_local(dest.path / "executor.log", after)
    chunks: list[bytes] = []
    offset = after
    while offset - after < READ_MAX:
        data = storage.get_bytes(dest.log_segment(attempt, offset))
        if not data:
            break
        chunks.append(data)
        offset += len(data)
    return b"".join(chunks), offset


def _read_local(path: Path, after: int) -> tuple[bytes, int]:
    try:
        with path.open("rb") as f:
            if os.fstat(f.fileno()).st_size < after:
                return b"", after  # a new attempt truncated it: the caller starts again
            f.seek(after)
            data = f.read(READ_MAX)
    except OSError:
        return b"", after
    data = data[: data.rfind(b"\n") + 1]  # whole lines: the last one may be being written
    return data, after + len(data)


def near_end(storage: Storage, dest: Destination, attempt: int, keep: int = 65536) -> int:
    """An offset for ``read_new`` from which about the last ``keep`` bytes stored are read
    (the start of a segment; a local executor.log: the start of a line)."""
    if dest.is_local:
        return _line_start(dest.path / "executor.log", keep)
    starts = sorted(
        int(name.removesuffix(".log"))
        for name in storage.list_names(dest.file(f"{LOG_SEGMENTS}/{attempt}"))
        if name.endswith(".log") and name.removesuffix(".log").isdigit()
    )
    if not starts:
        return 0
    return next(s for s in starts if starts[-1] - s <= keep)


def _line_start(path: Path, keep: int) -> int:
    try:
        with path.open("rb") as f:
            start = max(0, os.fstat(f.fileno()).st_size - keep)
            if start == 0:
                return 0
            f.seek(start - 1)
            newline = f.read(keep + 1).find(b"\n")
    except OSError:
        return 0
    return start + newline if newline >= 0 else 0  # just after a newline; one long line: 0


def whole(storage: Storage, dest: Destination, attempt: int, stored: bytes | None) -> bytes | None:
    """The longest record of attempt ``attempt``'s log at ``dest``: executor.log as stored
    (``stored``) or its segments joined, when they hold more (a run killed without its final
    write left only the segments)."""
    if dest.is_local:
        return stored
    data, offset = b"", 0
    while piece := read_new(storage, dest, attempt, offset)[0]:
        data += piece
        offset += len(piece)
    return data if len(data) > len(stored or b"") else stored
