"""What a run left in its output folder, read as a user would: notebook, run.json, the log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat

__all__ = ["cell_ends", "log_events", "results", "texts"]


def results(out: Path, name: str = "nb.ipynb") -> tuple[Any, dict[str, Any]]:
    """The executed notebook (validated) and run.json in ``out``."""
    nb = nbformat.read(out / name, as_version=4)
    nbformat.validate(nb)
    return nb, json.loads((out / "run.json").read_text())


def texts(cell: Any) -> str:
    """A cell's stream output, joined."""
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def log_events(out: Path) -> list[dict[str, Any]]:
    """Every JSON line of ``out``'s executor.log."""
    return [json.loads(line) for line in (out / "executor.log").read_text().splitlines()]


def cell_ends(out: Path) -> list[tuple[int, str]]:
    """(cell, status) of every cell_end event in executor.log."""
    return [(e["cell"], e["status"]) for e in log_events(out) if e["event"] == "cell_end"]
