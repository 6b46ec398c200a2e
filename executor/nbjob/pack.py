"""``nbjob pack``: a deterministic bundle (same inputs, same bytes) of a notebook and its helpers.

Entries are sorted, timestamps fixed (1980-01-01), owners and permissions normalized, and the
gzip header carries no time or name. A manifest ``nbjob.json`` names the notebook and any default
parameters, so ``nbjob run`` needs no ``--notebook``.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from nbjob.errors import UsageError

_EPOCH = (1980, 1, 1, 0, 0, 0)
_EPOCH_S = 315532800  # 1980-01-01T00:00:00Z


def _check_notebook(notebook: Path) -> None:
    if notebook.suffix != ".ipynb" or not notebook.is_file():
        raise UsageError(f"{notebook}: not a notebook file")
    try:
        data = json.loads(notebook.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise UsageError(f"{notebook}: not a notebook ({str(exc).splitlines()[0]})") from None
    cells = data.get("cells") if isinstance(data, dict) else None
    if isinstance(data, dict) and data.get("nbformat") == 3:  # run upgrades it to 4.5
        cells = data.get("worksheets")
    if not isinstance(cells, list):
        raise UsageError(f"{notebook}: not a notebook (no cells)")


def collect(
    notebook: Path,
    include: str | None,
    requirements: Path | None,
    skip: Path | None = None,
) -> dict[str, Path]:
    """Archive name -> file. Default helpers: every .py beside the notebook.

    ``skip`` (the bundle being written) is never included, so packing again gives the same bytes.
    """
    _check_notebook(notebook)
    base = notebook.parent
    patterns = [p.strip() for p in include.split(",")] if include else ["*.py"]
    files: dict[str, Path] = {notebook.name: notebook}
    for pattern in filter(None, patterns):
        pure = PurePosixPath(pattern)
        if pure.is_absolute() or ".." in pure.parts:
            raise UsageError(f"--include {pattern!r}: must stay inside the notebook's folder")
        matches = sorted(
            p
            for p in base.glob(pattern)
            if p.is_file() and not (skip is not None and p.resolve() == skip.resolve())
        )
        if not matches and include:
            raise UsageError(f"--include {pattern!r} matches no file next to {notebook.name}")
        for path in matches:
            name = path.relative_to(base).as_posix()
            if "__pycache__" not in name.split("/"):
                files[name] = path
    if requirements is not None:
        if not requirements.is_file():
            raise UsageError(f"--requirements {requirements}: no such file")
        files["requirements.txt"] = requirements
    elif (base / "requirements.txt").is_file():
        files["requirements.txt"] = base / "requirements.txt"
    return files


def manifest(notebook_name: str, parameters: dict[str, Any]) -> bytes:
    data: dict[str, Any] = {"notebook": notebook_name}
    if parameters:
        data["parameters"] = parameters
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _entries(files: dict[str, Path], extra: dict[str, bytes]) -> Iterable[tuple[str, bytes, int]]:
    blobs = {name: (path.read_bytes(), path.stat().st_mode & 0o111) for name, path in files.items()}
    blobs.update({name: (data, 0) for name, data in extra.items()})
    for name in sorted(blobs):
        data, exe = blobs[name]
        yield name, data, 0o755 if exe else 0o644


def write_zip(target: Path, entries: Iterable[tuple[str, bytes, int]]) -> None:
    with zipfile.ZipFile(target, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = (0o100000 | mode) << 16
            info.create_system = 3
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)


def write_targz(target: Path, entries: Iterable[tuple[str, bytes, int]]) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, _EPOCH_S
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tf.addfile(info, io.BytesIO(data))
    with target.open("wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
        gz.write(raw.getvalue())


def pack(
    notebook: Path,
    output: Path,
    include: str | None = None,
    requirements: Path | None = None,
    parameters: dict[str, Any] | None = None,
) -> list[str]:
    """Write the bundle; return the archive's entry names."""
    if not output.name.endswith((".zip", ".tar.gz", ".tgz")):
        raise UsageError(f"-o {output}: the bundle must end in .zip, .tar.gz or .tgz")
    files = collect(notebook, include, requirements, skip=output)
    extra = {"nbjob.json": manifest(notebook.name, parameters or {})}
    entries = list(_entries(files, extra))
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.name.endswith(".zip"):
        write_zip(output, entries)
    else:
        write_targz(output, entries)
    return [e[0] for e in entries]
