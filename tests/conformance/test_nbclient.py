"""The project's own small notebooks for what nbclient's test notebooks cover, run by nbjob and
by nbclient (``NotebookClient(nb).execute()``, in process) and compared (conform.py).

One notebook per subject under tests/conformance/notebooks: clear_output (also ``wait=True``),
streams, display updates, widgets and Output widgets, interrupts, stdin, unicode, SVG and
inline images, the skip-execution and raises-exception tags, a failing cell, allow-errors and
pager output. Each runs in a copy in the test's temporary folder, one kernel per runner.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbjob.config import OPTIONS
from pairs import check_valid, compare, run_pair

pytestmark = pytest.mark.e2e

NOTEBOOKS = Path(__file__).with_name("notebooks")
VIEW = "application/vnd.jupyter.widget-view+json"


@dataclass(frozen=True)
class Setup:
    """How both runners are told the same thing, and when the comparison cannot run yet."""

    nbjob: tuple[str, ...] = ()
    nbclient: dict[str, Any] = field(default_factory=dict)
    needs_option: str = ""  # an nbjob option another change adds


SETUPS = {
    "interrupt.ipynb": Setup(("--cell-timeout", "3"), {"timeout": 3, "interrupt_on_timeout": True}),
    "allow_errors.ipynb": Setup(("--allow-errors",), {"allow_errors": True}, "allow_errors"),
}


def _option(name: str) -> bool:
    return any(option.name == name for option in OPTIONS)


def _pager_kept(nb: dict[str, Any]) -> bool:
    """Whether nbjob kept a pager payload as an output (issue 16 item 4, another change)."""
    return any(
        cell.get("outputs") for cell in nb["cells"] if "pager" in cell["metadata"].get("tags", [])
    )


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_own_notebook(name: str, tmp_path: Path) -> None:
    setup = SETUPS.get(name, Setup())
    if setup.needs_option and not _option(setup.needs_option):
        pytest.skip(f"nbjob has no {setup.needs_option!r} option on this branch yet")
    work = tmp_path / "work"
    work.mkdir()
    notebook = work / name
    shutil.copyfile(NOTEBOOKS / name, notebook)

    def peer() -> tuple[Any, BaseException | None]:
        nb = nbformat.read(notebook, as_version=4)
        options = {"timeout": 60, "kernel_name": "python3", **setup.nbclient}
        client = NotebookClient(nb, resources={"metadata": {"path": str(work)}}, **options)
        try:
            client.execute()
        except CellExecutionError as error:  # the notebook holds what ran, as nbclient left it
            return nb, error
        return nb, None

    pair = run_pair(notebook, tmp_path / "nbjob-out", peer, setup.nbjob)
    if name == "pager.ipynb" and not _pager_kept(pair.ours):
        pytest.skip("nbjob does not keep pager output on this branch yet (issue 16 item 4)")
    compare(name, "nbclient", pair, tmp_path)
    check_valid(pair.ours)
