"""Delivery of events to external listeners, so that no listener can change a run.

An external listener (one a user passes to ``nbjob.run`` or installs as a plug-in) is not
nbjob's code: its exception is logged once (``listener_failed``: the listener's name and the
error's first line) and counted, never raised into the run; a queued one gets its events on a
thread of its own through a bounded queue (a full queue drops the event and counts it), so a
slow listener never holds up the message loop. At the run's end the queue is given a bounded
time to drain, then abandoned with a warning. ``events.Bus.subscribe`` builds these.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbjob.events import Event, Subscription

QUEUE_SIZE = 10_000  # events waiting for one queued listener, at most
ERROR_CHARS = 300  # the error's line in the log, at most


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, short."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return line[:ERROR_CHARS]


class Isolated:
    """An external listener called inline: its errors are logged once and counted."""

    def __init__(self, sub: Subscription, handle: Callable[[Event], None], log: Any) -> None:
        self.sub = sub
        self.handle = handle
        self.log = log
        self.errors = 0

    def deliver(self, event: Event, wait: float = 0.0) -> None:
        """Hand over ``event`` if the listener wants it; ``wait``: unused inline."""
        if self.sub.wants(event):
            self._call(event)

    def _call(self, event: Event) -> None:
        try:
            self.handle(event)
        except Exception as exc:  # not nbjob's code: whatever it raises, the run goes on
            self.errors += 1
            if self.errors == 1:
                self.log.warning("listener_failed", listener=self.sub.name, error=one_line(exc))

    def close(self, deadline: float) -> None:
        """The run ends: how many more errors the listener had, when it had more than one."""
        if self.errors > 1:
            self.log.warning("listener_errors", listener=self.sub.name, errors=self.errors)


_STOP = object()  # the queue's end marker


class Queued(Isolated):
    """An external listener fed on its own thread through a bounded queue.

    ``skippable``: event types not queued behind others (``Tick``: it only says the run is
    waiting, and comes often), so that they never fill the queue.
    """

    def __init__(
        self,
        sub: Subscription,
        handle: Callable[[Event], None],
        log: Any,
        size: int = 0,
        skippable: tuple[type, ...] = (),
    ) -> None:
        super().__init__(sub, handle, log)
        self.skippable = skippable
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=size or QUEUE_SIZE)
        self.dropped = 0
        self.thread = threading.Thread(target=self._loop, name=f"listener {sub.name}", daemon=True)
        self.thread.start()

    def deliver(self, event: Event, wait: float = 0.0) -> None:
        """Queue ``event``; a full queue drops it (``wait``: seconds it may wait for room,
        given for the last event)."""
        if not self.sub.wants(event):
            return
        if isinstance(event, self.skippable) and not self.queue.empty():
            return
        try:
            self.queue.put(event, timeout=wait) if wait > 0 else self.queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1:
                self.log.warning(
                    "listener_queue_full", listener=self.sub.name, size=self.queue.maxsize
                )

    def _loop(self) -> None:
        while (event := self.queue.get()) is not _STOP:
            self._call(event)

    def close(self, deadline: float) -> None:
        """Let the queue drain until ``deadline`` (``time.monotonic()``), then abandon it."""
        marked = 0
        with contextlib.suppress(queue.Full):  # no room: the thread is abandoned below
            self.queue.put(_STOP, timeout=max(0.001, deadline - time.monotonic()))
            marked = 1
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.thread.is_alive():  # a daemon thread: it ends with the process
            left = max(0, self.queue.qsize() - marked)
            self.log.warning("listener_abandoned", listener=self.sub.name, events_left=left)
        if self.dropped:
            self.log.warning("listener_events_dropped", listener=self.sub.name, count=self.dropped)
        super().close(deadline)
