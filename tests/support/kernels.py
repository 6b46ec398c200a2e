"""Kernels of other languages for the tests: kernelspecs written into a folder of the test's.

Tests install nothing into the environment's Jupyter folders: ``kernel_specs(folder)`` writes
the kernelspecs of the kernels present here (bash_kernel from the ``test`` extra; IRkernel from
Debian's ``r-cran-irkernel``, which ``make system-deps`` installs) under ``folder`` and returns
the ``JUPYTER_PATH`` that makes them installed, for nbjob's subprocess or this process.
``missing(name)`` says why a kernel is absent (a skip reason), or None.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

__all__ = ["R_LIBRARIES", "bash_holds", "kernel_specs", "missing", "r_holds"]

# Where Debian's and CRAN's R packages live (IRkernel's folder in one of them).
R_LIBRARIES = ("/usr/lib/R/site-library", "/usr/local/lib/R/site-library", "/usr/lib/R/library")

SPECS = {
    "bash": {
        "argv": [sys.executable, "-m", "bash_kernel", "-f", "{connection_file}"],
        "display_name": "Bash",
        "language": "bash",
        "env": {"PS1": "$"},  # as bash_kernel.install writes it
    },
    "ir": {
        "argv": ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"],
        "display_name": "R",
        "language": "R",
    },
}


def missing(name: str) -> str | None:
    """Why the kernel ``name`` (``bash``, ``ir``) cannot run here; None when it can."""
    if name == "bash":
        if importlib.util.find_spec("bash_kernel") is None:
            return "bash_kernel is not installed (pip install -e '.[test]')"
        return None
    if shutil.which("R") is None:
        return "R is not installed (make system-deps installs r-cran-irkernel as root)"
    if not any(Path(lib, "IRkernel").is_dir() for lib in R_LIBRARIES):
        return "IRkernel is not installed (apt-get install r-cran-irkernel)"
    return None


def kernel_specs(folder: Path) -> dict[str, str]:
    """Write the kernelspecs of the kernels present here under ``folder``; the environment
    (``JUPYTER_PATH``, this folder first) under which they are installed."""
    for name, spec in SPECS.items():
        if missing(name) is None:
            where = folder / "kernels" / name
            where.mkdir(parents=True, exist_ok=True)
            (where / "kernel.json").write_text(json.dumps(spec))
    paths = [str(folder), *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep))]
    return {"JUPYTER_PATH": os.pathsep.join(paths)}


def r_holds(value: Any) -> Any:
    """An R value as jsonlite writes it back: numbers are doubles (printed to 15 significant
    digits), non-finite ones strings (``na="string"``), an empty mapping an empty list."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Inf" if value > 0 else "-Inf")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return float(f"{value:.15g}")
    if isinstance(value, dict):
        return {str(k): r_holds(v) for k, v in value.items()} if value else []
    if isinstance(value, list | tuple):
        return [r_holds(v) for v in value]
    return value


def bash_holds(value: Any, nested: bool = False) -> Any:
    """A bash value: strings, arrays of them; a nested list or mapping is its JSON text."""
    if isinstance(value, dict | list | tuple) and nested:
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return {str(k): bash_holds(v, True) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [bash_holds(v, True) for v in value]
    if value is None or isinstance(value, bool):
        return {None: "", True: "true", False: "false"}[value]
    return value if isinstance(value, str) else repr(value)
