"""Artifacts stream to the destination while the run goes on.

A background thread scans ``$NBJOB_ARTIFACTS_DIR`` every ``SCAN_S`` seconds. A file is sent
once it has stopped changing: its size and modification time are the same in two scans in a
row (so within about a second of its last write), or at once when it was renamed into place
(a new inode under the name, or a status change after its last write). A file replaced often
may get its old inode number back (ext4 and XFS reuse a freed one at once: A, B, A, ...), with
its status change in the same clock tick as its write: the inode's generation, given anew with
each reuse (``generation``), tells it from a file rewritten in place. Names that look
temporary (``.*``, ``*.tmp``, ``*.part``, ``*.partial``, ``*.crdownload``) are never sent: write
to ``model.pt.tmp`` and ``os.replace`` it to ``model.pt``, and ``model.pt`` is sent at the next
scan and never half-written, however often it is replaced. A file rewritten in place more often
than every half second waits for a pause (or the end). Uploads never
pile up: each scan sends what is ready (a few files at once, big files in parts) and the next
scan starts when those are done; a file changed again meanwhile is sent again.

Order: files above ``CHUNK_THRESHOLD`` (sent in parts) start first, then the rest, newest first
in each group. A big file is the longest to send, and its parts have threads of their own (the
backend's transfer manager), so starting it first overlaps it, and its final request (S3's
CompleteMultipartUpload), with the small files on the other workers instead of leaving it
alone at the end (longest first; bench/artifacts.py, 1 GB to moto: 8-12 % sooner than newest
first in rounds interleaved with it). At most ``WORKERS`` files and ``PART_THREADS`` parts are
in flight, each read from its file as it is sent (no part is held in memory whole).

``flush`` sends what is left at the end (or within a stop's grace, in that order). A node lost
without warning loses at most the files of the last scan or two.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nbjob import logs
from nbjob.storage import Storage, join
from nbjob.storage.base import CHUNK_THRESHOLD

SCAN_S = 0.5
WORKERS = 8  # files sent at once (small files are latency-bound); a big one holds one worker
_TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")

Signature = tuple[int, int, int]  # (size, mtime_ns, inode)
FS_IOC_GETVERSION = 0x80087601  # the inode's generation (linux/fs.h: _IOR('v', 1, long))


def is_temporary(name: str) -> bool:
    last = name.rsplit("/", 1)[-1]
    return last.startswith(".") or last.endswith(_TEMP_SUFFIXES)


def scan(folder: Path, renamed: set[str] | None = None) -> dict[str, Signature]:
    """Every file under ``folder`` (relative POSIX names): size, mtime, inode.

    ``renamed`` receives the names whose status changed after their last write (ctime > mtime:
    renamed into place, so complete now).
    """
    found: dict[str, Signature] = {}
    if not folder.is_dir():
        return found
    for path in folder.rglob("*"):
        try:
            st = path.stat()
        except OSError:
            continue  # removed or renamed since the listing
        if path.is_file():
            name = path.relative_to(folder).as_posix()
            if not is_temporary(name):
                found[name] = (st.st_size, st.st_mtime_ns, st.st_ino)
                if renamed is not None and st.st_ctime_ns > st.st_mtime_ns:
                    renamed.add(name)
    return found


class ArtifactStream:
    """Sends new and changed files of ``folder`` to ``dest/artifacts/`` in the background."""

    def __init__(self, storage: Storage, base_url: str, folder: Path, interval: float = SCAN_S):
        self.storage = storage
        self.base_url = base_url  # e.g. s3://bucket/run/artifacts
        self.folder = folder
        self.interval = interval
        self.sent: dict[str, Signature] = {}  # what the destination holds
        self._last: dict[str, Signature] = {}  # the previous scan
        self._generations: dict[str, int | None] = {}  # of the files it saw changed in place
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one batch at a time (the loop or flush)
        self._warned = False
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="artifact")
        self._thread = threading.Thread(target=self._loop, name="artifacts", daemon=True)

    def start(self, already_there: Iterable[str] = ()) -> ArtifactStream:
        """Scan from now on; ``already_there``: files the destination holds as they are."""
        for name in already_there:
            if (sig := scan_one(self.folder, name)) is not None:
                self.sent[name] = sig
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            ready = self.ready()
            with self._lock:
                if not self._stop.is_set():
                    self._send(ready)

    def ready(self) -> dict[str, Signature]:
        """One scan: the files that may be sent now (``_ready``)."""
        renamed: set[str] = set()
        now = scan(self.folder, renamed)
        generations = {n: generation(self.folder / n) for n in now if self._in_place(n, now[n])}
        ready = {n: s for n, s in now.items() if self._ready(n, s, n in renamed, generations)}
        self._last, self._generations = now, generations
        return ready

    def _in_place(self, name: str, sig: Signature) -> bool:
        """Changed since the last scan under the same inode number."""
        before = self._last.get(name)
        return before is not None and before != sig and before[2] == sig[2]

    def _ready(
        self, name: str, sig: Signature, renamed: bool, generations: dict[str, int | None]
    ) -> bool:
        """Settled (same in two scans), or complete because it was renamed into place: a new
        inode number, or the same number with another generation than at the last scan."""
        before = self._last.get(name)
        if before == sig or renamed or (before is not None and before[2] != sig[2]):
            return True
        now, was = generations.get(name), self._generations.get(name)
        return now is not None and was is not None and now != was

    def pending(self, files: dict[str, Signature]) -> list[str]:
        """Names whose current state the destination lacks: big ones (sent in parts) first,
        then the rest, newest first in each group."""
        todo = [n for n, s in files.items() if self.sent.get(n) != s]
        return sorted(
            todo, key=lambda n: (files[n][0] > CHUNK_THRESHOLD, files[n][1]), reverse=True
        )

    def _send(self, files: dict[str, Signature], raise_errors: bool = False) -> int:
        """Upload the pending ones of ``files`` (a few at once); how many were sent."""
        names = self.pending(files)
        futures = {n: self._pool.submit(self._put, n) for n in names}
        count = 0
        for name, future in futures.items():
            try:
                future.result()
            except Exception as exc:
                if raise_errors:
                    raise
                if not self._warned:
                    logs.get_logger().warning("artifact_upload_failed", reason=str(exc)[:300])
                    self._warned = True
                continue
            if scan_one(self.folder, name) == files[name]:  # unchanged while it was sent
                self.sent[name] = files[name]
            count += 1
        return count

    def _put(self, name: str) -> None:
        self.storage.put_file(join(self.base_url, name), self.folder / name)

    def flush(self) -> int:
        """Stop scanning; send every file the destination lacks (``pending``'s order). Errors
        raise."""
        self._stop.set()
        with self._lock:
            return self._send(scan(self.folder), raise_errors=True)

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


def generation(path: Path) -> int | None:
    """The inode's generation number (ext4, XFS, btrfs), given anew each time an inode number
    is reused; None where the filesystem keeps none (tmpfs: its numbers are never reused) or
    the file cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        number: int = struct.unpack("l", fcntl.ioctl(fd, FS_IOC_GETVERSION, bytes(8)))[0]
        return number
    except OSError:
        return None
    finally:
        os.close(fd)


def scan_one(folder: Path, name: str) -> Signature | None:
    try:
        st = (folder / name).stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)
