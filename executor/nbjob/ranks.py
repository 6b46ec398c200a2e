"""The ranks of one multi-process run: one canonical result, the others beside it, lost peers.

Rank 0 (see ``nbjob.platforms``) writes its results at the top of the destination, exactly as a
single-process run; rank r > 0 writes the same set under ``ranks/<r>/`` (``nbjob.layout``).
At its end (a step of ``nbjob.finish``) rank 0 waits at most ``--ranks-wait`` seconds for the
other ranks' final run.json (read with ``nbjob.runfile``) and records every rank's status and
exit code in its own run.json (``ranks``):
``missing`` when a rank left no run.json, ``unknown`` when it still said ``running`` (or was
unreadable, or from another run) when the wait ended. ``first_failed_rank`` names the rank that
went first: the earliest failure that is not a lost peer, else a rank that never reported,
else the earliest lost peer.

A cell that fails because a peer rank died (torch.distributed, gloo, NCCL: connection closed or
reset by peer, aborted communicator, gloo timeouts, ``DistBackendError``) is not the notebook's
bug: ``classify`` turns it into ``PeerLostError`` (status ``peer_lost``, exit 200), which the
retry recipes retry. A collective that hangs instead of failing is ended by ``PeerWatch``: while
cells run it reads the other ranks' run.json, and one of them failed interrupts the cell like a
stop, which ``classify`` also makes ``peer_lost``.

A peer that hangs without failing (a frozen node) is found by its heartbeat, and a rank whose
own kernel is stopped ends it: both in ``nbjob.peerwatch``.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbjob import runfile
from nbjob.errors import (
    CellExecutionError,
    DeadKernelError,
    NbjobError,
    PeerLostError,
    StoppedError,
    StorageError,
)
from nbjob.layout import Destination
from nbjob.logs import parse_iso
from nbjob.peerwatch import POLL_S, STALE_S, WATCH_PEERS, WATCH_S, PeerWatch, current
from nbjob.platforms import Identity
from nbjob.runfile import RunView
from nbjob.stop import Budget
from nbjob.storage import Storage

if TYPE_CHECKING:
    from nbjob.config import Settings
    from nbjob.record import RunRecord

__all__ = [
    "ABORT_WAIT_S",
    "PEER_ERRORS",
    "PEER_MESSAGES",
    "POLL_S",
    "STALE_S",
    "WATCH_PEERS",
    "WATCH_S",
    "PeerWatch",
    "classify",
    "failed_at",
    "first_failed",
    "gather",
    "record_ranks",
]

ABORT_WAIT_S = 5.0  # how long a rank whose kernel aborted looks for a peer that failed

# torch.distributed's own error classes (torch >= 2.1) and the messages gloo / NCCL give when
# the other side of a collective is gone.
PEER_ERRORS = frozenset({"DistBackendError", "DistNetworkError", "DistStoreError"})
PEER_MESSAGES = re.compile(
    r"connection (?:closed|reset) by peer"
    r"|communicator was aborted"
    r"|remote process exited or there was a network error"
    r"|watchdog caught collective operation timeout"
    r"|gloo\b.*(?:timed out|broken pipe)",
    re.IGNORECASE | re.DOTALL,
)


def classify(error: NbjobError, me: Identity, watch: PeerWatch | None = None) -> NbjobError:
    """A cell error of a multi-rank run that says a peer went away becomes ``PeerLostError``;
    so does the end of a cell the ``PeerWatch`` cut short because a peer's run.json failed."""
    watching = watch is not None and not watch.outer.requested
    if watching and watch and watch.frozen and isinstance(error, StoppedError | DeadKernelError):
        index = error.details.get("cell_index")
        where = f" while cell {index} was running" if index is not None else ""
        reason = f"{watch.frozen}{where}: killed, so that the other ranks do not wait on it"
        return DeadKernelError(reason, **error.details)
    lost = watch.lost if watch is not None and watching else None
    if lost and isinstance(error, StoppedError):
        index = error.details.get("cell_index")
        where = f" while cell {index} was running" if index is not None else ""
        return PeerLostError(f"rank {me.rank} lost a peer: {lost}{where}", **error.details)
    if _aborted(error, me) and watch is not None and (peer := watch.failed_peer(ABORT_WAIT_S)):
        reason = f"rank {me.rank} lost a peer: {peer}; then its own {error.reason}"
        return PeerLostError(reason, **error.details)
    if not me.multi or type(error) is not CellExecutionError:
        return error
    ename, evalue = str(error.details.get("ename", "")), str(error.details.get("evalue", ""))
    if ename in PEER_ERRORS or PEER_MESSAGES.search(evalue):
        return PeerLostError(
            f"rank {me.rank} lost a peer: {error.reason} (another rank died or went away)",
            **error.details,
        )
    return error


def _aborted(error: NbjobError, me: Identity) -> bool:
    """A multi-rank kernel that died of SIGABRT: what NCCL's error handling does to a process
    whose peer is gone (an out-of-memory kill or a lost node is SIGKILL instead)."""
    aborted = error.details.get("exit_status") == -signal.SIGABRT
    return me.multi and isinstance(error, DeadKernelError) and aborted


# -- rank 0's end: the other ranks' records ------------------------------------------------------


def failed_at(record: RunView) -> str | None:
    """When a record's run failed: its failed cell's end, else the run's end."""
    index = record.failed_cell
    for cell in record.cells():
        if cell.get("index") == index and cell.get("ended_at"):
            return str(cell["ended_at"])
    return record.ended_at


def _entry(
    rank: int, record: RunView | None, own: RunView, gone: str | None = None
) -> dict[str, Any]:
    if record is None:
        return {"rank": rank, "status": "missing", "exit_code": None, "reason": "no run.json"}
    if not current(record, own):
        seen = record.get("status") or record.status.value
        if record.run_id not in (None, own.run_id):
            seen = "another run"
        why = f"no final run.json of this run (last seen: {seen})"
        if gone:
            why = f"{why}; {gone}"
        return {"rank": rank, "status": "unknown", "exit_code": None, "reason": why}
    return {
        "rank": rank,
        "status": record.get("status"),
        "exit_code": record.exit_code,
        "reason": record.reason,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "failed_at": failed_at(record) if record.failed else None,
    }


def _not_read(rank: int) -> dict[str, Any]:
    return {"rank": rank, "status": "unknown", "exit_code": None, "reason": "not read: stopping"}


def _others(storage: Storage, top: Destination, me: Identity) -> list[int]:
    if me.world_size is not None:
        return list(range(1, me.world_size))
    try:  # the platform did not say how many: the ranks that wrote something
        names = storage.list_names(top.ranks)
    except (StorageError, OSError):
        return []
    return sorted({int(n.split("/")[0]) for n in names if n.split("/")[0].isdigit()} - {0})


def gather(
    storage: Storage,
    dest: str,
    me: Identity,
    own: dict[str, Any],
    wait_s: float,
    stopped: Callable[[], bool] = lambda: False,
    gone: dict[int, str] | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Every rank's entry (rank 0's from ``own``) after waiting at most ``wait_s`` seconds;
    ``dest``: the run's top folder; ``gone``: ranks whose heartbeat stopped (why), read but
    not waited for."""
    gone = gone or {}
    started = time.monotonic()
    mine = RunView.of(own)
    if stopped():  # the stop grace is for this rank's own results: nothing is read
        return [_entry(0, mine, mine)] + [_not_read(r) for r in range(1, me.world_size or 1)], 0.0
    top = Destination(dest)
    others = _others(storage, top, me)
    seen: dict[int, RunView | None] = {}
    while True:
        for rank in others:
            if not current(seen.get(rank), mine):
                seen[rank] = runfile.peek(storage, top.rank(rank).run_json, cells=False)
        left = wait_s - (time.monotonic() - started)
        waited = [r for r in others if r not in gone]
        if left <= 0 or stopped() or all(current(seen.get(r), mine) for r in waited):
            break
        time.sleep(min(POLL_S, left))
    entries = [_entry(0, mine, mine)]
    entries += [_entry(r, seen.get(r), mine, gone.get(r)) for r in others]
    return entries, round(time.monotonic() - started, 2)


def first_failed(entries: list[dict[str, Any]]) -> int | None:
    """The rank that went first (see the module's doc); None when no rank failed."""

    def earliest(group: list[dict[str, Any]]) -> int:
        def when(e: dict[str, Any]) -> tuple[float, int]:
            t = parse_iso(e.get("failed_at") or e.get("ended_at"))
            return (t.timestamp() if t else float("inf"), e["rank"])

        return int(min(group, key=when)["rank"])

    failed = [e for e in entries if e.get("exit_code")]
    lost = [e for e in failed if e["status"] == PeerLostError.status]
    if hard := [e for e in failed if e not in lost]:
        return earliest(hard)
    gone = [e["rank"] for e in entries if e["status"] in ("missing", "unknown")]
    if lost and gone:
        return int(min(gone))
    return earliest(lost) if lost else None


def record_ranks(
    record: RunRecord,
    storage: Storage,
    settings: Settings,
    budget: Budget,
    gone: dict[int, str] | None = None,
) -> None:
    """Rank 0 of a multi-rank run: every rank's end in its record, read within ``budget``
    (none read once stopping: the grace is for this rank's own results); ranks whose
    heartbeat stopped (``gone``, from ``PeerWatch.stale``) are read but not waited for."""
    me = settings.identity
    if not (me.canonical and me.multi):
        return
    token = budget.token
    stopped = (lambda: token.requested) if token is not None else (lambda: False)
    own, top = record.to_json(), settings.places.top.url
    entries, waited = gather(storage, top, me, own, budget.left(), stopped, gone)
    first = first_failed(entries)
    record.ranks_gathered(entries, first, waited)
    if first not in (None, 0) and record.status == PeerLostError.status:
        record.reason = f"{record.reason}; rank {first} went first"
