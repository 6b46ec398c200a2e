"""Bounded waiting for tests: poll a check until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

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


def elapsed(since: float) -> float:
    """Seconds from ``since`` (a ``time.monotonic()`` reading) to now."""
    return time.monotonic() - since


__all__ = ["elapsed", "wait_until"]
