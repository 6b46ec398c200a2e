"""What a run left in its output folder, read as a user would: notebook, run.json, the log."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nbformat

__all__ = [
    "cell_ends",
    "log_events",
    "output_folder",
    "results",
    "texts",
    "valid_notebook",
    "validate_written",
]

_URL = ("s3://", "gs://", "gcs://", "az://", "azure://", "http://", "https://")


def results(out: Path, name: str = "nb.ipynb") -> tuple[Any, dict[str, Any]]:
    """The executed notebook (validated) and run.json in ``out``."""
    return valid_notebook(out / name), json.loads((out / "run.json").read_text())


def valid_notebook(path: Path) -> Any:
    """The notebook at ``path``, read as it was written (no conversion), after checking that
    ``nbformat.validate`` accepts it exactly as JupyterLab and papermill would read it: an
    invalid one (or one missing cell ids, which nbformat only warns about) fails the test."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing cell id is a warning there; here an error
        try:
            nbformat.validate(raw)
        except (nbformat.ValidationError, Warning) as exc:
            raise AssertionError(f"nbjob wrote an invalid notebook {path}: {exc}") from None
    return nbformat.from_dict(raw)


def output_folder(
    args: Iterable[str], env: Mapping[str, str], cwd: str | Path | None
) -> Path | None:
    """The local results folder an ``nbjob run`` writes (``--output``, ``NBJOB_OUTPUT``,
    else ``./nbjob-output``); None for an object store or another command."""
    args = [str(a) for a in args]
    if not args or args[0] != "run":
        return None
    found = env.get("NBJOB_OUTPUT")
    for i, arg in enumerate(args):
        if arg in ("--output", "-o") and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith("--output="):
            found = arg.split("=", 1)[1]
    if found and found.startswith(_URL):
        return None
    if found and found.startswith("file://"):
        found = found[len("file://") :]
    base = Path(cwd) if cwd is not None else Path.cwd()
    return base / (found or "nbjob-output")


def validate_written(folder: Path | None) -> None:
    """Every notebook under ``folder`` (nbjob's results, attempts, ranks and shards included)
    is valid: run on every ``run_nbjob`` / ``start_nbjob`` result, so every e2e test checks
    it."""
    if folder is None or not folder.is_dir():
        return
    for path in sorted(folder.rglob("*.ipynb")):
        if "artifacts" not in path.relative_to(folder).parts and path.is_file():
            valid_notebook(path)


def texts(cell: Any) -> str:
    """A cell's stream output, joined."""
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def log_events(out: Path) -> list[dict[str, Any]]:
    """Every JSON line of ``out``'s executor.log."""
    return [json.loads(line) for line in (out / "executor.log").read_text().splitlines()]


def cell_ends(out: Path) -> list[tuple[int, str]]:
    """(cell, status) of every cell_end event in executor.log."""
    return [(e["cell"], e["status"]) for e in log_events(out) if e["event"] == "cell_end"]
