"""Files to and from a remote kernel: the server's Contents API, or through the kernel itself.

Jupyter Server has a Contents API rooted where kernels start (``PUT``/``GET /api/contents``,
base64 for bytes); Enterprise Gateway has none, so files then travel inside silent executes in
base64 chunks, in code the kernel's language writes (its ``file_transfer`` capability).
Contents API paths are relative to the server's root and use ``/``; in-kernel paths are
absolute paths on the kernel's machine.
"""

from __future__ import annotations

import base64
import posixpath
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbjob.kernel.base import KernelSession
    from nbjob.kernel.rest import GatewayAPI

CHUNK = 1 << 20  # bytes per in-kernel message (base64 makes it 1.4 MB on the wire)


def local_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, file) for each regular file under ``root``, sorted."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path.relative_to(root).as_posix(), path


def hidden(relative: str) -> bool:
    """The Contents API refuses names starting with a dot by default."""
    return any(part.startswith(".") for part in relative.split("/"))


# -- the Contents API ---------------------------------------------------------------------------


def contents_mkdir(api: GatewayAPI, path: str) -> None:
    """Create ``path`` and its parents (existing folders are fine)."""
    parts = [p for p in path.split("/") if p]
    for i in range(1, len(parts) + 1):
        api.request("PUT", "api/contents/" + "/".join(parts[:i]), {"type": "directory"})


def contents_put(api: GatewayAPI, path: str, data: bytes) -> None:
    body = {
        "type": "file",
        "format": "base64",
        "content": base64.b64encode(data).decode("ascii"),
    }
    api.request("PUT", "api/contents/" + path, body)


def contents_upload(api: GatewayAPI, remote_dir: str, files: list[tuple[str, Path]]) -> None:
    made = {remote_dir}
    for relative, path in files:
        folder = posixpath.dirname(posixpath.join(remote_dir, relative))
        if folder not in made:
            contents_mkdir(api, folder)
            made.add(folder)
        contents_put(api, posixpath.join(remote_dir, relative), path.read_bytes())


def contents_download(api: GatewayAPI, remote_dir: str, dest: Path, deadline: float) -> list[str]:
    """Copy every file under ``remote_dir`` into ``dest``; the relative names copied."""
    copied: list[str] = []
    pending = [remote_dir]
    while pending and time.monotonic() < deadline:
        folder = pending.pop()
        model = api.request("GET", "api/contents/" + folder, query={"content": "1"})
        for item in (model or {}).get("content") or []:
            if item.get("type") == "directory":
                pending.append(item["path"])
                continue
            if time.monotonic() >= deadline:
                break
            got = api.request(
                "GET",
                "api/contents/" + item["path"],
                query={"content": "1", "format": "base64", "type": "file"},
            )
            relative = posixpath.relpath(item["path"], remote_dir)
            _write(dest, relative, base64.b64decode(got.get("content") or ""))
            copied.append(relative)
    return sorted(copied)


# -- through the kernel -------------------------------------------------------------------------


def _check(reply: dict[str, Any], what: str) -> None:
    if reply.get("status") != "ok":
        raise OSError(f"{what}: {reply.get('ename', 'error')}: {reply.get('evalue', '')}")


def kernel_upload(session: KernelSession, remote_dir: str, files: list[tuple[str, Path]]) -> None:
    """Write ``files`` under ``remote_dir`` on the kernel's machine, CHUNK bytes a request."""
    lang = session.lang
    _check(session.run_silent(lang.put_setup(), {}), "in-kernel upload")
    try:
        for relative, path in files:
            target = posixpath.join(remote_dir, relative)
            with path.open("rb") as f:
                append = False
                while True:
                    data = f.read(CHUNK)
                    if not data and append:
                        break
                    encoded = base64.b64encode(data).decode("ascii")
                    reply = session.run_silent(lang.put_chunk(target, encoded, append), {})
                    _check(reply, f"in-kernel upload of {relative}")
                    append = True
                    if len(data) < CHUNK:
                        break
    finally:
        session.execute(lang.forget("_nbjob_put"), silent=True, store_history=False)


def kernel_download(
    session: KernelSession, remote_dir: str, dest: Path, deadline: float
) -> list[str]:
    """Copy every file under ``remote_dir`` on the kernel's machine into ``dest``."""
    lang = session.lang
    listing = session.silent_value(lang.list_files(remote_dir))
    copied: list[str] = []
    for relative, size in listing:
        target = posixpath.join(remote_dir, relative)
        chunks = []
        for offset in range(0, max(int(size), 1), CHUNK):
            if time.monotonic() >= deadline:
                return copied
            code = lang.get_chunk(target, offset, CHUNK)
            chunks.append(base64.b64decode(session.silent_value(code)))
        _write(dest, relative, b"".join(chunks))
        copied.append(relative)
    return copied


def _write(dest: Path, relative: str, data: bytes) -> None:
    path = (dest / relative).resolve()
    if not path.is_relative_to(dest.resolve()):
        raise OSError(f"refusing artifact path outside the artifacts folder: {relative!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
