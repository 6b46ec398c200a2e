"""While cells run: the other ranks' run.json, their heartbeats, and this rank's own kernel.

``PeerWatch`` reads the other ranks' run.json (``WATCH_PEERS`` every ``WATCH_S``, round-robin)
while cells run and ends the running cell, like a stop, when a peer is lost:

- a peer's run.json of this run says it **failed** after this run began (``lost``);
- a peer **froze** (a hung node: its connections stay open, its collectives never return):
  its **heartbeat** — run.json's ``heartbeat_at`` (else ``progress.updated_at``), renewed
  with every checkpoint — was seen moving and then stood still, while its record says a cell
  runs, for ``stale_after`` seconds of this rank's watching: ``BEATS`` checkpoint intervals,
  at least ``STALE_MIN_S``, and at least ``BEATS`` times the longest gap seen between its
  beats (a peer whose checkpoints slow down is given longer). Time this rank itself was away
  (suspended) counts for little, and a record that never beats (an earlier attempt's) never
  counts (``stale``: the ranks that froze, which rank 0's end does not wait for).

And this rank's own **kernel stopped** by a signal (SIGSTOP: state T) for ``frozen_after``
seconds (``BEATS`` checkpoint intervals, at least ``FROZEN_MIN_S``) while its cells run is
killed (``frozen``): its peers, waiting on it in a collective, then see this rank fail (a dead
kernel, exit 5) instead of waiting. ``nbjob.ranks.classify`` turns each ending into its status.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbjob import runfile
from nbjob.events import RunStatus
from nbjob.logs import parse_iso
from nbjob.runfile import RunView
from nbjob.stop import StopToken
from nbjob.storage import Storage

if TYPE_CHECKING:
    from nbjob.config import Settings

POLL_S = 0.5
WATCH_S = 1.0  # how often a running rank reads its peers' run.json ...
WATCH_PEERS = 4  # ... and how many of them at a time (round-robin)
STALE_S = 300.0  # a final record that ended this long before rank 0 started is an old one
BEATS = 3  # checkpoint intervals without a heartbeat (or with a stopped kernel) that end it
STALE_MIN_S = 30.0  # a peer's heartbeat stands still at least this long before it is lost
FROZEN_MIN_S = 5.0  # this rank's kernel is stopped at least this long before it is killed


def current(record: RunView | None, own: RunView) -> bool:
    """A final record of this run (same run id, not one that ended before this run began)."""
    if record is None or not record.final or record.run_id != own.run_id:
        return False
    ended, began = parse_iso(record.ended_at), parse_iso(own.started_at)
    return not (ended and began and (began - ended).total_seconds() > STALE_S)


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
        record = runfile.peek(self.storage, self.top.rank(rank).run_json, cells=False)
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
        if record is None or not current(record, self.own) or not record.failed:
            return None
        if not lost_too and record.status is RunStatus.PEER_LOST:
            return None
        ended, began = parse_iso(record.ended_at), parse_iso(self.own.started_at)
        if ended is None or began is None or ended < began:
            return None  # an earlier attempt's end, not this run's
        return f"rank {rank} ended {record.get('status')} (exit {record.exit_code})"

    def failed_peer(self, seconds: float) -> str | None:
        """A peer that failed on its own (not of a lost peer: that one lost this rank), looked
        for during at most ``seconds`` (its final record may still be on its way)."""
        deadline = time.monotonic() + seconds
        while self.peers and not self.outer.requested:
            for rank in self.peers:
                record = runfile.peek(self.storage, self.top.rank(rank).run_json, cells=False)
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
