"""One retry loop for every backend, on top of the clients' own (bounded) retries.

Each try that raises is classified by the backend (``Backend.classify``): permanent errors (no
such bucket, access denied, bad credentials) fail at once; transient ones (connection refused,
resets, 5xx, 429) are tried again with exponential backoff, ``Options.attempts`` tries in all.
What still fails raises ``StorageError`` with a one-line, credential-free reason.

``--storage-attempts`` (``NBJOB_STORAGE_ATTEMPTS``, default 5) sets the tries per operation
(the clients make at most ``CLIENT_TRIES`` of each request inside one). Time is bounded as
well: a request waits at most a sixth of ``--storage-timeout`` (default 60 s) for an answer,
and once the store has not answered for that long nothing new is tried: a black-holed endpoint
is exit 6 within it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from nbjob.errors import NbjobError, StorageError
from nbjob.logs import redact

from .base import Backend

BACKOFF_S = 0.5  # doubled after each failed try
RETRY_STATUS = (408, 429, 500, 502, 503, 504)

T = TypeVar("T")


def with_retries(backend: Backend, what: str, url: str, call: Callable[[], T]) -> T:
    """``call()``, retried while ``backend.classify`` calls its errors transient.

    Bounded in time too: once the store has failed to answer for ``backend.timeout`` seconds
    (counted across operations: a failing checkpoint counts for the final write), no new try
    starts that could end after that.
    """
    delay = BACKOFF_S
    tries = backend.options.attempts
    reason = "no answer"
    for attempt in range(1, tries + 1):
        ongoing = attempt > 1 or backend.outage_since is not None
        if ongoing and _outage(backend) + backend.try_bound > backend.timeout:
            raise StorageError(
                f"{what} {redact(url)} failed: the store has not answered for "
                f"{_outage(backend):.0f} s ({redact(reason)})"
            ) from None
        started = time.monotonic()
        try:
            value = call()
            backend.outage_since = None
            return value
        except NbjobError:
            raise
        except Exception as exc:
            transient, reason = backend.classify(exc)
            if not transient:
                backend.outage_since = None  # an answer, if a bad one
                raise StorageError(f"{what} {redact(url)} failed: {redact(reason)}") from None
            if backend.outage_since is None or started < backend.outage_since:
                backend.outage_since = started
            if attempt == tries:
                raise StorageError(
                    f"{what} {redact(url)} failed after {tries} tries: {redact(reason)}"
                ) from None
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


def _outage(backend: Backend) -> float:
    since = backend.outage_since
    return 0.0 if since is None else time.monotonic() - since
