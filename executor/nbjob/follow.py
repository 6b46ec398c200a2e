"""Following a run's live log from outside: only the bytes that are new since the last read.

``LogFollower.read_new(attempt)`` is the one place ``nbjob watch`` reads the live log. It reads
through ``nbjob.livelog``: a remote destination's log is stored during the run as append-only
segments, one per checkpoint (``log/<attempt>/<offset>.log``), so a poll costs one GET per new
segment plus one answered "not found", and downloads only the new bytes, whatever the log's
size; a local destination's executor.log is read from the last offset. A follower joining a
long run (``tail``) starts near the end (``livelog.near_end``). A new attempt starts again from
its own log's beginning. Only complete lines are handed out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nbjob import livelog
from nbjob.layout import Destination
from nbjob.storage import Storage

__all__ = ["LogFollower"]


@dataclass
class LogFollower:
    """Reads ``dest``'s live log from where the last read stopped."""

    storage: Storage
    dest: Destination
    tail: int | None = None  # the first read starts about this many bytes before the end
    offset: int = 0  # bytes of the attempt's log already handed out (complete lines)
    bytes_read: int = 0  # every byte read from the store, for the cost per poll
    attempt: int | None = field(default=None, repr=False)  # whose log is being followed

    def read_new(self, attempt: int = 1) -> list[dict[str, Any]]:
        """The log events (JSON lines) of attempt ``attempt`` written since the last call, in
        order (the first call with ``tail``: those of about the log's last ``tail`` bytes)."""
        if attempt != self.attempt:
            self.attempt, self.offset = attempt, 0
            if self.tail is not None:
                self.offset = livelog.near_end(self.storage, self.dest, attempt, self.tail)
        if self.dest.is_local and _size(self.dest) < self.offset:
            self.offset = 0  # the log was rewritten shorter: a new attempt's
        data, self.offset = livelog.read_new(self.storage, self.dest, attempt, self.offset)
        self.bytes_read += len(data)
        return [e for line in data.splitlines() if (e := _event(line)) is not None]


def _size(dest: Destination) -> int:
    try:
        return (dest.path / "executor.log").stat().st_size
    except OSError:
        return 0


def _event(line: bytes) -> dict[str, Any] | None:
    """One JSON log line as a mapping (a console-format or torn line: None)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
