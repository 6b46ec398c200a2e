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

A peer that hangs without failing (a frozen node: its connections stay open, its collectives
never return) is found by its **heartbeat**: run.json's ``heartbeat_at`` (else
``progress.updated_at``), renewed with every checkpoint. A peer whose heartbeat was seen moving
and then stands still while its record says a cell runs, for ``stale_after`` seconds of this
rank's watching (``BEATS`` checkpoint intervals, at least ``STALE_MIN_S``, and at least
``BEATS`` times the longest gap seen between its beats), is lost. A rank whose own kernel is
stopped (SIGSTOP: state T) for ``frozen_after`` seconds while its cells run kills it (``frozen``,
a dead kernel, exit 5), so that its peers end with it instead of waiting on it.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from nbjob.events import RunStatus
from nbjob.layout import Destination
from nbjob.platforms import Identity
from nbjob.runfile import RunView
from nbjob.stop import Budget, StopToken
from nbjob.storage import Storage

if TYPE_CHECKING:
    from nbjob.config import Settings
    from nbjob.record import RunRecord

POLL_S = 0.5
WATCH_S = 1.0  # how often a running rank reads its peers' run.json ...
WATCH_PEERS = 4  # ... and how many of them at a time (round-robin)
STALE_S = 300.0  # a final record that ended this long before rank 0 started is an old one
ABORT_WAIT_S = 5.0  # how long a rank whose kernel aborted looks for a peer that failed
BEATS = 3  # checkpoint intervals without a heartbeat (or with a stopped kernel) that end it
STALE_MIN_S = 30.0  # a peer's heartbeat stands still at least this long before it is lost
FROZEN_MIN_S = 5.0  # this rank's kernel is stopped at least this long before it is killed

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


def _time(text: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None


def failed_at(record: RunView) -> str | None:
    """When a record's run failed: its failed cell's end, else the run's end."""
    index = record.failed_cell
    for cell in record.cells():
        if cell.get("index") == index and cell.get("ended_at"):
            return str(cell["ended_at"])
    return record.ended_at


def _current(record: RunView | None, own: RunView) -> bool:
    """A final record of this run (same run id, not one that ended before this run began)."""
    if record is None or not record.final or record.run_id != own.run_id:
        return False
    ended, began = _time(record.ended_at), _time(own.started_at)
    return not (ended and began and (began - ended).total_seconds() > STALE_S)


def _entry(
    rank: int, record: RunView | None, own: RunView, gone: str | None = None
) -> dict[str, Any]:
    if record is None:
        return {"rank": rank, "status": "missing", "exit_code": None, "reason": "no run.json"}
    if not _current(record, own):
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
            if not _current(seen.get(rank), mine):
                seen[rank] = runfile.peek(storage, top.rank(rank).run_json)
        left = wait_s - (time.monotonic() - started)
        waited = [r for r in others if r not in gone]
        if left <= 0 or stopped() or all(_current(seen.get(r), mine) for r in waited):
            break
        time.sleep(min(POLL_S, left))
    entries = [_entry(0, mine, mine)]
    entries += [_entry(r, seen.get(r), mine, gone.get(r)) for r in others]
    return entries, round(time.monotonic() - started, 2)


def first_failed(entries: list[dict[str, Any]]) -> int | None:
    """The rank that went first (see the module's doc); None when no rank failed."""

    def earliest(group: list[dict[str, Any]]) -> int:
        def when(e: dict[str, Any]) -> tuple[float, int]:
            t = _time(e.get("failed_at") or e.get("ended_at"))
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


# -- while cells run: the peers' records -----------------------------------------------------------


@dataclass
class _Beat:
    """What this rank saw of one peer's heartbeat: its last value, whether it was seen moving,
    how long (of this rank's watching) it has stood still, the longest gap between two beats."""

    value: str | None = None
    moving: bool = False
    read_at: float | None = None
    still_s: float = 0.0
    longest_s: float = 0.0

    def observe(self, value: str | None, now: float, cap: float) -> None:
        """One read; ``cap`` bounds the time a read counts for (this rank itself may have been
        stopped or suspended meanwhile: that time is not the peer's silence)."""
        step = min(now - self.read_at, cap) if self.read_at is not None else 0.0
        self.read_at = now
        if value is None:
            return
        if self.value is not None and value != self.value:
            if self.moving:
                self.longest_s = max(self.longest_s, self.still_s + step)
            self.moving, self.still_s = True, 0.0
        elif self.value is not None:
            self.still_s += step
        self.value = value

    def stale(self, after: float) -> bool:
        return self.moving and self.still_s > max(after, BEATS * self.longest_s)


def heartbeat(record: RunView) -> str | None:
    """A record's heartbeat: ``heartbeat_at``, else the checkpoint's ``progress.updated_at``."""
    progress = record.get("progress")
    beat = record.get("heartbeat_at")
    if beat is None and isinstance(progress, dict):
        beat = progress.get("updated_at")
    return str(beat) if beat is not None else None


def _running_cell(record: RunView) -> int | None:
    progress = record.get("progress")
    cell = progress.get("running_cell") if isinstance(progress, dict) else None
    return cell if isinstance(cell, int) else None


class PeerWatch:
    """Reads the other ranks' run.json while cells run (``WATCH_PEERS`` every ``WATCH_S``).

    ``token`` is the stop token the executor watches: requested when the process's own
    (``outer``) is, at once, and also when a peer's run.json of this run says it failed after
    this run began, or its heartbeat stopped while a cell of it ran (``lost`` says which;
    ``stale``: the ranks whose heartbeat stopped): a collective that hangs on a dead or frozen
    peer instead of failing is then interrupted like a stop, and ``classify`` makes that ending
    ``peer_lost``. With ``kernel`` (a local one), this rank's own kernel stopped for
    ``frozen_after`` seconds is killed (``frozen`` says so), and ``classify`` makes that a dead
    kernel: its peers see this rank fail instead of waiting on it.
    """

    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        outer: StopToken,
        own: dict[str, Any],
        kernel: Any = None,
    ) -> None:
        self.storage, self.top, self.own = storage, settings.places.top, RunView.of(own)
        self.me = me = settings.identity
        self.peers = [r for r in range(me.world_size or 1) if r != me.rank]
        self.outer = outer
        self._token = _Either(outer)
        self.lost: str | None = None
        self.stale: dict[int, str] = {}
        self.frozen: str | None = None
        beats = BEATS * settings.checkpoint_interval
        self.stale_after, self.frozen_after = max(beats, STALE_MIN_S), max(beats, FROZEN_MIN_S)
        self.kernel = kernel if hasattr(kernel, "stopped") and hasattr(kernel, "kill") else None
        self._beats = {rank: _Beat() for rank in self.peers}
        self._stopped_s = 0.0
        # how long one round of reads takes, and the most a read may count for (``_Beat``)
        self._round_s = WATCH_S * math.ceil(len(self.peers) / WATCH_PEERS)
        self._cap = 2 * self._round_s + 5.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="peers", daemon=True)

    @property
    def token(self) -> StopToken:
        """The token for the executor: the process's own when there is no peer to watch."""
        return self._token if self.peers else self.outer

    def __enter__(self) -> PeerWatch:
        if self.peers:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(WATCH_S * 2)

    def _loop(self) -> None:
        turn, last = 0, time.monotonic()
        while not self._done.wait(WATCH_S) and not self._token.requested:
            now = time.monotonic()
            if self._own_kernel_frozen(min(now - last, self._cap)):
                return
            last = now
            for _ in range(min(WATCH_PEERS, len(self.peers))):
                rank, turn = self.peers[turn % len(self.peers)], turn + 1
                if self._failed(rank):
                    return

    def _own_kernel_frozen(self, step: float) -> bool:
        """This rank's kernel stopped (SIGSTOP) for ``frozen_after`` s: killed, ``frozen``."""
        if self.kernel is None or not self.kernel.stopped():
            self._stopped_s = 0.0
            return False
        self._stopped_s += step
        if self._stopped_s < self.frozen_after:
            return False
        self.frozen = (
            f"rank {self.me.rank}'s kernel was stopped by a signal (SIGSTOP) "
            f"for {self._stopped_s:.0f} s"
        )
        self._token.request(self.frozen)
        self.kernel.kill()
        return True

    def _failed(self, rank: int) -> bool:
        record = runfile.peek(self.storage, self.top.rank(rank).run_json)
        failure = self._failure(rank, record)
        if failure is None:
            failure = self._silent(rank, record)
        if failure is None:
            return False
        self.lost = failure
        self._token.request(self.lost)
        return True

    def _silent(self, rank: int, record: RunView | None) -> str | None:
        """How long the peer's heartbeat has stood still while a cell of it ran, once that is
        longer than ``stale_after``; None while it beats (or is not running a cell)."""
        beat = self._beats[rank]
        running = record is not None and record.readable and not record.final
        if record is None or not running or record.run_id != self.own.run_id:
            return None
        cell = _running_cell(record)
        beat.observe(heartbeat(record) if cell is not None else None, time.monotonic(), self._cap)
        if cell is None or not beat.stale(self.stale_after):
            return None
        why = (
            f"its heartbeat stopped: run.json unchanged for {beat.still_s:.0f} s "
            f"(last {beat.value}) while its cell {cell} was running"
        )
        self.stale[rank] = why
        return f"rank {rank} froze ({why})"

    def _failure(self, rank: int, record: RunView | None, *, lost_too: bool = True) -> str | None:
        """How the peer's run of this attempt failed, or None (running, succeeded, older)."""
        if record is None or not _current(record, self.own) or not record.failed:
            return None
        if not lost_too and record.status is RunStatus.PEER_LOST:
            return None
        ended, began = _time(record.ended_at), _time(self.own.started_at)
        if ended is None or began is None or ended < began:
            return None  # an earlier attempt's end, not this run's
        return f"rank {rank} ended {record.get('status')} (exit {record.exit_code})"

    def failed_peer(self, seconds: float) -> str | None:
        """A peer that failed on its own (not of a lost peer: that one lost this rank), looked
        for during at most ``seconds`` (its final record may still be on its way)."""
        deadline = time.monotonic() + seconds
        while self.peers and not self.outer.requested:
            for rank in self.peers:
                record = runfile.peek(self.storage, self.top.rank(rank).run_json)
                if failure := self._failure(rank, record, lost_too=False):
                    return failure
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        return None


class _Either(StopToken):
    """Requested when this token is, or when ``outer`` is (its reason and signal, then)."""

    def __init__(self, outer: StopToken) -> None:
        super().__init__()
        self.outer = outer

    @property
    def requested(self) -> bool:
        if self.outer.requested:  # the first request wins: a no-op once this one was made
            self.request(self.outer.reason or "stopped", self.outer.signal)
        return super().requested
