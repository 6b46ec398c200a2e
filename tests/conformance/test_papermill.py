"""papermill's own test notebooks, from the installed papermill package, run by nbjob and by
papermill (``papermill.execute_notebook``, in process) and compared (conform.py).

The notebooks are read from ``papermill/tests/notebooks`` in site-packages (the wheel ships
them) at test time, never copied into this repository; each is copied into the test's
temporary folder so both runs share one working folder and nothing is written into
site-packages. Parameters are given where the notebook has a ``parameters`` cell, as
papermill's tests do.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest
from pairs import check_valid, compare, run_pair
from papermill.exceptions import PapermillExecutionError
from support.kernels import SPECS, kernel_specs, missing

pytestmark = pytest.mark.e2e

NOTEBOOKS = Path(papermill.__file__).parent / "tests" / "notebooks"

# notebook → why it is not run (each is papermill-specific or cannot run here).
LEFT_OUT = {
    "binder.ipynb": "its cell runs papermill in a subprocess on paths relative to papermill's "
    "source checkout (it would write into site-packages); nothing about execution",
    "keyboard_interrupt.ipynb": "sleeps 60 s for papermill's test to send SIGINT; interrupts are "
    "compared in tests/conformance/notebooks/interrupt.ipynb",
}
# notebook → parameters (as papermill's tests pass them).
PARAMETERS: dict[str, dict[str, Any]] = {
    "simple_execute.ipynb": {"msg": "Hello"},
    "complex_parameters.ipynb": {"msg": "Hi", "a": 3.5, "b": ["x", "y"]},
    "nb_version_4.4.ipynb": {"var": 2},
    "report_mode_test.ipynb": {"a": 3},
    "result_no_exec.ipynb": {"foo": 2, "bar": "world"},
    "s3-simple_notebook.ipynb": {"msg": "Hello"},
}
KERNEL = {
    "blank-vscode.ipynb": "python3",  # no kernelspec in the notebook
    # papermill's test of its R parameter inspector (it has none): its kernelspec names "r",
    # IRkernel's is "ir"; the one cell, `msg = None`, fails in R (None is Python's)
    "notimplemented_translator.ipynb": "ir",
}
FILES = {"read_check.ipynb": {"check.txt": "checked\n"}}  # what the notebook reads


def _notebooks() -> list[Any]:
    found = sorted(NOTEBOOKS.rglob("*.ipynb"))
    assert found, f"papermill's test notebooks are not installed under {NOTEBOOKS}"
    return [
        pytest.param(p, id=p.name, marks=pytest.mark.skip(LEFT_OUT[p.name]))
        if p.name in LEFT_OUT
        else pytest.param(p, id=p.name)
        for p in found
    ]


def _nbjob_args(name: str, tmp_path: Path) -> tuple[str, ...]:
    args: list[str] = []
    if name in PARAMETERS:
        path = tmp_path / "parameters.json"
        path.write_text(json.dumps(PARAMETERS[name]))
        args += ["--parameters-file", str(path)]
    if name in KERNEL:
        args += ["--kernel", KERNEL[name]]
    return tuple(args)


@pytest.mark.parametrize("source", _notebooks())
def test_papermill_notebook(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if (kernel := KERNEL.get(source.name)) in SPECS:  # a kernel the test installs
        if reason := missing(kernel):
            pytest.skip(reason)
        for name, value in kernel_specs(tmp_path / "jupyter").items():
            monkeypatch.setenv(name, value)  # papermill (here) and nbjob (a subprocess)
    work = tmp_path / "work"
    work.mkdir()
    notebook = work / source.name
    shutil.copyfile(source, notebook)
    for name, text in FILES.get(source.name, {}).items():
        (work / name).write_text(text)

    written = tmp_path / "papermill.ipynb"

    def peer() -> tuple[Any, BaseException | None]:
        try:
            papermill.execute_notebook(
                str(notebook),
                str(written),
                parameters=PARAMETERS.get(source.name),
                kernel_name=KERNEL.get(source.name),
                cwd=str(work),
                progress_bar=False,
            )
        except PapermillExecutionError as error:  # it wrote the failed notebook first
            return nbformat.read(written, as_version=4), error
        return nbformat.read(written, as_version=4), None

    args = _nbjob_args(source.name, tmp_path)
    pair = run_pair(notebook, tmp_path / "nbjob-out", peer, args)
    compare(source.name, "papermill", pair, tmp_path)
    check_valid(pair.ours)
