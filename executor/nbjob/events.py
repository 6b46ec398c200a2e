"""What happens during a run, as small immutable events, and the bus that hands them out.

A run publishes, in order: ``CellsListed`` (once the notebook is read and its parameters
merged), ``RunStarted`` (the kernel is ready, just before the first cell), per cell
``CellStarted``, ``CellOutput``/``CellMetric`` as they come and ``CellEnded`` (or
``CellSkipped``), ``Tick`` while waiting for the kernel, and last ``RunEnded`` (the results are
stored, or failed to be). A run that ends before its cells (a bundle that cannot be fetched, a
kernel that does not start) publishes ``RunEnded`` without ``RunStarted``.

A listener is a callable taking the event, or an object with ``on_event(event)``; it
dispatches on the event's type and ignores the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Protocol, TypeAlias

from nbjob import logs
from nbjob.delivery import Isolated, Queued


class CellStatus(str, Enum):
    """A code cell's status, as run.json shows it (a ``str``: it compares and serializes as
    its value)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    EXITED = "exited"  # sys.exit(0) / SystemExit(0): the run ends early, as a success
    SKIPPED = "skipped"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"
    KERNEL_DIED = "kernel_died"

    def __str__(self) -> str:
        return self.value


class RunStatus(str, Enum):
    """A run's status in run.json: ``running`` until it ends, then one per exit code
    (``nbjob.errors``), ``unreadable`` for a run.json that could not be read;
    ``ended_without_record`` for an earlier attempt that died without writing its end."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    USAGE_ERROR = "usage_error"
    INVALID_INPUT = "invalid_input"
    TIMED_OUT = "timed_out"
    KERNEL_DIED = "kernel_died"
    STORAGE_ERROR = "storage_error"
    ENVIRONMENT_UNFIT = "environment_unfit"
    CONCURRENT_ATTEMPT = "concurrent_attempt"
    ENDED_WITHOUT_RECORD = "ended_without_record"  # an earlier attempt's, as a later one saw it
    INTERNAL_ERROR = "internal_error"
    STOPPED = "stopped"
    PEER_LOST = "peer_lost"
    UNREADABLE = "unreadable"

    def __str__(self) -> str:
        return self.value

    @property
    def final(self) -> bool:
        return self not in (RunStatus.RUNNING, RunStatus.UNREADABLE)


@dataclass(frozen=True, slots=True)
class CellState:
    """One code cell's state: the one copy, carried by ``CellEnded`` and stored as it is by
    the record (run.json's ``cells`` entries are ``to_json()``). Slots: one per code cell, kept
    for the whole run (no attribute dictionary each: ~2 MiB at 20,000 cells)."""

    index: int
    status: CellStatus = CellStatus.PENDING
    execution_count: int | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    error: dict[str, Any] | None = None
    output_truncated: bool = False
    warning: str | None = None  # e.g. the cell's 'idle' never came

    def to_json(self) -> dict[str, Any]:
        """run.json's entry: these keys, in this order, the status as its string (a shallow
        copy: ``asdict``'s deep copy cost a third of a millisecond a cell at every checkpoint)."""
        entry = {name: getattr(self, name) for name in _CELL_FIELDS}
        entry["status"] = str(self.status)
        return entry


_CELL_FIELDS = tuple(f.name for f in fields(CellState))  # in order: run.json's keys


@dataclass(frozen=True)
class RunStarted:
    """The kernel is ready and the parameters are merged: the first cell is about to run."""

    run_id: str
    attempt: int
    identity: dict[str, Any]  # rank, world size, where they came from
    parameters: dict[str, Any]
    notebook: str | None  # its path inside the bundle
    kernel: dict[str, Any]  # name, language, implementation, the session's facts


@dataclass(frozen=True)
class RunEnded:
    """The run's outcome, once its results are stored (``stored``) or failed to be: the last
    event of every run."""

    status: RunStatus
    exit_code: int
    reason: str | None
    duration_s: float | None
    output: str  # where the results are (a URL or folder, without credentials)
    stored: bool  # False: the results could not be stored there (a local copy is kept)
    notebook: str | None  # the executed notebook's name in ``output``
    report: str | None  # the HTML report's name in ``output`` (None: none written)


@dataclass(frozen=True)
class CellsListed:
    """The code cells that will run, in order: published once, when the notebook is read and
    its parameters merged, so that a run ending before its first cell still lists them."""

    indexes: tuple[int, ...]


@dataclass(frozen=True)
class CellStarted:
    index: int
    started_at: str


@dataclass(frozen=True)
class CellOutput:
    """Stream text (stdout/stderr) of a running cell, as it arrives."""

    index: int
    name: str
    text: str


@dataclass(frozen=True)
class CellMetric:
    """A value the notebook recorded by name (a scrapbook ``glue`` display output)."""

    index: int
    name: str
    value: Any
    encoder: str = "json"


@dataclass(frozen=True)
class CellEnded:
    """Published for every cell that started, however it ended (timed out, stopped, died)."""

    state: CellState

    @property
    def index(self) -> int:
        return self.state.index


@dataclass(frozen=True)
class CellSkipped:
    """A cell that will not run because an earlier one ended the run (``sys.exit(0)``)."""

    index: int


@dataclass(frozen=True)
class Tick:
    """The executor is waiting for the kernel; a chance to checkpoint. Published often."""


TICK = Tick()

Event: TypeAlias = (
    RunStarted
    | CellsListed
    | CellStarted
    | CellOutput
    | CellMetric
    | CellEnded
    | CellSkipped
    | Tick
    | RunEnded
)
EVENT_TYPES: tuple[type, ...] = (
    RunStarted, CellsListed, CellStarted, CellOutput, CellMetric, CellEnded, CellSkipped, Tick,
    RunEnded,
)  # fmt: skip


class HasOnEvent(Protocol):
    def on_event(self, event: Event) -> None: ...


Listener: TypeAlias = Callable[[Event], None] | HasOnEvent


def handler(listener: Listener) -> Callable[[Event], None]:
    """The function that receives the events: ``on_event`` when there is one, else the
    listener itself."""
    on_event = getattr(listener, "on_event", None)
    return on_event if callable(on_event) else listener  # type: ignore[return-value]


@dataclass(frozen=True)
class Subscription:
    """An external listener and how it is to be fed (``Bus.subscribe``).

    ``event_types``: only these events (None: all). ``queued``: delivered on a thread of its
    own, through a bounded queue, so a slow listener never holds up the run (a ``Tick`` is
    not queued behind other events). ``name``: how the log names it (default: the listener's
    qualified name).
    """

    listener: Listener
    event_types: AbstractSet[type] | None = None  # kept as a frozenset
    queued: bool = False
    name: str = ""
    _types: tuple[type, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.event_types is not None:
            types = frozenset(self.event_types)
            unknown = [t for t in types if t not in EVENT_TYPES]
            if unknown:
                raise TypeError(f"not nbjob event types: {unknown}")
            object.__setattr__(self, "event_types", types)
            object.__setattr__(self, "_types", tuple(types))
        if not self.name:
            object.__setattr__(self, "name", listener_name(self.listener))

    def wants(self, event: Event) -> bool:
        return self.event_types is None or isinstance(event, self._types)


def listener_name(listener: Any) -> str:
    """``module.qualname`` of a function or of an object's class."""
    target = listener if hasattr(listener, "__qualname__") else type(listener)
    module = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", repr(target))
    return f"{module}.{name}" if module else name


DRAIN_S = 5.0  # at the run's end, how long queued listeners may take to catch up, at most


class Bus:
    """Hands each published event to every listener, in the order they were added.

    nbjob's own listeners (``add``, or given to the constructor: the record, the log, the
    checkpointer) run inline, and an error in one of them is a bug in nbjob (the run ends as
    ``internal_error``). External ones (``subscribe``) come after them and are isolated
    (``nbjob.delivery``): their errors are logged and never reach the run, and a queued one
    cannot slow it down. ``close`` ends the deliveries at the run's end.
    """

    def __init__(self, listeners: Iterable[Listener] = (), log: Any = None) -> None:
        self._handlers: list[Callable[[Event], None]] = []
        self._external: list[Isolated] = []
        self._log = log  # where external listeners' errors go (default: nbjob's log)
        for listener in listeners:
            self.add(listener)

    def add(self, listener: Listener) -> None:
        """One of nbjob's own listeners: called inline, unguarded."""
        self._handlers.append(handler(listener))

    def subscribe(
        self,
        listener: Listener | Subscription,
        *,
        event_types: Iterable[type] | None = None,
        queued: bool = False,
        name: str = "",
    ) -> Subscription:
        """An external listener, isolated; a ``Subscription`` brings its own options.

        ``event_types``: only these events (None: all); ``queued``: on a thread of its own.
        """
        if isinstance(listener, Subscription):
            sub = listener
        else:
            types = None if event_types is None else frozenset(event_types)
            sub = Subscription(listener, types, queued, name)
        log = self._log if self._log is not None else logs.get_logger()
        if sub.queued:
            self._external.append(Queued(sub, handler(sub.listener), log, skippable=(Tick,)))
        else:
            self._external.append(Isolated(sub, handler(sub.listener), log))
        return sub

    def publish(self, event: Event) -> None:
        for handle in self._handlers:
            handle(event)
        for delivery in self._external:
            delivery.deliver(event)

    def close(self, last: Event | None = None, timeout: float = DRAIN_S) -> None:
        """Publish ``last`` (the run's end; queued listeners wait for room for it), let the
        queued listeners catch up for ``timeout`` seconds at most, and log their error counts.
        External listeners get nothing after this."""
        deadline = time.monotonic() + max(0.0, timeout)
        external, self._external = self._external, []
        if last is not None:
            for handle in self._handlers:
                handle(last)
            for delivery in external:
                delivery.deliver(last, wait=max(0.0, deadline - time.monotonic()))
        for delivery in external:
            delivery.close(deadline)
