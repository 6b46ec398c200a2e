"""Attempts: running again with the same destination is a new attempt, never an overwrite.

When the run starts, the destination's ``run.json`` tells whether an earlier attempt left
results there. If so, its notebook, HTML report, run.json, executor.log (rebuilt from the
live log's segments when they hold more: ``nbjob.livelog``) and resources.jsonl are copied to
``attempts/<n>/`` (``n``: its ``attempt``, 1 when it has none) before this attempt writes
anything; the top level then always holds the latest attempt. This attempt's number is the
platform's (``--attempt`` / ``NBJOB_ATTEMPT``, Slurm's ``SLURM_RESTART_COUNT`` + 1,
``NBJOB_RESTART_COUNT`` + 1) when that is higher than the destination's, else the destination's
+ 1, so a number is never reused.

One writer: before it reads or writes anything at the destination, an attempt takes its lease
(``nbjob.lease``); another live attempt there makes it stop (``ConcurrentAttemptError``).

An earlier attempt whose run.json still says ``running`` died without a word (an OOM kill of
the whole container, a lost node, SIGKILL): it is kept as ``ended_without_record``, with when
it was last seen (its ``heartbeat_at``), the cell that was running and where the platform's
own record of the end is (``unrecorded``), in ``earlier_attempts``, ``attempts/<n>/run.json``
and the log (``announce``).

Resume: when the earlier attempt had the same run id, its artifacts (``artifacts/`` at the
destination) are restored into the local artifacts folder before the first cell.

The places are ``nbjob.layout``'s; the earlier run.json is read with ``nbjob.runfile`` (one that
cannot be parsed is kept, and summed up, as ``UNREADABLE_SHOWN``).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbjob import lease, livelog, runfile
from nbjob.errors import ConcurrentAttemptError, NbjobError, StorageError
from nbjob.events import RunStatus
from nbjob.layout import LOG, RESOURCES, Destination
from nbjob.resources import death
from nbjob.runfile import RunView
from nbjob.storage import Storage

if TYPE_CHECKING:
    from nbjob.config import Settings
    from nbjob.record import RunRecord
    from nbjob.stop import StopToken

UNREADABLE_SHOWN = "unreadable run.json"  # an unreadable earlier run.json's status, as kept
_SUMMARY = ("attempt", "status", "exit_code", "reason", "started_at", "ended_at", "duration_s")
_UNRECORDED = ("last_seen_at", "running_cell")  # in the summary of one that ended unrecorded
# Where each platform keeps its own record of how a process ended, when nbjob could not.
_PLATFORM_RECORD = {
    "kubernetes": "the pod's status.containerStatuses[].lastState.terminated.reason "
    "(e.g. OOMKilled) and exitCode, or the node's events",
    "slurm": "sacct -j <job> --format=State,ExitCode,Reason",
    "ray": "the Ray job's logs and 'ray job status'",
    "local": "the exit status its shell or supervisor saw (dmesg shows an out-of-memory kill)",
}
_PLATFORM_RECORD["kubeflow"] = _PLATFORM_RECORD["volcano"] = _PLATFORM_RECORD["kubernetes"]
_PLATFORM_RECORD["ffdl"] = _PLATFORM_RECORD["kubernetes"]
_ANY_PLATFORM = "the platform's own record (Kubernetes: lastState.terminated.reason)"


@dataclass
class Attempt:
    number: int = 1
    earlier: list[dict[str, Any]] = field(default_factory=list)  # summaries, oldest first
    resume_from: int | None = None  # the earlier attempt whose artifacts are restored
    run_id: str | None = None  # the earlier attempt's run id, when this attempt continues it
    why: str = "no earlier attempt"  # why it resumes or not, in words for the log
    lease: lease.Lease | lease.Unleased | None = None  # this attempt's hold on the destination

    @property
    def lost(self) -> bool:
        """Another attempt took this one's lease over (it thought this one dead)."""
        return self.lease is not None and self.lease.lost

    @property
    def unrecorded(self) -> list[dict[str, Any]]:
        """The earlier attempts that ended without a record."""
        status = RunStatus.ENDED_WITHOUT_RECORD.value
        return [e for e in self.earlier if e.get("status") == status]


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The short form of an earlier attempt's run.json kept in this one's."""
    data = {k: record.get(k) for k in _SUMMARY}
    data["attempt"] = RunView.of(record).attempt
    data.update({k: record[k] for k in _UNRECORDED if k in record})
    return data


def unrecorded(record: dict[str, Any]) -> dict[str, Any]:
    """An earlier record still ``running``, as what it is: an attempt that ended without a
    record. When it was last seen (its heartbeat, else its last progress), the cell that was
    running, and where the platform's own record of its end is."""
    view = RunView.of(record)
    progress = view.get("progress") if isinstance(view.get("progress"), dict) else {}
    seen = view.get("heartbeat_at") or progress.get("updated_at") or view.started_at
    cell = progress.get("running_cell")
    if cell is None:
        cell = next((c.get("index") for c in view.cells() if c.get("status") == "running"), None)
    platform = view.get("platform") if isinstance(view.get("platform"), dict) else {}
    where = _PLATFORM_RECORD.get(str(platform.get("name")), _ANY_PLATFORM)
    during = f"while cell {cell} ran" if cell is not None else "before any cell ran"
    oom = death.probable(record)  # its stored last sample near the memory limit
    during += f"; {oom}" if oom else ""
    reason = (
        f"ended without a record: last seen {seen or 'never'} {during}; it was killed or its "
        f"machine lost (an out-of-memory kill of the container, SIGKILL, a lost node): see {where}"
    )
    return {
        **record,
        "status": RunStatus.ENDED_WITHOUT_RECORD.value,
        "exit_code": None,
        "reason": reason,
        "last_seen_at": seen,
        "running_cell": cell,
    }


def announce(a: Attempt, record: RunRecord, log: Any) -> None:
    """This attempt's lease in the record, and in the log what a user should know: no lease
    (a store that cannot create exclusively), earlier attempts that ended without a record."""
    if a.lease is not None:
        record.lease_taken(a.lease.facts())
        if isinstance(a.lease, lease.Unleased):
            log.warning("no_lease", reason=a.lease.reason)
    for earlier in a.unrecorded:
        if earlier is a.earlier[-1]:  # the older ones were announced by their successors
            log.warning(
                "earlier_attempt_ended_without_record",
                attempt=earlier.get("attempt"),
                last_seen_at=earlier.get("last_seen_at"),
                running_cell=earlier.get("running_cell"),
                reason=earlier.get("reason"),
            )


def _previous(storage: Storage, dest: Destination) -> dict[str, Any] | None:
    """The destination's run.json as it is kept (a marker when it cannot be parsed)."""
    view = runfile.read(storage, dest.run_json)
    if view is None:
        return None
    return view.data or {"status": UNREADABLE_SHOWN}


def read(
    storage: Storage,
    s: Settings,
    artifacts: Path,
    started_at: str | None = None,
    token: StopToken | None = None,
) -> Attempt | NbjobError:
    """The destination's lease taken (``nbjob.lease``), then ``begin`` for these settings (a
    local destination's artifacts set aside with --no-resume). The reason as an error when
    another attempt holds the destination (``ConcurrentAttemptError``) or it cannot be read
    (``StorageError``)."""
    own = s.places.own
    try:
        held = lease.acquire(storage, own, s.run_id, started_at or "", s.checkpoint_interval, token)
    except ConcurrentAttemptError as exc:
        return exc
    except StorageError as exc:  # the lease is the first read of the destination
        return StorageError(f"cannot read earlier attempts: {exc.reason}")
    except OSError as exc:
        return StorageError(f"cannot read earlier attempts at {own}: {exc}")
    try:
        a = begin(storage, own, Continuing.of(s), s.attempt)
        if a.earlier and a.resume_from is None and own.is_local:
            set_aside_local_artifacts(artifacts, own, a.earlier[-1]["attempt"])
        a.lease = held
        if isinstance(held, lease.Lease):
            held.set_attempt(a.number, a.run_id)
    except (OSError, StorageError) as exc:
        with contextlib.suppress(OSError, StorageError):
            held.release()
        if isinstance(exc, StorageError):
            return StorageError(f"cannot read earlier attempts: {exc.reason}")
        return StorageError(f"cannot read earlier attempts at {own}: {exc}")
    return a


@dataclass(frozen=True)
class Continuing:
    """How an attempt relates to what the destination holds: its run id, whether it may take
    an earlier attempt's run id (its own was made up: a rerun by hand), whether it resumes."""

    run_id: str
    adopt: bool = False
    resume: bool = True
    why_not: str = ""  # the option that turned resuming off

    @classmethod
    def of(cls, s: Settings) -> Continuing:
        why_not = "--new-run" if s.new_run else "--no-resume" if s.no_resume else ""
        return cls(s.run_id, s.run_id_made and not s.new_run, not why_not, why_not)

    def judge(self, earlier_id: str | None, before: int) -> tuple[str, int | None, str]:
        """(this attempt's run id, the attempt it resumes from or None, why, in words)."""
        run_id = earlier_id if self.adopt and earlier_id else self.run_id
        if not self.resume:
            return run_id, None, f"{self.why_not} given"
        if earlier_id != run_id:
            return run_id, None, f"the earlier attempt was another run ({earlier_id or 'no id'})"
        if run_id != self.run_id:
            return run_id, before, "a rerun continues the destination's run (--new-run: not)"
        return run_id, before, "the same run id"


def begin(
    storage: Storage, dest: Destination, how: Continuing, given: int | None = None
) -> Attempt:
    """Read the destination; keep an earlier attempt under attempts/<n>/; this attempt's facts."""
    previous = _previous(storage, dest)
    if previous is None:
        return Attempt(number=given or 1, run_id=how.run_id)
    view = RunView.of(previous)
    if view.status is RunStatus.RUNNING:  # its writer is gone: we hold the lease
        previous = unrecorded(previous)
    before = view.attempt
    archive(storage, dest, previous, before)
    run_id, resume_from, why = how.judge(view.run_id, before)
    return Attempt(
        number=max(given or 0, before + 1),
        earlier=[*view.earlier_attempts, summary(previous)],
        resume_from=resume_from,
        run_id=run_id,
        why=why,
    )


def archive(storage: Storage, dest: Destination, previous: dict[str, Any], number: int) -> None:
    """Copy the earlier attempt's notebook, report, log, resource samples and run.json (last) to
    attempts/<n>/."""
    folder = dest.attempt(number)
    view = RunView.of(previous)
    names = [Path(n).name for n in (view.notebook, view.report) if n is not None]
    for name in [*names, LOG, RESOURCES]:
        data = storage.get_bytes(dest.file(name))
        if name == LOG and (data is None or view.status is RunStatus.ENDED_WITHOUT_RECORD):
            data = livelog.whole(storage, dest, view.attempt, data)  # killed: in segments
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
