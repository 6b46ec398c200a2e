"""One writer per destination: the lease an attempt holds while it writes there.

Before its first write at its folder (``Settings.places.own``), an attempt creates the lease
file ``.nbjob-lease/<g>.json`` there (``nbjob.layout``) *only if it is absent*
(``Storage.create_exclusive``: ``O_CREAT | O_EXCL`` locally, a conditional create on object
stores). It holds the run id, the attempt, the host, the pid, when the attempt started and a
heartbeat, renewed every ``renew_s`` seconds by a thread of its own (so a long download or a
silent cell keeps it alive), and it is removed at the end of the run.

A lease is **stale**, and taken over by creating generation ``g + 1`` (one creator wins), when:

- its holder ran on this host and its process is gone (a SIGKILL, an OOM kill; or a restarted
  container of the same pod, whose nbjob has the same pid: pids start over);
- its heartbeat is older than ``stale_s`` (``STALE_INTERVALS`` checkpoint intervals, at least
  ``STALE_MIN_S``: 60 s) by this host's clock; or
- it did not change for ``stale_s`` while this attempt watched it (whatever the clocks say).

A lease renewed while this attempt watches it, or held by a live process on this host, is
**alive**: this attempt stops (``ConcurrentAttemptError``, exit 8) before it writes or reads
anything at the destination, so started together, two attempts never both call themselves
attempt 1, and neither truncates the other's log. A holder that finds a later generation at its
next renewal has lost the lease (it was taken for stale): its results then go beside
(``Lease.lost``). A backend without ``Capability.EXCLUSIVE`` cannot lease: the run goes on
unleased, and says so (``Unleased``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from nbjob import logs
from nbjob.errors import ConcurrentAttemptError, StorageError
from nbjob.layout import Destination
from nbjob.stop import StopToken
from nbjob.storage import Storage

STALE_MIN_S = 60.0  # a lease not renewed for this long (at least) is stale
STALE_INTERVALS = 5  # ... or for this many checkpoint intervals, when that is longer
RENEWALS = 4  # a lease is renewed this many times per stale period
WATCH_S = 0.5  # how often a lease that looks alive is read again


def stale_after(interval: float) -> float:
    """Seconds without a renewal after which a lease is stale (checkpoint ``interval``)."""
    return max(STALE_MIN_S, STALE_INTERVALS * interval)


@dataclass(frozen=True)
class Holder:
    """A lease as read: who holds it (empty ``data`` when it could not be parsed)."""

    generation: int
    raw: bytes
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, generation: int, raw: bytes) -> Holder:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        return cls(generation, raw, data if isinstance(data, dict) else {})

    def describe(self) -> str:
        """'run r1 attempt 2 on host h (pid 7), started ..., renewed ...' for reasons."""
        d = self.data
        if not d:
            return f"an unreadable lease (generation {self.generation})"
        attempt = f" attempt {d['attempt']}" if d.get("attempt") else ""
        return (
            f"run {d.get('run_id')}{attempt} on host {d.get('host')} (pid {d.get('pid')}), "
            f"started {d.get('started_at')}, renewed {d.get('heartbeat_at')}"
        )

    def dead_here(self) -> bool:
        """Held by a process of this host that is gone (or by this very pid: a restarted
        container's), and not by a run of this process."""
        if self.data.get("host") != socket.gethostname():
            return False
        pid = self.data.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return False
        if pid == os.getpid():
            return self.data.get("token") not in _held_tokens()
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return _zombie(pid)

    def alive_here(self) -> bool:
        """Held by a live process of this host (a second run on one machine)."""
        return self.data.get("host") == socket.gethostname() and not self.dead_here()

    def heartbeat_age(self) -> float | None:
        """Seconds since its heartbeat by this host's clock (None: none readable)."""
        return logs.age_s(self.data.get("heartbeat_at"))


_TOKENS: dict[str, str] = {}  # lease URL -> token, for the leases this process holds


def _held_tokens() -> set[str]:
    return set(_TOKENS.values())


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError, IndexError), open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    return False


@dataclass(frozen=True)
class Unleased:
    """The destination's store cannot create exclusively: the run goes on without a lease."""

    reason: str

    def facts(self) -> dict[str, Any]:
        return {"held": False, "reason": self.reason}

    @property
    def lost(self) -> bool:
        return False

    def release(self, timeout: float = 0.0, remove: bool = True) -> None:
        """Nothing to release."""


class Lease:
    """A lease this attempt holds: renewed in the background until ``release``."""

    def __init__(
        self,
        storage: Storage,
        dest: Destination,
        generation: int,
        info: dict[str, Any],
        renew_s: float,
    ) -> None:
        self.storage, self.dest, self.generation = storage, dest, generation
        self.info = info
        self.url = dest.lease_file(generation)
        self.renew_s = renew_s
        self.lost_to: Holder | None = None  # the attempt that took it over, if any
        self._stop = threading.Event()
        self._warned = False
        self._thread = threading.Thread(target=self._renew_loop, name="lease", daemon=True)
        _TOKENS[self.url] = str(info["token"])

    @property
    def lost(self) -> bool:
        return self.lost_to is not None

    def facts(self) -> dict[str, Any]:
        """What run.json says about it."""
        return {"held": True, "generation": self.generation, "stale_s": self.info["stale_s"]}

    def start(self) -> Lease:
        self._thread.start()
        return self

    def set_attempt(self, number: int, run_id: str | None = None) -> None:
        """This attempt's number (and run id: a rerun continues the destination's), known
        once the destination was read: in the lease too."""
        self.info["attempt"] = number
        if run_id:
            self.info["run_id"] = run_id
        self.renew()

    def renew(self) -> None:
        """A new heartbeat, unless a later generation exists (then the lease is lost)."""
        later = self.storage.get_bytes(self.dest.lease_file(self.generation + 1))
        if later is not None:
            self.lost_to = Holder.read(self.generation + 1, later)
            self._stop.set()
            logs.get_logger().warning("lease_lost", to=self.lost_to.describe())
            return
        self.info["heartbeat_at"] = logs.now_iso()
        self.storage.put_bytes(self.url, _bytes(self.info))

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self.renew()
            except (StorageError, OSError) as exc:  # the next renewal may get through
                if not self._warned:
                    self._warned = True
                    logs.get_logger().warning("lease_not_renewed", reason=str(exc)[:300])

    def release(self, timeout: float = 5.0, remove: bool = True) -> None:
        """Stop renewing and remove the lease (a lost one is the new holder's: left alone;
        ``remove=False``: left to go stale, for a store that just failed the results)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=min(5.0, max(0.0, timeout / 2)))
        _TOKENS.pop(self.url, None)
        if remove and not self.lost:
            self.storage.remove(self.url)


def _bytes(info: dict[str, Any]) -> bytes:
    return (json.dumps(info, indent=2) + "\n").encode()


def _current(storage: Storage, dest: Destination) -> Holder | None:
    """The lease of the highest generation at ``dest`` (None: no lease)."""
    generations = sorted(
        int(name[: -len(".json")])
        for name in storage.list_names(dest.lease)
        if name.endswith(".json") and name[: -len(".json")].isdigit()
    )
    for generation in reversed(generations):
        raw = storage.get_bytes(dest.lease_file(generation))
        if raw is not None:
            return Holder.read(generation, raw)
    return None


def acquire(
    storage: Storage,
    dest: Destination,
    run_id: str,
    started_at: str,
    interval: float,
    token: StopToken | None = None,
) -> Lease | Unleased:
    """Take ``dest``'s lease (renewed from now on); ``ConcurrentAttemptError`` when another
    attempt holds it alive. A lease that looks alive is watched (at most ``stale_after``) until
    it is renewed (alive) or proves stale; a stop ends the watch (alive, then)."""
    if not storage.exclusive(dest.url):
        return Unleased(f"{dest.url.split('://')[0]}:// cannot create a file only if absent")
    stale_s = stale_after(interval)
    info = {
        "run_id": run_id,
        "attempt": None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": started_at,
        "heartbeat_at": logs.now_iso(),
        "stale_s": stale_s,
        "token": secrets.token_hex(8),
    }
    watched: dict[int, tuple[bytes, float]] = {}  # generation -> (bytes first seen, when)
    while True:
        holder = _current(storage, dest)
        if holder is None or _stale(holder, watched, stale_s):
            generation = 1 if holder is None else holder.generation + 1
            try:
                created = _create(storage, dest, generation, info)
            except StorageError as exc:  # e.g. 501: a store that has no conditional writes
                return Unleased(f"the store refused a conditional create: {exc.reason}")
            if created:
                if holder is not None:  # the stale one, no longer needed
                    with contextlib.suppress(StorageError, OSError):
                        storage.remove(dest.lease_file(holder.generation))
                return Lease(storage, dest, generation, info, stale_s / RENEWALS).start()
            continue  # another attempt created it first: look at that one
        if _alive(holder, watched) or (token is not None and token.requested):
            raise ConcurrentAttemptError(
                f"another attempt is writing to {logs.redact(dest.url)}: {holder.describe()}; "
                "this attempt stopped before its first cell"
            )
        time.sleep(WATCH_S)


def _create(storage: Storage, dest: Destination, generation: int, info: dict[str, Any]) -> bool:
    """Create generation ``generation``; read it back (a store that ignores the condition
    overwrites, and a create whose answer was lost and retried reads as 'exists')."""
    url = dest.lease_file(generation)
    storage.create_exclusive(url, _bytes(info))
    raw = storage.get_bytes(url)
    return raw is not None and Holder.read(generation, raw).data.get("token") == info["token"]


def _stale(holder: Holder, watched: dict[int, tuple[bytes, float]], stale_s: float) -> bool:
    """Whether ``holder``'s lease may be taken over (see the module's doc)."""
    if holder.dead_here():
        return True
    age = holder.heartbeat_age()
    if age is not None and age > stale_s and not holder.alive_here():
        return True
    first = watched.setdefault(holder.generation, (holder.raw, time.monotonic()))
    return first[0] == holder.raw and time.monotonic() - first[1] > stale_s


def shows_life(storage: Storage, dest: Destination) -> bool:
    """Seen from outside (``nbjob watch``): the newest lease at ``dest`` is held by a live
    process of this host, or was renewed within ``STALE_MIN_S``. None, or unreadable: no."""
    try:
        holder = _current(storage, dest)
    except Exception:  # a store without listing, an unreadable lease: no sign of life
        return False
    if holder is None or holder.dead_here():
        return False
    age = holder.heartbeat_age()
    return holder.alive_here() or (age is not None and age <= STALE_MIN_S)


def _alive(holder: Holder, watched: dict[int, tuple[bytes, float]]) -> bool:
    """Proven alive: a live process of this host, or renewed while this attempt watched."""
    if holder.alive_here():
        return True
    first = watched.get(holder.generation)
    return first is not None and first[0] != holder.raw
