"""A bundle on disk: safe unpacking of zip / tar.gz, its manifest, and which notebook runs.

A SOURCE is a notebook file, a folder, or an archive. Archives are unpacked into a private
folder, refusing anything that could escape it or exhaust the machine: absolute paths, ``..``,
links, device files, FIFOs, more than ``max_files`` entries or ``max_bytes`` unpacked bytes
(counted as written, so a lying header does not help). An archive holding a single top folder
is entered, so zipping a project folder works.

The notebook is, in order: ``--notebook``, the manifest's ``notebook``, or the single notebook
at the bundle root. The manifest (``nbjob.json`` / ``nbjob.yaml``, written by ``nbjob pack``)
may also give default ``parameters`` and a ``kernel``.

Unpacking keeps some of the work folder's disk free for the run itself (``reserve``): 1 MiB
plus a tenth of what the bundle declares it unpacks to (a tar's own size, as it declares no
total), at most 5 % of the file system's size and at most 256 MiB. A bundle that does not fit
with it, or a disk that fills up while unpacking, is ``EnvironmentUnfitError`` (exit 7: this
machine, not the bundle) with the numbers: needed and free.
"""

from __future__ import annotations

import errno
import json
import lzma
import shutil
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, Any

import yaml

from nbjob.errors import BundleError, EnvironmentUnfitError

MANIFEST_NAMES = ("nbjob.json", "nbjob.yaml", "nbjob.yml")
_CHUNK = 1 << 20


@dataclass
class Bundle:
    root: Path  # the bundle's top folder
    notebook: Path  # absolute path of the notebook to run
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.manifest.get("parameters") or {})

    @property
    def kernel(self) -> str | None:
        return self.manifest.get("kernel")

    @property
    def relative_notebook(self) -> str:
        return self.notebook.relative_to(self.root).as_posix()


# -- unpacking ---------------------------------------------------------------------------------


MAX_RATIO = 100  # unpacked bytes per compressed byte, beyond which an archive is a bomb
RATIO_FLOOR = 64 << 20  # ratios are judged once this much is unpacked (or declared)
DISK_RESERVE = 256 << 20  # at most this much free disk is left untouched by unpacking
RESERVE_MIN = 1 << 20  # at least this much (plus a tenth of the bundle)
RESERVE_SHARE = 0.05  # of the file system's size, at most
_DISK_CHECK_EVERY = 32 << 20
_FULL = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def reserve(path: Path, declared: int) -> int:
    """The free disk unpacking leaves untouched at ``path``, for a bundle that declares
    ``declared`` unpacked bytes: it scales with both, so a small bundle runs on a small disk."""
    size = shutil.disk_usage(path).total
    return int(min(DISK_RESERVE, RESERVE_SHARE * size, RESERVE_MIN + declared / 10))


def size_text(n: float) -> str:
    """``n`` bytes for a person: ``803 B``, ``1.0 MiB``, ``2.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _no_room(dest: Path, needed: int, free: int, detail: str) -> EnvironmentUnfitError:
    """The work folder's disk cannot take the bundle: exit 7, with the numbers."""
    return EnvironmentUnfitError(
        f"the work folder {dest} has no room for the bundle: {size_text(needed)} needed "
        f"({detail}), {size_text(free)} free",
        needed=needed,
        free=free,
    )


class _Budget:
    def __init__(self, max_files: int, max_bytes: int, dest: Path) -> None:
        self.max_files, self.max_bytes = max_files, max_bytes
        self.files = self.bytes = 0
        self.dest = dest
        self.names: set[Path] = set()
        self.consumed: Callable[[], int] | None = None  # compressed bytes read so far
        self._next_disk_check = 0
        self.reserve = reserve(dest, 0)  # until the bundle says what it holds

    def new_file(self, target: Path, name: str) -> None:
        if target in self.names:
            raise BundleError(f"bundle holds {name!r} twice; entry names must be unique")
        self.names.add(target)

    def declared(self, total: int) -> None:
        """Before unpacking: what the archive says it holds must fit the limit and the disk."""
        if total > self.max_bytes:
            raise BundleError(
                f"bundle unpacks to more than {self.max_bytes} bytes (limit: --max-bundle-bytes)"
            )
        self.reserve = reserve(self.dest, total)
        free = free_bytes(self.dest)
        if total + self.reserve > free:
            detail = f"{size_text(total)} unpacked + {size_text(self.reserve)} kept free"
            raise _no_room(self.dest, total + self.reserve, free, detail)

    def _consumed(self) -> int:
        """Compressed bytes read so far (huge when unknown: no ratio check)."""
        return max(1, self.consumed()) if self.consumed is not None else 1 << 62

    def _check(self) -> None:
        if self.bytes > self.max_bytes:
            raise BundleError(
                f"bundle unpacks to more than {self.max_bytes} bytes (limit: --max-bundle-bytes)"
            )
        if self.bytes > RATIO_FLOOR and self.bytes > MAX_RATIO * self._consumed():
            raise BundleError(f"bundle expands more than {MAX_RATIO} times: a compression bomb")
        if self.bytes >= self._next_disk_check:
            self._next_disk_check = self.bytes + _DISK_CHECK_EVERY
            free = free_bytes(self.dest)
            if free < self.reserve:
                detail = f"kept free, with {size_text(self.bytes)} unpacked so far"
                raise _no_room(self.dest, self.reserve, free, detail)

    def entry(self) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise BundleError(
                f"bundle has more than {self.max_files} files (limit: --max-bundle-files)"
            )

    def copy(self, src: IO[bytes], target: Path) -> None:
        with target.open("wb") as out:
            while chunk := src.read(_CHUNK):
                self.bytes += len(chunk)
                self._check()
                out.write(chunk)


def _safe_target(dest: Path, name: str) -> Path | None:
    """Where ``name`` goes under ``dest``; None for the root itself; BundleError if unsafe."""
    if "\x00" in name or "\\" in name:
        raise BundleError(f"bundle entry {name!r} has an invalid name")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and ":" in path.parts[0]):
        raise BundleError(f"bundle entry {name!r} has an absolute path")
    if ".." in path.parts:
        raise BundleError(f"bundle entry {name!r} points outside the bundle")
    parts = [p for p in path.parts if p not in ("", ".")]
    return dest.joinpath(*parts) if parts else None


def _check_kind(name: str, mode: int) -> None:
    if stat.S_ISLNK(mode):
        raise BundleError(f"bundle entry {name!r} is a link; links are not allowed")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise BundleError(f"bundle entry {name!r} is a device or FIFO; not allowed")


def _place(
    budget: _Budget,
    dest: Path,
    name: str,
    is_dir: bool,
    source: Callable[[], IO[bytes] | None],
    executable: bool,
) -> None:
    """Create one checked entry under ``dest``: a folder, or a file copied within budget."""
    target = _safe_target(dest, name)
    if target is None:
        return
    if is_dir:
        target.mkdir(parents=True, exist_ok=True)
        return
    budget.new_file(target, name)
    src = source()
    if src is None:
        raise BundleError(f"bundle entry {name!r} is not a regular file")
    target.parent.mkdir(parents=True, exist_ok=True)
    with src:
        budget.copy(src, target)
    target.chmod(0o755 if executable else 0o644)


def _unpack_zip(archive: Path, dest: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:  # zipfile never reads past an entry's declared size
            ratio = info.file_size / max(1, info.compress_size)
            if info.file_size > RATIO_FLOOR // 64 and ratio > MAX_RATIO:
                raise BundleError(
                    f"bundle entry {info.filename!r} expands {ratio:.0f} times: a compression bomb"
                )
        budget.declared(sum(i.file_size for i in infos))
        for info in infos:
            budget.entry()
            mode = info.external_attr >> 16
            _check_kind(info.filename, mode)
            if info.flag_bits & 0x1:
                raise BundleError(f"bundle entry {info.filename!r} is encrypted; not supported")
            _place(
                budget,
                dest,
                info.filename,
                info.is_dir(),
                partial(zf.open, info),
                bool(mode & 0o111),
            )


def _unpack_tar(archive: Path, dest: Path, budget: _Budget) -> None:
    with tarfile.open(archive, mode="r:*") as tf:
        raw = getattr(tf.fileobj, "fileobj", None) or getattr(tf.fileobj, "_fp", None)
        if raw is not None and hasattr(raw, "tell"):  # gzip / xz: the compressed position
            budget.consumed = raw.tell
        for member in tf:
            budget.entry()
            if member.issym() or member.islnk():
                raise BundleError(f"bundle entry {member.name!r} is a link; links are not allowed")
            if member.isdev() or member.isfifo():
                raise BundleError(f"bundle entry {member.name!r} is a device or FIFO; not allowed")
            if not (member.isdir() or member.isfile()):
                raise BundleError(f"bundle entry {member.name!r} is not a regular file")
            _place(
                budget,
                dest,
                member.name,
                member.isdir(),
                partial(tf.extractfile, member),
                bool(member.mode & 0o111),
            )


def archive_kind(path: Path) -> str | None:
    """'zip', 'tar' or None, from the file's first bytes rather than its name."""
    with path.open("rb") as f:
        head = f.read(4)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or (path.suffix != ".ipynb" and tarfile.is_tarfile(path)):
        return "tar"
    return None


def unpack(archive: Path, dest: Path, max_files: int, max_bytes: int) -> None:
    """Unpack ``archive`` into the empty folder ``dest`` under the given limits."""
    kind = archive_kind(archive)
    dest.mkdir(parents=True, exist_ok=True)
    budget = _Budget(max_files, max_bytes, dest)
    budget.reserve = reserve(dest, archive.stat().st_size)
    if (free := free_bytes(dest)) < budget.reserve:
        raise _no_room(dest, budget.reserve, free, "kept free, before unpacking")
    try:
        if kind == "zip":
            _unpack_zip(archive, dest, budget)
        elif kind == "tar":
            _unpack_tar(archive, dest, budget)
        else:
            raise BundleError(f"{archive.name} is not a notebook, folder, zip or tar.gz")
    except (
        zipfile.BadZipFile,
        tarfile.TarError,
        EOFError,
        OSError,
        zlib.error,
        lzma.LZMAError,
        struct.error,
        ValueError,  # e.g. an entry name that is not valid UTF-8
        NotImplementedError,  # e.g. an unsupported zip compression method
    ) as exc:
        if isinstance(exc, OSError) and exc.errno in _FULL:  # the disk, not the archive
            detail = f"the disk filled up with {size_text(budget.bytes)} unpacked"
            free = free_bytes(dest) if dest.exists() else 0
            raise _no_room(dest, budget.bytes + budget.reserve, free, detail) from None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BundleError(f"{archive.name} is a damaged archive: {reason}") from None


# -- choosing the notebook ---------------------------------------------------------------------


def _notebooks(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.ipynb") if not p.name.startswith("."))


def _visible(folder: Path) -> Iterator[Path]:
    return (p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX")))


def read_manifest(root: Path) -> dict[str, Any]:
    for name in MANIFEST_NAMES:
        path = root / name
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
                data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
            except (ValueError, yaml.YAMLError, UnicodeDecodeError) as exc:
                raise BundleError(f"{name}: cannot be parsed: {str(exc).splitlines()[0]}") from None
            if not isinstance(data, dict):
                raise BundleError(f"{name}: must be a mapping")
            if not isinstance(data.get("parameters") or {}, dict):
                raise BundleError(f"{name}: 'parameters' must be a mapping")
            for key in ("notebook", "kernel"):
                if key in data and not isinstance(data[key], str):
                    raise BundleError(f"{name}: {key!r} must be a string")
            return data
    return {}


def open_bundle(
    local: Path, unpack_dir: Path, notebook: str | None, max_files: int, max_bytes: int
) -> Bundle:
    """Turn a local SOURCE (notebook, folder or archive) into a Bundle; unpack if needed."""
    if local.is_dir():
        root = local
    elif local.suffix == ".ipynb" and archive_kind(local) is None:
        if notebook:
            raise BundleError(f"--notebook {notebook} given, but the source is one notebook")
        return Bundle(root=local.parent.resolve(), notebook=local.resolve())
    else:
        unpack(local, unpack_dir, max_files, max_bytes)
        root = unpack_dir
        entries = list(_visible(root))
        if len(entries) == 1 and entries[0].is_dir() and not (root / "nbjob.json").exists():
            root = entries[0]
    root = root.resolve()
    manifest = read_manifest(root)
    choice = notebook or manifest.get("notebook")
    if choice:
        path = _safe_target(root, choice)
        if path is None or not path.is_file():
            raise BundleError(
                f"notebook {choice!r} not found in the bundle; "
                f"notebooks at its root: {', '.join(_notebooks(root)) or 'none'}"
            )
        return Bundle(root=root, notebook=path, manifest=manifest)
    found = _notebooks(root)
    if not found:
        raise BundleError("no notebook at the bundle root; name one with --notebook")
    if len(found) > 1:
        raise BundleError(
            f"several notebooks at the bundle root ({', '.join(found)}); "
            "choose one with --notebook or a manifest"
        )
    return Bundle(root=root, notebook=root / found[0], manifest=manifest)


def place_notebook(path: Path, folder: Path) -> Path:
    """Move a downloaded single notebook into its own bundle folder."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.move(str(path), folder / path.name))


def requirement_lines(root: Path) -> list[str]:
    """The requirement lines of the bundle's requirements.txt (no comments, no ``-`` options).

    Nothing is installed at job start (air-gapped clusters): the kernel checks them and unmet
    lines are only reported (``KernelSession.check_requirements``).
    """
    path = root / "requirements.txt"
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines
