"""Plain helpers for tests: write notebooks and archives, run ``nbjob`` the way a platform does.

Import them from tests (``from helpers import make_notebook, run_nbjob``); pytest puts this
folder on ``sys.path`` (rootdir-relative, no ``__init__.py``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import nbformat

NBJOB = str(Path(sys.executable).with_name("nbjob"))
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


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str

    @property
    def last_event(self) -> dict[str, Any]:
        """The last JSON log line on stderr (``run_end`` for ``nbjob run``), or {}."""
        for line in reversed(self.stderr.splitlines()):
            if line.startswith("{"):
                try:
                    return dict(json.loads(line))
                except ValueError:
                    continue
        return {}


def nbjob_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without NBJOB_* / AWS_* settings, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NBJOB_", "AWS_"))}
    base["NBJOB_LOG_FORMAT"] = "json"
    base.update(env or {})
    return base


class NbjobProcess:
    """A running ``nbjob``; output goes to temp files, so the pipes never fill up."""

    def __init__(
        self, args: Iterable[str], env: Mapping[str, str] | None, cwd: str | Path | None
    ) -> None:
        # Files, not pipes: a test may watch the run for a while without reading its output.
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as this object)
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [NBJOB, *map(str, args)],
            env=nbjob_env(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            start_new_session=True,  # its own group: a timeout stops it and its children
        )

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = 120) -> Result:
        """Wait (bounded); on timeout kill its process group and fail the test."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"nbjob did not end within {timeout} s: {self.output()}") from None
        return Result(code, *self.output())

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def output(self) -> tuple[str, str]:
        texts = []
        for f in (self._out, self._err):
            f.seek(0)
            texts.append(f.read().decode("utf-8", "replace"))
        return texts[0], texts[1]


def start_nbjob(
    *args: str | Path, env: Mapping[str, str] | None = None, cwd: str | Path | None = None
) -> NbjobProcess:
    """Start ``nbjob ARGS`` in the background (for tests that watch a run as it goes)."""
    return NbjobProcess(args, env, cwd)


def run_nbjob(
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 120,
) -> Result:
    """Run ``nbjob ARGS`` to its end (``timeout`` is a safety bound only)."""
    return start_nbjob(*args, env=env, cwd=cwd).wait(timeout)


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
