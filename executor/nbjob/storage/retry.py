"""One retry loop for every backend, on top of the clients' own (bounded) retries.

Each try that raises is classified by the backend (``Backend.classify``): permanent errors (no
such bucket, access denied, bad credentials) fail at once; transient ones (connection refused,
resets, 5xx, 429) are tried again with exponential backoff, ``Options.attempts`` tries in all.
What still fails raises ``StorageError`` with a one-line, credential-free reason.

A local disk that cannot take what is downloaded (no space, a quota, a read-only file system:
``errno`` ENOSPC, EDQUOT, EROFS, wherever it sits in the exception's chain) is not the store's
fault and no retry helps: it fails at once as ``EnvironmentUnfitError`` (exit 7).

``--storage-attempts`` (``NBJOB_STORAGE_ATTEMPTS``, default 5) sets the tries per operation
(the clients make at most ``CLIENT_TRIES`` of each request inside one). Time is bounded as
well: a request waits at most a sixth of ``--storage-timeout`` (default 60 s) for an answer,
and once the store has not answered for that long nothing new is tried: a black-holed endpoint
is exit 6 within it.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import TypeVar

from nbjob.errors import EnvironmentUnfitError, NbjobError, StorageError
from nbjob.logs import redact

from .base import Backend

BACKOFF_S = 0.5  # doubled after each failed try
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
LOCAL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # this machine's disk: never retried

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
            if (disk := local_disk_error(exc)) is not None:
                backend.outage_since = None  # the store answered; this machine cannot keep it
                raise EnvironmentUnfitError(
                    f"{what} {redact(url)} failed: this machine's disk cannot take it "
                    f"({disk.strerror or disk})"
                ) from None
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


def local_disk_error(exc: BaseException) -> OSError | None:
    """The OSError for a full or read-only local disk in ``exc``'s chain (clients wrap it)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in LOCAL_DISK:
            return current
        current = current.__cause__ or current.__context__
    return None


def _outage(backend: Backend) -> float:
    since = backend.outage_since
    return 0.0 if since is None else time.monotonic() - since
