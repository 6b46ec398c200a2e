"""The stop token: a platform's stop signal, recorded once and checked by every step.

The signal handler only sets the token; it never raises. Each step checks the token where it
can: the cell loop on every poll, blocking steps (fetch, unpack, kernel start) before and after
and, while they run, from the main thread that waits for them (``wait_for``). So nbjob notices a
stop within a fraction of a second whatever it is doing, and stores results within the grace.

The end of a run spends one ``Budget`` (a deadline, and a stop's grace once one is requested):
each step takes a ``share`` of what is ``left``; ``timebox`` is the one way to run work on a
thread for at most what a budget allows (``wait_for`` instead waits until a stop is requested).
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any, Generic, TypeVar

from nbjob.errors import StoppedError

DEFAULT_SIGNALS = ("SIGTERM", "SIGINT")
POLL_S = 0.05  # how often a waiting main thread looks at the token
_UNCATCHABLE = {"SIGKILL", "SIGSTOP"}

T = TypeVar("T")


class StopToken:
    """Set once, by a signal handler or by code; read by everything that can stop early."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None
        self.signal: str | None = None
        self.requested_at: float | None = None  # time.monotonic() of the first request

    def request(self, reason: str, signal_name: str | None = None) -> None:
        if self._event.is_set():
            return  # the first request counts; its grace period bounds the rest
        self.reason, self.signal = reason, signal_name
        self.requested_at = time.monotonic()
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def remaining(self, grace: float) -> float:
        """Seconds left of ``grace`` since the request (all of it when none was made)."""
        if self.requested_at is None:
            return grace
        return grace - (time.monotonic() - self.requested_at)

    def check(self, when: str) -> None:
        """Raise ``StoppedError`` when a stop was requested; ``when``: 'during the fetch'."""
        if self.requested:
            raise StoppedError(f"stopped by {self.signal or 'request'} {when}")


def parse_signals(text: str) -> tuple[str, ...]:
    """'TERM,INT,USR1' (or SIGTERM, 15) -> ('SIGTERM', 'SIGINT', 'SIGUSR1')."""
    names: list[str] = []
    for part in (p.strip().upper() for p in text.split(",")):
        if not part:
            continue
        try:
            sig = signal.Signals(int(part)) if part.isdigit() else signal.Signals[_sig(part)]
        except (KeyError, ValueError):
            raise ValueError(f"unknown signal {part!r}") from None
        if sig.name in _UNCATCHABLE:
            raise ValueError(f"{sig.name} cannot be caught")
        if sig.name not in names:
            names.append(sig.name)
    if not names:
        raise ValueError("name at least one signal")
    return tuple(names)


def _sig(name: str) -> str:
    return name if name.startswith("SIG") else "SIG" + name


_installed: list[str] = []


def install(token: StopToken, names: Iterable[str] = DEFAULT_SIGNALS) -> None:
    """Make ``names`` set ``token`` (and nothing else); signals installed before are reset."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        token.request(f"stopped by {name}", name)

    wanted = list(names)
    for name in _installed:
        if name not in wanted:
            default = signal.default_int_handler if name == "SIGINT" else signal.SIG_DFL
            signal.signal(signal.Signals[name], default)
    for name in wanted:
        signal.signal(signal.Signals[name], handler)
    _installed[:] = wanted


def ignore_from_now_on() -> None:
    """The installed stop signals do nothing from now on: the run's outcome is final.

    Python gives handled signals their default action back while it shuts down, so without
    this a stop signal in a finished process's last milliseconds would kill it (exit -15)
    after its results were stored with exit code 0. Ignored signals are left as they are.
    """
    for name in _installed:
        signal.signal(signal.Signals[name], signal.SIG_IGN)


def exit_within(seconds: float, code: int) -> None:
    """The process ends with ``code`` at most ``seconds`` from now, whatever is left running.

    For a process whose outcome is final and stored: Python's exit waits for non-daemon
    threads (a library's upload pool abandoned in a deadline, for one) and a hung one would keep
    the job, and its pod or allocation, alive long after the results were stored. A daemon
    thread ends the process if the normal exit has not happened by then.
    """

    def end() -> None:
        time.sleep(seconds)
        _end(code)

    threading.Thread(target=end, name="exit-within", daemon=True).start()


_exit_code: list[int] = []


def exit_without_teardown(code: int | None = None) -> None:
    """The process's exit skips the interpreter's teardown once its outcome is final.

    Called with no code (first thing in the process, so that its handler runs after every
    exit handler registered later): registers the handler. Called with ``code`` once the
    outcome is final: from then on, when Python exits (its non-daemon threads joined, the
    ``atexit`` handlers of the libraries run: logging's flush, weakref finalizers...), the
    handler flushes stdout and stderr and ends the process with ``code`` at once, instead of
    freeing every module and object one by one: 0.1-0.2 s of a short run's wall time, spent
    after its results are stored. Open files are closed by then (the log, the results).
    """
    if code is None:
        atexit.register(_end_now)
    else:
        _exit_code[:] = [code]


def _end_now() -> None:
    if _exit_code:  # else the outcome is not final (an uncaught error): Python's own exit
        _end(_exit_code[0])


def _end(code: int) -> None:
    """stdout and stderr flushed (what cannot be is dropped), then the process ends now."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


class Worker(Generic[T]):
    """``work()`` on a daemon thread; its value or exception, once it has ended."""

    def __init__(self, work: Callable[[], T], name: str) -> None:
        self.work = work
        self.value: list[T] = []
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._target, name=name, daemon=True)
        self.thread.start()

    def _target(self) -> None:
        try:
            self.value.append(self.work())
        except BaseException as exc:
            self.error.append(exc)

    def wait(self, token: StopToken, what: str, poll: float = POLL_S) -> T:
        """Its value once the work ends; ``StoppedError`` as soon as a stop is requested (the
        thread is abandoned then and ends with its own timeouts or with the process)."""
        while self.thread.is_alive():
            self.thread.join(poll)
            token.check(f"during {what}")
        return self.result()

    def within(self, budget: Budget, *, at_least: float = 0.0, poll: float = POLL_S) -> Outcome[T]:
        """Its outcome, waited for while ``budget`` has time left (at least ``at_least``
        seconds); late (the thread left running) after that. ``timebox`` in one call."""
        started = time.monotonic()
        while self.thread.is_alive():
            left = max(budget.left(), at_least - (time.monotonic() - started))
            if left <= 0:
                return _late(budget)
            self.thread.join(min(poll, left))
        if self.error:
            return Outcome(error=self.error[0])
        return Outcome(value=self.value[0])

    def result(self) -> T:
        if self.error:
            raise self.error[0]
        return self.value[0]


def wait_for(token: StopToken, work: Callable[[], T], what: str, poll: float = POLL_S) -> T:
    """``work()`` in a worker thread; the main thread gives up on it when a stop is requested.

    For blocking steps (a download, an unpack, a kernel start) that cannot check the token
    themselves: a stop ends the wait at once (``StoppedError``); the abandoned daemon thread
    ends with its own timeouts or with the process.
    """
    token.check(f"before {what}")
    return Worker(work, what).wait(token, what, poll)


# -- the end of a run: one budget, one timebox --------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """Time to spend: until ``deadline`` (``time.monotonic()``) and, once a stop is requested,
    until ``grace`` seconds after that request, whichever comes first.

    The end of a run has one (``nbjob.finish``): nothing pressing, each step may take its calm
    limit; after a stop, the steps share what is left of the stop's grace. ``left()`` is read
    again each time, so a stop that comes while a step runs shortens it at once.
    """

    deadline: float = math.inf
    token: StopToken | None = None
    grace: float = math.inf

    @classmethod
    def within(cls, seconds: float) -> Budget:
        """``seconds`` from now, whatever happens."""
        return cls(time.monotonic() + seconds)

    def left(self) -> float:
        by_grace = math.inf
        if self.token is not None and self.token.requested:
            by_grace = self.token.remaining(self.grace)
        return min(self.deadline - time.monotonic(), by_grace)

    def less(self, reserve: float) -> Budget:
        """This budget less ``reserve`` seconds kept at its end (for the steps after)."""
        return replace(self, deadline=self.deadline - reserve, grace=self.grace - reserve)

    def share(self, fraction: float, at_least: float = 0.0, calm: float = math.inf) -> Budget:
        """A step's part: ``fraction`` of what is left now (``at_least`` seconds), at most
        ``calm`` seconds when no stop was requested; a stop later still ends it with the
        grace."""
        part = min(self.left() * fraction, calm)
        return replace(self, deadline=time.monotonic() + max(at_least, part))


@dataclass
class Outcome(Generic[T]):
    """What timeboxed work came to: its value, its error, or ``late`` (abandoned running)."""

    value: T | None = None
    error: BaseException | None = None
    late: bool = False
    stopped_by: str | None = None  # late because this stop's grace ran out

    @property
    def ok(self) -> bool:
        return not self.late and self.error is None

    def why(self) -> str | None:
        """Why there is no value (None when there is one): the error's text or lateness."""
        if self.late:
            return "not finished in the time left"
        return None if self.error is None else str(self.error)

    def result(self, what: str) -> T:
        """The value; the error raised; ``StoppedError`` or ``TimeoutError`` when late."""
        if self.stopped_by is not None:
            raise StoppedError(f"{self.stopped_by} during {what}")
        if self.late:
            raise TimeoutError(f"{what}: not finished in time")
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


def timebox(
    work: Callable[[], T],
    budget: Budget | float,
    what: str,
    *,
    at_least: float = 0.0,
    poll: float = POLL_S,
) -> Outcome[T]:
    """``work()`` on a daemon thread, waited for while ``budget`` (seconds, or a ``Budget``)
    has time left, and at least ``at_least`` seconds; abandoned after that (the thread ends
    with its own timeouts or with the process). Nothing starts when no time is left."""
    if not isinstance(budget, Budget):
        budget = Budget.within(budget)
    if budget.left() <= 0 and at_least <= 0:
        return _late(budget)
    return Worker(work, what).within(budget, at_least=at_least, poll=poll)


def _late(budget: Budget) -> Outcome[Any]:
    token = budget.token
    if token is not None and token.requested and token.remaining(budget.grace) <= 0:
        return Outcome(late=True, stopped_by=token.reason or "stopped")
    return Outcome(late=True)
