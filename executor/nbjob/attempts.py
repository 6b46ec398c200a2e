"""Attempts: running again with the same destination is a new attempt, never an overwrite.

When the run starts, the destination's ``run.json`` tells whether an earlier attempt left
results there. If so, its notebook, HTML report, run.json and executor.log are copied to
``attempts/<n>/`` (``n``: its ``attempt``, 1 when it has none) before this attempt writes
anything; the top level then always holds the latest attempt. This attempt's number is the
platform's (``--attempt`` / ``NBJOB_ATTEMPT``, Slurm's ``SLURM_RESTART_COUNT`` + 1,
``NBJOB_RESTART_COUNT`` + 1) when that is higher than the destination's, else the destination's
+ 1, so a number is never reused.

Resume: when the earlier attempt had the same run id, its artifacts (``artifacts/`` at the
destination) are restored into the local artifacts folder before the first cell.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbjob.errors import StorageError
from nbjob.storage import Storage, is_local, join

if TYPE_CHECKING:
    from nbjob.config import Settings

ATTEMPTS_DIR = "attempts"
RUN_JSON = "run.json"
LOG_NAME = "executor.log"
ARTIFACTS = "artifacts"
_SUMMARY = ("attempt", "status", "exit_code", "reason", "started_at", "ended_at", "duration_s")


@dataclass
class Attempt:
    number: int = 1
    earlier: list[dict[str, Any]] = field(default_factory=list)  # summaries, oldest first
    resume_from: int | None = None  # the earlier attempt whose artifacts are restored


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The short form of an earlier attempt's run.json kept in this one's."""
    data = {k: record.get(k) for k in _SUMMARY}
    data["attempt"] = _number(record)
    return data


def _number(record: dict[str, Any]) -> int:
    value = record.get("attempt")
    return value if isinstance(value, int) and value >= 1 else 1


def _previous(storage: Storage, dest: str) -> dict[str, Any] | None:
    data = storage.get_bytes(join(dest, RUN_JSON))
    if data is None:
        return None
    try:
        record = json.loads(data)
    except ValueError:
        record = None
    return record if isinstance(record, dict) else {"status": "unreadable run.json"}


def read(storage: Storage, s: Settings, artifacts: Path) -> Attempt | StorageError:
    """``begin`` for these settings (a local destination's artifacts set aside with
    --no-resume); the reason as a ``StorageError`` when the destination cannot be read."""
    try:
        a = begin(storage, s.output, s.run_id, s.attempt, not s.no_resume)
        if a.earlier and a.resume_from is None and is_local(s.output):
            set_aside_local_artifacts(artifacts, s.output, a.earlier[-1]["attempt"])
    except OSError as exc:
        return StorageError(f"cannot read earlier attempts at {s.output}: {exc}")
    except StorageError as exc:
        return StorageError(f"cannot read earlier attempts: {exc.reason}")
    return a


def begin(storage: Storage, dest: str, run_id: str, given: int | None, resume: bool) -> Attempt:
    """Read the destination; keep an earlier attempt under attempts/<n>/; this attempt's facts."""
    previous = _previous(storage, dest)
    if previous is None:
        return Attempt(number=given or 1)
    before = _number(previous)
    archive(storage, dest, previous, before)
    earlier = [e for e in previous.get("earlier_attempts") or [] if isinstance(e, dict)]
    same_run = previous.get("run_id") == run_id
    return Attempt(
        number=max(given or 0, before + 1),
        earlier=[*earlier, summary(previous)],
        resume_from=before if resume and same_run else None,
    )


def archive(storage: Storage, dest: str, previous: dict[str, Any], number: int) -> None:
    """Copy the earlier attempt's notebook, report, log and run.json (last) to attempts/<n>/."""
    folder = join(dest, f"{ATTEMPTS_DIR}/{number}")
    names = [LOG_NAME]
    if isinstance(previous.get("notebook"), str):
        names.insert(0, Path(previous["notebook"]).name)
    report = previous.get("report")
    if isinstance(report, dict) and isinstance(report.get("name"), str):
        names.insert(1, Path(report["name"]).name)
    for name in names:
        data = storage.get_bytes(join(dest, name))
        if data is not None:
            html = name.endswith(".html")  # the report: a browser shows it, not downloads it
            kind = "text/html; charset=utf-8" if html else "application/octet-stream"
            storage.put_bytes(join(folder, name), data, kind)
    storage.put_bytes(join(folder, RUN_JSON), json.dumps(previous, indent=2).encode() + b"\n")


def restore(storage: Storage, dest: str, folder: Path) -> list[str]:
    """The destination's artifacts into ``folder`` (a local destination holds them already)."""
    if is_local(dest):
        return []
    base = join(dest, ARTIFACTS)
    names = storage.list_names(base)
    for name in names:
        target = (folder / name).resolve()
        if folder.resolve() not in target.parents:
            continue  # a key like ../x never leaves the folder
        target.parent.mkdir(parents=True, exist_ok=True)
        storage.fetch(join(base, name), target.parent)
    return names


def set_aside_local_artifacts(folder: Path, dest: str, number: int) -> None:
    """--no-resume with a local destination: attempt ``number``'s artifacts to attempts/<n>/."""
    if folder.is_dir() and any(folder.iterdir()):
        target = Path(join(dest, f"{ATTEMPTS_DIR}/{number}/{ARTIFACTS}"))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder, target)
        folder.mkdir()
