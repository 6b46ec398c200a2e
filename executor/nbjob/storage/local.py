"""Local paths and file:// URLs: fetch returns the path as it is; writes are atomic."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

from nbjob.errors import InvalidInputError, StorageError

from .base import Backend, atomic_write


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
        atomic_write(local_path(url), data)

    def put_file(self, url: str, path: Path) -> None:
        target = local_path(url)
        if target.resolve() != path.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)

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
