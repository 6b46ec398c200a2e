"""Local paths and file:// URLs: fetch returns the path as it is; writes are atomic.

A write goes to a temporary file with a short name (``.nbjob-`` and 8 characters, whatever the
target's name: a notebook may be named with up to 255 bytes) and is then renamed over the
target. On a full disk (or quota), ``run.json`` — the record that says how the run ended,
whose older version would say ``running`` — is overwritten in place instead when it fits in
the space that older version already holds: its end must get through when nothing else can.
Other files are not (a stale notebook is at least a whole one).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from nbjob.errors import InvalidInputError, StorageError

from .base import TEMP_PREFIX, Backend, atomic_write


def local_path(url: str) -> Path:
    """The path of a local path or file:// URL."""
    if "://" in url and urlsplit(url).scheme.lower() == "file":
        return Path(unquote(urlsplit(url).path))
    return Path(url)


class LocalBackend(Backend):
    def fetch(self, url: str, dest_dir: Path) -> Path:
        path = local_path(url)
        if not path.exists():
            raise InvalidInputError(f"source not found: {path}")
        return path

    def put_bytes(self, url: str, data: bytes, content_type: str = "application/json") -> None:
        target = local_path(url)
        try:
            atomic_write(target, data)
        except OSError as exc:
            if exc.errno not in FULL or target.name not in IN_PLACE:
                raise
            if not _overwrite_in_place(target, data):
                raise

    def put_file(self, url: str, path: Path, content_type: str | None = None) -> None:
        target = local_path(url)
        if target.resolve() != path.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
            os.close(fd)
            try:
                shutil.copyfile(path, tmp)
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def get_bytes(self, url: str) -> bytes | None:
        path = local_path(url)
        return path.read_bytes() if path.is_file() else None

    def list_names(self, url: str) -> list[str]:
        root = local_path(url)
        if not root.is_dir():
            return []
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def create_exclusive(self, url: str, data: bytes) -> bool:
        """``O_CREAT | O_EXCL``: one creator wins, on NFS (v3+) too; the data is then written."""
        path = local_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True

    def remove(self, url: str) -> None:
        """Remove the file, and its folder once empty (a folder is not a prefix: it stays)."""
        path = local_path(url)
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()

    def check_writable(self, url: str) -> None:
        try:
            local_path(url).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create results folder {url}: {exc.strerror}") from None


FULL = (errno.ENOSPC, errno.EDQUOT)  # no room: the disk or the user's quota
IN_PLACE = ("run.json",)  # overwritten in place on a full disk (``nbjob.layout.RUN_JSON``)


def _overwrite_in_place(path: Path, data: bytes) -> bool:
    """Write ``data`` over ``path`` where it fits in the blocks the file already holds (no new
    space is needed then); False when it does not fit. Not atomic: the fallback of a full disk
    only, for a file whose stale content would say the run is still running."""
    try:
        held = path.stat().st_blocks * 512
    except OSError:
        return False
    if len(data) > held:
        return False
    with path.open("r+b") as f:
        f.write(data)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())
    return True
