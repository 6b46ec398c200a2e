"""The places nbjob's log goes: a log file, the console. Writing never raises.

A write that fails (a full disk: ENOSPC, a quota, an I/O error; a console whose reader has
gone: EPIPE) is counted as dropped and remembered with its reason, so that ``logs.Sink`` can
tell the other places once and put the count in run.json: logging never fails a cell or the
run. A file is tried again at the next event (space may come back); a console whose reader has
gone is given up for good and pointed at /dev/null (``silence``).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import IO

__all__ = ["Console", "File", "Output", "silence", "why"]


class Output:
    """One place the log goes; ``write`` never raises (see the module's docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dropped = 0  # events not written
        self.error: str | None = None  # why the last write failed, until one succeeds
        self.gone = False  # never written to again

    def write(self, line: str) -> bool:
        """Write one event's ``line``; False when it was dropped."""
        if self.gone:
            self.dropped += 1
            return False
        try:
            self._write(line)
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed under us
            self.dropped += 1
            self.error = why(exc)
            self.gone = self._gone(exc)
            return False
        self.error = None
        return True

    def _write(self, line: str) -> None:
        raise NotImplementedError

    def _gone(self, exc: Exception) -> bool:
        return False

    def flush(self) -> None:
        """Nothing is buffered: each event is written at once."""

    def close(self) -> None:
        """Nothing to release by default."""


class File(Output):
    """A log file, written one event at a time without a buffer (the file holds every event
    up to the last, even after a kill). A line the disk could only partly take is cut off
    again, so the file stays whole JSON lines."""

    def __init__(self, path: Path, truncate: bool) -> None:
        super().__init__(str(path))
        self.raw: IO[bytes] | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Always appending (O_APPEND): after a cut-off line is taken out, the next event
            # goes at the new end, not at the old offset past it (a hole of NULs).
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
            self.raw = os.fdopen(os.open(path, flags, 0o666), "ab", buffering=0)
        except OSError as exc:  # no folder, no room for one: this place takes no event
            self.error, self.gone = why(exc), True

    def _write(self, line: str) -> None:
        assert self.raw is not None  # else gone
        data = memoryview(line.encode("utf-8", "replace"))
        written = 0
        try:
            while written < len(data):
                n = self.raw.write(data[written:])
                if not n:  # a descriptor that takes nothing now (non-blocking)
                    raise BlockingIOError(errno.EAGAIN, "the log file takes nothing now")
                written += n
        except OSError:
            if written:  # the start of the line went in: take it out again
                with contextlib.suppress(OSError):
                    end = os.fstat(self.raw.fileno()).st_size
                    os.ftruncate(self.raw.fileno(), max(0, end - written))
            raise

    def close(self) -> None:
        if self.raw is not None:
            with contextlib.suppress(OSError):
                self.raw.close()


class Console(Output):
    """stderr: JSON lines or readable lines. A closed pipe (``nbjob run ... | head -1``, a log
    shipper that went away) is replaced by /dev/null, so neither nbjob nor a library writing
    to stderr, nor Python's own exit, meets the broken pipe again."""

    def __init__(self, stream: IO[str], json_lines: bool) -> None:
        super().__init__("stderr")
        self.stream, self.json_lines = stream, json_lines

    def _write(self, line: str) -> None:
        self.stream.write(line)
        self.stream.flush()

    def _gone(self, exc: Exception) -> bool:
        if isinstance(exc, BrokenPipeError):
            silence(self.stream)
            return True
        return isinstance(exc, ValueError)


def silence(stream: IO[str]) -> None:
    """Point ``stream``'s file descriptor at /dev/null (its reader has gone): what is still
    buffered, and whatever writes to it later, then goes nowhere instead of failing."""
    with contextlib.suppress(OSError, ValueError):
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)


def why(exc: Exception) -> str:
    """A failed write's reason in one line: the OS's words and the errno."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} (errno {exc.errno})"
    return str(exc) or type(exc).__name__
