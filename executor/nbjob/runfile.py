"""One typed reader of a run.json: what an earlier attempt, a peer rank or a watcher sees.

``RunRecord`` (``nbjob.record``) writes run.json; everything that reads one back (the earlier
attempt at the start, rank 0 gathering its peers, a rank watching them, ``nbjob watch``) reads
it through ``RunView``: the status as a ``RunStatus`` (``UNREADABLE`` for bytes that are not a
run.json, or a file that could not be read), whether the run is over, its exit code, reason,
failed cell, attempt, run id, notebook and report names and identity. ``data`` keeps the whole
mapping as it was read, for what is copied on as is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nbjob.errors import StorageError
from nbjob.events import RunStatus
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


def read(storage: Storage, url: str) -> RunView | None:
    """The run.json at ``url``; None when there is none. Storage errors raise."""
    data = storage.get_bytes(url)
    return None if data is None else parse(data)


def peek(storage: Storage, url: str) -> RunView | None:
    """``read``, with a storage error as ``UNREADABLE`` (for looking at a peer's run.json)."""
    try:
        return read(storage, url)
    except (StorageError, OSError):
        return RunView.unreadable()
