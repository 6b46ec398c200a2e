"""One retry loop for every backend, on top of the clients' own (bounded) retries.

Each try that raises is classified by the backend (``Backend.classify``): permanent errors (no
such bucket, access denied, bad credentials) fail at once; transient ones (connection refused,
resets, 5xx, 429) are tried again with exponential backoff, ``ATTEMPTS`` tries in all. What still
fails raises ``StorageError`` with a one-line, credential-free reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from nbjob.errors import NbjobError, StorageError
from nbjob.logs import redact

from .base import Backend

ATTEMPTS = 5  # per operation, the first try included
BACKOFF_S = 0.5  # doubled after each failed try
RETRY_STATUS = (408, 429, 500, 502, 503, 504)

T = TypeVar("T")


def with_retries(backend: Backend, what: str, url: str, call: Callable[[], T]) -> T:
    """``call()``, retried while ``backend.classify`` calls its errors transient."""
    delay = BACKOFF_S
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except NbjobError:
            raise
        except Exception as exc:
            transient, reason = backend.classify(exc)
            if not transient:
                raise StorageError(f"{what} {redact(url)} failed: {redact(reason)}") from None
            if attempt == ATTEMPTS:
                raise StorageError(
                    f"{what} {redact(url)} failed after {ATTEMPTS} tries: {redact(reason)}"
                ) from None
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")
