"""Bounded waiting for tests: poll a check until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from nbjob.artifacts import ArtifactStream

__all__ = ["wait_idle", "wait_until"]

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float, interval: float = 0.1) -> T:
    """Call ``check`` until it returns something truthy (returned) or ``timeout`` passes.

    The last value is returned either way, so ``assert wait_until(...)`` reads as the check
    and fails with it; the wait is always bounded.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def wait_idle(stream: ArtifactStream, timeout: float) -> None:
    """Wait (bounded) until an artifact stream has sent everything now in its folder."""
    from nbjob.artifacts import scan

    wait_until(lambda: not stream.pending(scan(stream.folder)), timeout, 0.05)
