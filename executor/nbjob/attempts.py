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

The places are ``nbjob.layout``'s; the earlier run.json is read with ``nbjob.runfile`` (one that
cannot be parsed is kept, and summed up, as ``UNREADABLE_SHOWN``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbjob import runfile
from nbjob.errors import StorageError
from nbjob.layout import LOG, Destination
from nbjob.runfile import RunView
from nbjob.storage import Storage

if TYPE_CHECKING:
    from nbjob.config import Settings

UNREADABLE_SHOWN = "unreadable run.json"  # an unreadable earlier run.json's status, as kept
_SUMMARY = ("attempt", "status", "exit_code", "reason", "started_at", "ended_at", "duration_s")


@dataclass
class Attempt:
    number: int = 1
    earlier: list[dict[str, Any]] = field(default_factory=list)  # summaries, oldest first
    resume_from: int | None = None  # the earlier attempt whose artifacts are restored


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The short form of an earlier attempt's run.json kept in this one's."""
    data = {k: record.get(k) for k in _SUMMARY}
    data["attempt"] = RunView.of(record).attempt
    return data


def _previous(storage: Storage, dest: Destination) -> dict[str, Any] | None:
    """The destination's run.json as it is kept (a marker when it cannot be parsed)."""
    view = runfile.read(storage, dest.run_json)
    if view is None:
        return None
    return view.data or {"status": UNREADABLE_SHOWN}


def read(storage: Storage, s: Settings, artifacts: Path) -> Attempt | StorageError:
    """``begin`` for these settings (a local destination's artifacts set aside with
    --no-resume); the reason as a ``StorageError`` when the destination cannot be read."""
    own = s.places.own
    try:
        a = begin(storage, own, s.run_id, s.attempt, not s.no_resume)
        if a.earlier and a.resume_from is None and own.is_local:
            set_aside_local_artifacts(artifacts, own, a.earlier[-1]["attempt"])
    except OSError as exc:
        return StorageError(f"cannot read earlier attempts at {own}: {exc}")
    except StorageError as exc:
        return StorageError(f"cannot read earlier attempts: {exc.reason}")
    return a


def begin(
    storage: Storage, dest: Destination, run_id: str, given: int | None, resume: bool
) -> Attempt:
    """Read the destination; keep an earlier attempt under attempts/<n>/; this attempt's facts."""
    previous = _previous(storage, dest)
    if previous is None:
        return Attempt(number=given or 1)
    view = RunView.of(previous)
    before = view.attempt
    archive(storage, dest, previous, before)
    return Attempt(
        number=max(given or 0, before + 1),
        earlier=[*view.earlier_attempts, summary(previous)],
        resume_from=before if resume and view.run_id == run_id else None,
    )


def archive(storage: Storage, dest: Destination, previous: dict[str, Any], number: int) -> None:
    """Copy the earlier attempt's notebook, report, log and run.json (last) to attempts/<n>/."""
    folder = dest.attempt(number)
    view = RunView.of(previous)
    names = [Path(n).name for n in (view.notebook, view.report) if n is not None]
    for name in [*names, LOG]:
        data = storage.get_bytes(dest.file(name))
        if data is not None:
            html = name.endswith(".html")  # the report: a browser shows it, not downloads it
            kind = "text/html; charset=utf-8" if html else "application/octet-stream"
            storage.put_bytes(folder.file(name), data, kind)
    storage.put_bytes(folder.run_json, json.dumps(previous, indent=2).encode() + b"\n")


def restore(storage: Storage, dest: Destination, folder: Path) -> list[str]:
    """The destination's artifacts into ``folder`` (a local destination holds them already)."""
    if dest.is_local:
        return []
    base = Destination(dest.artifacts)
    names = storage.list_names(base.url)
    for name in names:
        target = (folder / name).resolve()
        if folder.resolve() not in target.parents:
            continue  # a key like ../x never leaves the folder
        target.parent.mkdir(parents=True, exist_ok=True)
        storage.fetch(base.file(name), target.parent)
    return names


def set_aside_local_artifacts(folder: Path, dest: Destination, number: int) -> None:
    """--no-resume with a local destination: attempt ``number``'s artifacts to attempts/<n>/."""
    if folder.is_dir() and any(folder.iterdir()):
        target = Path(dest.attempt(number).artifacts)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder, target)
        folder.mkdir()
