"""Hostile or broken input ends as exit 3 with one line; a bug in nbjob as ``internal_error``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import read_json, run_nbjob
from nbjob import config, prepare, stop
from nbjob.run import Job
from test_run import events as log_events
from test_run import notebook

pytestmark = pytest.mark.timeout(120)

KERNELSPEC = {"name": "python3", "language": "python", "display_name": "Python 3"}


def _cell(source: Any) -> dict[str, Any]:
    return {"cell_type": "code", "source": source, "metadata": {}, "outputs": []}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ([1, 2], "nb.ipynb is not a notebook (no list of cells)"),
        ({"cells": {}}, "nb.ipynb is not a notebook (no list of cells)"),
        ({"cells": [_cell(42)]}, "nb.ipynb: cell 0's source is not text"),
        ({"cells": [_cell(["a", 1])]}, "nb.ipynb: cell 0's source is not text"),
        ({"cells": [7]}, "nb.ipynb: cell 0 is not a code, markdown or raw cell"),
    ],
)
def test_a_notebook_that_is_not_one_is_exit_3(tmp_path: Path, content: Any, reason: str) -> None:
    if isinstance(content, dict):
        meta = {"metadata": {"kernelspec": KERNELSPEC}, "nbformat": 4, "nbformat_minor": 5}
        content = {**meta, **content}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(content))
    result = run_nbjob("run", path, "--output", tmp_path / "out", "--log-format", "json")
    assert result.returncode == 3, result.stderr
    assert result.last_event["reason"] == reason
    assert "Traceback" not in result.stderr
    assert read_json(tmp_path / "out" / "run.json")["status"] == "invalid_input"


def test_an_internal_error_has_its_own_status_and_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug in nbjob")

    monkeypatch.setattr(prepare, "inject_parameters", bug)
    nb = notebook(tmp_path / "nb.ipynb", "print('never')")
    out = tmp_path / "out"
    settings = config.resolve({"source": str(nb), "output": str(out), "log_format": "json"}, {})
    assert Job(settings, stop.StopToken()).run() == 1
    record = read_json(out / "run.json")
    assert (record["status"], record["exit_code"]) == ("internal_error", 1)
    assert record["reason"] == "internal error: RuntimeError: a bug in nbjob"
    assert record["traceback"].startswith("Traceback") and "in bug" in record["traceback"]
    logged = [e for e in log_events(out) if e["event"] == "internal_error"]
    assert len(logged) == 1 and "RuntimeError: a bug in nbjob" in logged[0]["traceback"]
    assert "Traceback" not in (out / "nb.ipynb").read_text()  # never in the notebook
