"""Following a run's executor.log from outside: only the bytes that are new since the last read.

``LogFollower.read_new()`` is the one place ``nbjob watch`` reads the live log, so a change in
how the log is stored while the run goes (say, append-only segments) is a change here only.
Today the log is one object (``layout.LOG``) that grows during an attempt: a local file is read
from the last offset with a seek; an S3 object with a ranged GET (``Range: bytes=N-``), so a
poll costs the new bytes (plus one request), not the whole log. Other stores are read whole
and the follower keeps what is past its offset (their cost per poll is the log's size).

A log that became shorter than the offset (a new attempt truncated it) is read from the start.
Only complete lines are handed out; a partial last line waits for its end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nbjob.storage import Storage, is_local, local_path, scheme


@dataclass
class LogFollower:
    """Reads ``url`` (an executor.log) from where the last read stopped."""

    storage: Storage
    url: str
    offset: int = 0  # bytes of the log already handed out (complete lines)
    bytes_read: int = 0  # every byte read from the store, for the cost per poll
    _rest: bytes = field(default=b"", repr=False)  # a last line still being written

    def read_new(self) -> list[dict[str, Any]]:
        """The log events (JSON lines) written since the last call, in order."""
        data = self._read_from(self.offset + len(self._rest))
        if data is None:
            return []
        data, self._rest = self._rest + data, b""
        end = data.rfind(b"\n") + 1
        self._rest = data[end:]
        self.offset += end
        return [e for line in data[:end].splitlines() if (e := _event(line)) is not None]

    def _read_from(self, start: int) -> bytes | None:
        """The log's bytes from ``start``; None when there is no log (yet)."""
        if is_local(self.url):
            return self._local(start)
        if scheme(self.url) == "s3":
            return self._s3(start)
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

    def _s3(self, start: int) -> bytes | None:
        from botocore.exceptions import ClientError

        from nbjob.storage.base import split_url
        from nbjob.storage.retry import with_retries

        backend: Any = self.storage.backend(self.url)
        bucket, key = split_url(self.url, "an S3", "s3://bucket/prefix")

        def get() -> bytes | None:
            try:
                reply = backend.s3().get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-")
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code"))
                if code in ("NoSuchKey", "404", "NotFound"):
                    return None
                if code in ("InvalidRange", "416"):  # nothing new, or the log became shorter
                    return self._s3_shorter(backend, bucket, key, start)
                raise
            return bytes(reply["Body"].read())

        data = with_retries(backend, "read", self.url, get)
        if data is not None:
            self.bytes_read += len(data)
        return data

    def _s3_shorter(self, backend: Any, bucket: str, key: str, start: int) -> bytes:
        """No byte at ``start``: nothing new, unless the log is now shorter (read it whole)."""
        size = int(backend.s3().head_object(Bucket=bucket, Key=key)["ContentLength"])
        if size >= start:
            return b""
        self.offset, self._rest = 0, b""
        return bytes(backend.s3().get_object(Bucket=bucket, Key=key)["Body"].read())


def _event(line: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
