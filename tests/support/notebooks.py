"""Notebooks, bundles and results as tests write and read them (v4 notebooks, zip / tar.gz)."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nbformat

__all__ = [
    "PYTHON3",
    "make_notebook",
    "make_targz",
    "make_zip",
    "notebook",
    "notebook_json",
    "read_json",
    "stream_text",
]

PYTHON3 = {"name": "python3", "display_name": "Python 3", "language": "python"}


def make_notebook(
    path: str | Path,
    cells: Iterable[str | tuple[str, ...] | tuple[str, str, list[str]]],
    kernelspec: Mapping[str, str] | None = PYTHON3,
) -> Path:
    """Write a v4 notebook; return its path.

    Each cell is ``"source"`` (a code cell), ``(cell_type, source)`` or
    ``(cell_type, source, tags)``, e.g. ``("code", "x = 1", ["parameters"])`` or
    ``("markdown", "# Title")``. ``kernelspec=None`` leaves the metadata without one.
    """
    nb = nbformat.v4.new_notebook()
    for cell in cells:
        kind, source, tags = ("code", cell, []) if isinstance(cell, str) else (*cell, [])[:3]
        make = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}
        nb.cells.append(make[kind](source, metadata={"tags": list(tags)} if tags else {}))
    if kernelspec is not None:
        nb.metadata["kernelspec"] = dict(kernelspec)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def notebook_json(cells: Iterable[Any], kernelspec: Mapping[str, str] | None = PYTHON3) -> bytes:
    """The bytes of a notebook built like ``make_notebook``, for putting into archives."""
    with tempfile.TemporaryDirectory() as tmp:
        return make_notebook(Path(tmp) / "nb.ipynb", cells, kernelspec).read_bytes()


def make_zip(path: str | Path, files: Mapping[str, bytes | str]) -> Path:
    """A zip of ``{name: content}`` (regular files, mode 0644)."""
    path = Path(path)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data.encode() if isinstance(data, str) else data)
    return path


def make_targz(path: str | Path, files: Mapping[str, bytes | str | tarfile.TarInfo]) -> Path:
    """A tar.gz of ``{name: content}``; a ``TarInfo`` value is added as is (links, FIFOs...)."""
    path = Path(path)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            if isinstance(data, tarfile.TarInfo):
                tf.addfile(data)
                continue
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(raw), 0o644
            tf.addfile(info, io.BytesIO(raw))
    return path


def read_json(path: str | Path) -> dict[str, Any]:
    return dict(json.loads(Path(path).read_text(encoding="utf-8")))


def stream_text(nb: Mapping[str, Any]) -> str:
    """All stream output of a notebook (dict or NotebookNode), joined."""
    return "".join(
        o.get("text", "")
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )


def notebook(path: Path, *cells: str | tuple[str, list[str]], kernel: str = "python3") -> Path:
    """A notebook of code cells: ``"source"`` or ``("source", [tags])``, for kernel ``kernel``."""
    spec = {"name": kernel, "language": "python", "display_name": kernel}
    return make_notebook(path, [c if isinstance(c, str) else ("code", *c) for c in cells], spec)


def terminal(text: str) -> tuple[list[str], str]:
    """A character-at-a-time reference model of how JupyterLab shows stream text: the completed
    lines and the line still being written. ``\\r`` returns to the line's start and later
    characters overwrite in place; ``\\b`` deletes the character before the cursor, never a
    newline."""
    done: list[str] = []
    line: list[str] = []
    cursor = 0
    for char in text:
        if char == "\n":
            done.append("".join(line) + "\n")
            line, cursor = [], 0
        elif char == "\r":
            cursor = 0
        elif char == "\b":
            if cursor:
                del line[cursor - 1]
                cursor -= 1
        else:
            line[cursor : cursor + 1] = [char]
            cursor += 1
    return done, "".join(line)
