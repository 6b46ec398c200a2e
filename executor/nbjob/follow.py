"""Following a run's executor.log from outside: only the bytes that are new since the last read.

``LogFollower.read_new()`` is the one place ``nbjob watch`` reads the live log, so a change in
how the log is stored while the run goes (say, append-only segments) is a change here only.
Today the log is one object (``layout.LOG``) that grows during an attempt: a local file is read
from the last offset with a seek; an object (S3, GCS, Azure Blob) with a ranged GET
(``Range: bytes=N-``), so a poll costs the new bytes (plus one request), not the whole log. A
store without ranges (``https://``) is read whole and the follower keeps what is past its
offset.

A log that became shorter than the offset (a new attempt truncated it) is read from the start.
Only complete lines are handed out; a partial last line waits for its end.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nbjob.storage import Storage, is_local, local_path, scheme


@dataclass
class LogFollower:
    """Reads ``url`` (an executor.log) from where the last read stopped."""

    storage: Storage
    url: str
    tail: int | None = None  # the first read starts this many bytes before the end (None: 0)
    offset: int = 0  # bytes of the log already handed out (complete lines)
    bytes_read: int = 0  # every byte read from the store, for the cost per poll
    _rest: bytes = field(default=b"", repr=False)  # a last line still being written
    _started: bool = field(default=False, repr=False)

    def read_new(self) -> list[dict[str, Any]]:
        """The log events (JSON lines) written since the last call, in order (the first call
        with ``tail``: those of the log's last ``tail`` bytes only)."""
        if self._started:
            data = self._read_from(self.offset + len(self._rest))
        else:
            data = self._first_read()
        if data is None:
            return []
        data, self._rest = self._rest + data, b""
        end = data.rfind(b"\n") + 1
        self._rest = data[end:]
        self.offset += end
        return [e for line in data[:end].splitlines() if (e := _event(line)) is not None]

    def _first_read(self) -> bytes | None:
        """The first read: from the start, or with ``tail`` from a line's start ``tail`` bytes
        before the end (a watcher joining a long run does not read its whole log)."""
        size = 0 if self.tail is None else self._size()
        if size is None:
            return None  # no log yet
        start = max(0, size - (self.tail or 0))
        if start == 0:
            data = self._read_from(0)
            self._started = data is not None
            return data
        data = self._read_from(start - 1)
        if data is None:
            return None
        self._started = True
        cut = data.find(b"\n") + 1  # the line the cut falls into is dropped
        self.offset = start - 1 + (cut or len(data))
        return data[cut:] if cut else b""

    def _size(self) -> int | None:
        """The log's size in bytes (None: no log yet)."""
        if is_local(self.url):
            try:
                return local_path(self.url).stat().st_size
            except FileNotFoundError:
                return None
        sizer = _SIZES.get(scheme(self.url))
        if sizer is None:
            data = self.storage.get_bytes(self.url)
            return None if data is None else len(data)
        from nbjob.storage.retry import with_retries

        backend: Any = self.storage.backend(self.url)
        return with_retries(backend, "read", self.url, lambda: sizer(backend, self.url))

    def _read_from(self, start: int) -> bytes | None:
        """The log's bytes from ``start``; None when there is no log (yet)."""
        if is_local(self.url):
            return self._local(start)
        ranged = _RANGED.get(scheme(self.url))
        if ranged is not None:
            return self._ranged(ranged, start)
        data = self.storage.get_bytes(self.url)
        if data is None:
            return None
        self.bytes_read += len(data)
        return self._tail(data, start, len(data))

    def _tail(self, data: bytes, start: int, size: int) -> bytes:
        if size < start:  # the log was rewritten shorter: a new attempt
            self.offset, self._rest = 0, b""
            return data
        return data[start:]

    def _local(self, start: int) -> bytes | None:
        path = local_path(self.url)
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                if size < start:
                    self.offset, self._rest, start = 0, b"", 0
                f.seek(start)
                data = f.read()
        except FileNotFoundError:
            return None
        self.bytes_read += len(data)
        return data

    def _ranged(self, read: RangedRead, start: int) -> bytes | None:
        """The bytes from ``start`` with the store's ranged read, under its retry loop; a log
        now shorter than ``start`` (a new attempt's) is read whole, from the start."""
        from nbjob.storage.retry import with_retries

        backend: Any = self.storage.backend(self.url)
        data = with_retries(backend, "read", self.url, lambda: read(backend, self.url, start))
        if isinstance(data, _Shorter):
            self.offset, self._rest = 0, b""
            data = with_retries(backend, "read", self.url, lambda: read(backend, self.url, 0))
        if isinstance(data, bytes):
            self.bytes_read += len(data)
            return data
        return None


class _Shorter:
    """A ranged read found the object shorter than the offset."""


SHORTER = _Shorter()
RangedRead = Callable[[Any, str, int], "bytes | _Shorter | None"]


def _s3_from(backend: Any, url: str, start: int) -> bytes | _Shorter | None:
    from botocore.exceptions import ClientError

    from nbjob.storage.base import split_url

    bucket, key = split_url(url, "an S3", "s3://bucket/prefix")
    try:
        reply = backend.s3().get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-")
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in ("NoSuchKey", "404", "NotFound"):
            return None
        if code in ("InvalidRange", "416"):  # nothing new, or the log became shorter
            size = int(backend.s3().head_object(Bucket=bucket, Key=key)["ContentLength"])
            return b"" if size >= start else SHORTER
        raise
    return bytes(reply["Body"].read())


def _gcs_from(backend: Any, url: str, start: int) -> bytes | _Shorter | None:
    from google.api_core.exceptions import NotFound, RequestRangeNotSatisfiable

    blob = backend._blob(url)
    try:
        data = bytes(blob.download_as_bytes(start=start, retry=None, timeout=backend.timeouts))
    except NotFound:
        return None
    except RequestRangeNotSatisfiable:
        data = b""
    if data or not start:
        return data
    # Nothing from ``start`` (GCS answers 416; some emulators an empty body): shorter?
    blob.reload(retry=None, timeout=backend.timeouts)
    return b"" if (blob.size or 0) >= start else SHORTER


def _azure_from(backend: Any, url: str, start: int) -> bytes | _Shorter | None:
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    blob = backend._blob(url)
    try:
        return bytes(blob.download_blob(offset=start).readall())
    except ResourceNotFoundError:
        return None
    except HttpResponseError as exc:
        if exc.status_code != 416:
            raise
        size = int(blob.get_blob_properties().size)
        return b"" if size >= start else SHORTER


def _s3_size(backend: Any, url: str) -> int | None:
    from botocore.exceptions import ClientError

    from nbjob.storage.base import split_url

    bucket, key = split_url(url, "an S3", "s3://bucket/prefix")
    try:
        return int(backend.s3().head_object(Bucket=bucket, Key=key)["ContentLength"])
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise


def _gcs_size(backend: Any, url: str) -> int | None:
    from google.api_core.exceptions import NotFound

    blob = backend._blob(url)
    try:
        blob.reload(retry=None, timeout=backend.timeouts)
    except NotFound:
        return None
    return int(blob.size or 0)


def _azure_size(backend: Any, url: str) -> int | None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return int(backend._blob(url).get_blob_properties().size)
    except ResourceNotFoundError:
        return None


_SIZES: dict[str, Callable[[Any, str], int | None]] = {
    "s3": _s3_size,
    "gs": _gcs_size,
    **dict.fromkeys(("az", "abfs", "abfss"), _azure_size),
}
_RANGED: dict[str, RangedRead] = {
    "s3": _s3_from,
    "gs": _gcs_from,
    **dict.fromkeys(("az", "abfs", "abfss"), _azure_from),
}


def _event(line: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
