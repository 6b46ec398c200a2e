"""Benchmark notebooks, generated with nbformat so that every runner executes identical files.

Scenarios:

* ``a`` three small cells, timed end to end;
* ``b`` 1000 trivial cells (``x = 1``): per-cell overhead and save strategy;
* ``c`` one cell printing about 100 MB (1M lines of 99 characters plus a newline): streaming
  output and the executor's memory;
* ``d`` the first cell writes ``time.time()`` to a file: time from process launch to the
  first cell running;
* ``e`` a Keras-style progress bar: 200,000 updates (backspaces over the last bar, a carriage
  return, ANSI bold), flushed every ``E_FLUSH_EVERY`` updates, then ``FINAL accuracy=0.9731``:
  output fidelity, log size;
* ``f`` ``tqdm.auto`` (a notebook widget bar) and an ``ipywidgets.IntSlider``: widget state saved;
* ``check`` (not a scenario) records the kernel's interpreter, to verify that every runner uses
  the same kernel; it doubles as the warm-up run.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode

SCENARIOS: tuple[str, ...] = ("a", "b", "c", "d", "e", "f", "g", "h")

SCENARIO_TITLES: dict[str, str] = {
    "a": "(a) 3-cell notebook, end to end",
    "b": "(b) 1000 trivial cells",
    "c": "(c) one cell printing 100 MB",
    "d": "(d) launch to first cell running",
    "e": "(e) 200,000-update progress bar",
    "f": "(f) tqdm.auto + ipywidgets",
    "g": "(g) 5,000 trivial cells",
    "h": "(h) 20,000 trivial cells",
}
SCALE_CELLS: dict[str, int] = {"b": 1000, "g": 5000, "h": 20000}  # per-cell cost, flat or not

B_CELLS = 1000
C_LINES = 1_000_000
C_LINE_CHARS = 99  # plus the newline print adds: 100 bytes a line, 100 MB in all


def _notebook(sources: list[str]) -> NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    return nb


def notebook_a() -> NotebookNode:
    return _notebook(
        [
            "import math\nvalues = [math.sqrt(i) for i in range(1000)]",
            "total = sum(values)",
            "print(f'total={total:.3f}')",
        ]
    )


def notebook_b(cells: int = B_CELLS) -> NotebookNode:
    return _notebook(["x = 1"] * cells)


def notebook_c(lines: int = C_LINES, chars: int = C_LINE_CHARS) -> NotebookNode:
    return _notebook([f"line = 'x' * {chars}\nfor _ in range({lines}):\n    print(line)"])


def notebook_d(stamp_file: Path) -> NotebookNode:
    return _notebook(
        [
            "import time\n"
            f"with open({str(stamp_file)!r}, 'w') as f:\n"
            "    f.write(repr(time.time()))",
            "y = 2",
        ]
    )


E_UPDATES = 200_000
E_FLUSH_EVERY = 10  # one IOPub message per 10 updates: 20,000 messages (each flush ~1 ms)
E_FINAL = "FINAL accuracy=0.9731"


E_BAR = r"""
import sys
w = 0
for i in range({updates}):
    done = "=" * ((i + 1) * 30 // {updates})
    bar = f"\x1b[1m{{i + 1}}/{updates}\x1b[0m [{{done:<30}}] - loss: {{1 / (i + 1):.6f}}"
    sys.stdout.write("\b" * w + "\r" + bar)
    if i % {flush_every} == 0:
        sys.stdout.flush()
    w = len(bar)
print()
print({final!r})
"""


def notebook_e(updates: int = E_UPDATES, flush_every: int = E_FLUSH_EVERY) -> NotebookNode:
    code = E_BAR.format(updates=updates, flush_every=flush_every, final=E_FINAL)
    return _notebook([code.strip()])


def notebook_f() -> NotebookNode:
    return _notebook(
        [
            "from tqdm.auto import tqdm\nimport ipywidgets as w\n"
            "for _ in tqdm(range(2000)):\n    pass\n"
            "s = w.IntSlider(value=3)\ndisplay(s)\ns.value = 42"
        ]
    )


def notebook_check(info_file: Path) -> NotebookNode:
    return _notebook(
        [
            "import json, os, sys\n"
            f"with open({str(info_file)!r}, 'w') as f:\n"
            "    json.dump({'executable': sys.executable,\n"
            "               'realpath': os.path.realpath(sys.executable),\n"
            "               'prefix': sys.prefix, 'version': sys.version,\n"
            "               'pid': os.getpid()}, f)",
        ]
    )


def write_notebooks(directory: Path, stamp_file: Path, info_file: Path) -> dict[str, Path]:
    """Write every benchmark notebook into ``directory``; return paths by scenario name."""
    directory.mkdir(parents=True, exist_ok=True)
    books: dict[str, NotebookNode] = {
        "a": notebook_a(),
        "b": notebook_b(),
        "c": notebook_c(),
        "d": notebook_d(stamp_file),
        "e": notebook_e(),
        "f": notebook_f(),
        "g": notebook_b(SCALE_CELLS["g"]),
        "h": notebook_b(SCALE_CELLS["h"]),
        "check": notebook_check(info_file),
    }
    paths: dict[str, Path] = {}
    for name, nb in books.items():
        nbformat.validate(nb)
        path = directory / f"bench_{name}.ipynb"
        nbformat.write(nb, str(path))
        paths[name] = path
    return paths
