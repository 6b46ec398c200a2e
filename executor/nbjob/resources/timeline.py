"""The samples over time (``resources.jsonl``), bounded for a run of days.

Every sample is kept while there are few: the newest ``RECENT`` always at full resolution, the
older ones in ``history``. When ``history`` would pass ``HISTORY`` lines, every other one is
dropped and from then on only every other sample leaving the recent window is kept there (the
older part's resolution halves, again each time it fills). So the file never holds more than
``RECENT + HISTORY`` lines: at one sample a second, a 48-hour run keeps its last 10 minutes
second by second and the rest at about one line every 64 s (about 500 KB in all).
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

RECENT = 600
HISTORY = 3600


class Timeline:
    """Samples (JSON mappings), thinned as described above."""

    def __init__(self, recent: int = RECENT, history: int = HISTORY) -> None:
        self.recent: deque[bytes] = deque()  # each sample as its line, serialized once
        self.history: list[bytes] = []
        self.limit, self.cap = recent, history
        self.stride = 1  # one sample in ``stride`` leaving the recent window is kept
        self._seen = 0  # samples that left the recent window

    def add(self, sample: dict[str, Any]) -> None:
        self.recent.append(json.dumps(sample, separators=(",", ":")).encode() + b"\n")
        if len(self.recent) <= self.limit:
            return
        old = self.recent.popleft()
        if self._seen % self.stride == 0:
            self.history.append(old)
        self._seen += 1
        if len(self.history) > self.cap:
            self.history = self.history[::2]
            self.stride *= 2

    def __len__(self) -> int:
        return len(self.history) + len(self.recent)

    def samples(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (*self.history, *self.recent)]

    def to_bytes(self) -> bytes:
        """The JSON lines file: one sample a line, oldest first."""
        return b"".join((*self.history, *self.recent))
