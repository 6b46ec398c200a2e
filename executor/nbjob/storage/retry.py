"""One retry loop for every backend, on top of the clients' own (bounded) retries.

Each try that raises is classified by the backend (``Backend.classify``): permanent errors (no
such bucket, access denied, bad credentials) fail at once; transient ones (connection refused,
resets, 5xx, 429) are tried again with exponential backoff, ``attempts()`` tries in all. What
still fails raises ``StorageError`` with a one-line, credential-free reason.

``NBJOB_STORAGE_ATTEMPTS`` (default 5) sets the tries per operation, here and in the clients'
own retry settings: lower it where a dead endpoint must fail fast.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

from nbjob.errors import NbjobError, StorageError
from nbjob.logs import redact

from .base import Backend

ATTEMPTS = 5  # per operation, the first try included (NBJOB_STORAGE_ATTEMPTS)
BACKOFF_S = 0.5  # doubled after each failed try
RETRY_STATUS = (408, 429, 500, 502, 503, 504)

T = TypeVar("T")


def attempts() -> int:
    """Tries per operation: ``NBJOB_STORAGE_ATTEMPTS`` when it is a whole number >= 1."""
    value = os.environ.get("NBJOB_STORAGE_ATTEMPTS", "").strip()
    return max(1, int(value)) if value.isdigit() else ATTEMPTS


def with_retries(backend: Backend, what: str, url: str, call: Callable[[], T]) -> T:
    """``call()``, retried while ``backend.classify`` calls its errors transient."""
    delay = BACKOFF_S
    tries = attempts()
    for attempt in range(1, tries + 1):
        try:
            return call()
        except NbjobError:
            raise
        except Exception as exc:
            transient, reason = backend.classify(exc)
            if not transient:
                raise StorageError(f"{what} {redact(url)} failed: {redact(reason)}") from None
            if attempt == tries:
                raise StorageError(
                    f"{what} {redact(url)} failed after {tries} tries: {redact(reason)}"
                ) from None
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")
