"""The environment cache (``--env-cache URL``): overlays kept as ``<key>.tar.gz`` at any store.

``nbjob.environment`` makes the overlays and their keys; this module moves them. An overlay is
unpacked at the path it was made at (a venv is not relocatable), after a download into a
temporary folder beside it; one file lock per overlay on a node keeps shards from making or
unpacking the same one twice. A cache that fails is a miss, never the run's end.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nbjob import logs
from nbjob.storage import Storage, join


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One builder or unpacker per overlay on this node (shards sharing a node wait)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _archive_url(cache_url: str, key: str) -> str:
    return join(cache_url, f"{key}.tar.gz")


def download(storage: Storage, cache_url: str, key: str, path: Path, marker: str, log: Any) -> bool:
    """Unpack the cached overlay at ``path``; False when there is none, it cannot be read, or
    it lacks the ``marker`` file of a complete overlay."""
    started = time.monotonic()
    try:
        if f"{key}.tar.gz" not in storage.list_names(cache_url):
            return False
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            archive = storage.fetch(_archive_url(cache_url, key), Path(tmp))
            size = archive.stat().st_size
            part = Path(tmp) / "overlay"
            with tarfile.open(archive, "r:gz") as tar:
                _extract(tar, part)
            if not (part / marker).is_file():
                return False
            shutil.rmtree(path, ignore_errors=True)
            part.rename(path)
    except Exception as exc:  # a cache that fails is a miss, never the run's end
        log.warning("env_cache_unreadable", error=logs.redact(str(exc))[:300])
        return False
    log.info("env_cache_hit", bytes=size, seconds=round(time.monotonic() - started, 3))
    return True


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    if hasattr(tarfile, "tar_filter"):  # refuses absolute and escaping names
        tar.extractall(dest, filter="tar")
    else:  # pragma: no cover - Python without extraction filters
        tar.extractall(dest)


def upload(storage: Storage, cache_url: str, key: str, path: Path, log: Any) -> None:
    """Keep the overlay as ``<key>.tar.gz`` at the cache; a failure is logged, never fatal."""
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            archive = Path(tmp) / f"{key}.tar.gz"
            with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
                tar.add(path, arcname=".")
            storage.put_file(_archive_url(cache_url, key), archive)
            size = archive.stat().st_size
    except Exception as exc:
        log.warning("env_cache_not_written", error=logs.redact(str(exc))[:300])
        return
    log.info("env_cache_written", bytes=size, seconds=round(time.monotonic() - started, 3))
