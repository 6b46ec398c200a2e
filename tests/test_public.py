"""The package a user installs: import name ``nbjob``, its exact public surface, a light import.

Run in fresh interpreters (subprocesses), as a user's program or a job would import it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbjob
from support import make_notebook

PUBLIC = [
    "CellEnded",
    "CellMetric",
    "CellOutput",
    "CellSkipped",
    "CellStarted",
    "CellState",
    "CellStatus",
    "CellsListed",
    "Event",
    "Listener",
    "NbjobError",
    "RunEnded",
    "RunStarted",
    "RunStatus",
    "Settings",
    "StopToken",
    "Subscription",
    "Tick",
    "__version__",
    "resolve",
    "run",
]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter in an empty folder: ``-c`` puts the working directory on sys.path,
    and in the checkout the source folder ``executor/`` would be found there."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def test_public_surface_is_exact_and_every_name_resolves() -> None:
    assert sorted(nbjob.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(nbjob, name) is not None
    assert callable(nbjob.run) and callable(nbjob.resolve)


def test_nothing_named_executor_is_installed_and_python_m_nbjob_works(tmp_path: Path) -> None:
    missing = _python("import executor", tmp_path)
    assert missing.returncode != 0 and "No module named 'executor'" in missing.stderr
    out = subprocess.run(
        [sys.executable, "-m", "nbjob", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 0 and out.stdout.strip() == f"nbjob {nbjob.__version__}"


def test_import_nbjob_loads_none_of_the_heavy_modules(tmp_path: Path) -> None:
    code = (
        "import json, sys, nbjob; "
        "print(json.dumps([m for m in ('nbformat', 'zmq', 'boto3', 'structlog', 'jupyter_client')"
        " if m in sys.modules]))"
    )
    out = _python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_embedding_runs_a_notebook_with_a_listener(tmp_path: Path) -> None:
    notebook = make_notebook(tmp_path / "nb.ipynb", ["print('hello')", "x = 1"])
    code = f"""
import json, os, nbjob
seen = []
settings = nbjob.resolve({{"source": {str(notebook)!r}, "output": {str(tmp_path / "out")!r}}}, {{}})
code = nbjob.run(settings, listeners=[lambda e: seen.append(type(e).__name__)])
print(json.dumps({{"code": code, "seen": seen}}))
"""
    out = _python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert result["seen"].count("CellStarted") == 2 and result["seen"].count("CellEnded") == 2
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["status"] == "succeeded"


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md's module table matches the package: every module and subpackage of
    nbjob has its row, and every row names one that exists."""
    root = Path(nbjob.__file__).parent
    page = (Path(__file__).parent.parent / "docs" / "architecture.md").read_text()
    rows = set(re.findall(r"^\| `([\w./]+)` \|", page, re.M))
    here = {p.name for p in root.glob("*.py") if p.name != "__main__.py"}
    here |= {f"{p.name}/" for p in root.iterdir() if (p / "__init__.py").is_file()}
    assert rows == here
