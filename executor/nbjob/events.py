"""What happens during a run, as small immutable events, and the bus that hands them out.

The executor publishes; listeners (``nbjob.listeners``: the log, the record, the checkpointer)
react. A listener is a callable taking the event, or an object with ``on_event(event)``; it
dispatches on the event's type and ignores the rest. A new consumer (MLflow, a progress bar) is
one more listener, with no change to the executor or the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, TypeAlias


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
    (``nbjob.errors``), ``unreadable`` for a run.json that could not be read."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    USAGE_ERROR = "usage_error"
    INVALID_INPUT = "invalid_input"
    TIMED_OUT = "timed_out"
    KERNEL_DIED = "kernel_died"
    STORAGE_ERROR = "storage_error"
    ENVIRONMENT_UNFIT = "environment_unfit"
    INTERNAL_ERROR = "internal_error"
    STOPPED = "stopped"
    PEER_LOST = "peer_lost"
    UNREADABLE = "unreadable"

    def __str__(self) -> str:
        return self.value

    @property
    def final(self) -> bool:
        return self not in (RunStatus.RUNNING, RunStatus.UNREADABLE)


# The old names, until every module uses the enums.
PENDING, RUNNING, COMPLETED, FAILED = (
    CellStatus.PENDING, CellStatus.RUNNING, CellStatus.COMPLETED, CellStatus.FAILED,
)  # fmt: skip
EXITED, SKIPPED, TIMED_OUT = CellStatus.EXITED, CellStatus.SKIPPED, CellStatus.TIMED_OUT
INTERRUPTED, KERNEL_DIED = CellStatus.INTERRUPTED, CellStatus.KERNEL_DIED


@dataclass(frozen=True)
class CellsListed:
    """The code cells that will run, in order, before the first one starts."""

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

    index: int
    status: str  # completed failed exited timed_out interrupted kernel_died
    execution_count: int | None
    started_at: str | None
    ended_at: str | None
    duration_s: float | None
    error: dict[str, Any] | None = None
    output_truncated: bool = False
    warning: str | None = None  # e.g. the cell's 'idle' never came


@dataclass(frozen=True)
class CellSkipped:
    """A cell that will not run because an earlier one ended the run (``sys.exit(0)``)."""

    index: int


@dataclass(frozen=True)
class Tick:
    """The executor is waiting for the kernel; a chance to checkpoint. Published often."""


TICK = Tick()

Event: TypeAlias = (
    CellsListed | CellStarted | CellOutput | CellMetric | CellEnded | CellSkipped | Tick
)


class HasOnEvent(Protocol):
    def on_event(self, event: Event) -> None: ...


Listener: TypeAlias = Callable[[Event], None] | HasOnEvent


class Bus:
    """Hands each published event to every listener, in the order they were added."""

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self._handlers: list[Callable[[Event], None]] = []
        for listener in listeners:
            self.add(listener)

    def add(self, listener: Listener) -> None:
        on_event = getattr(listener, "on_event", None)
        self._handlers.append(on_event if callable(on_event) else listener)  # type: ignore[arg-type]

    def publish(self, event: Event) -> None:
        for handle in self._handlers:
            handle(event)
