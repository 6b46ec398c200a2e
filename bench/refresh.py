#!/usr/bin/env python3
"""The live report's cost: a run with the report refreshed during it vs the final page only.

Run from the repository root with the project's venv::

    .venv/bin/python bench/refresh.py [--cells 150] [--sleep 0.1] [--interval 5] [--rounds 3]

Runs one notebook (``--cells`` cells, each printing a line and sleeping ``--sleep`` s) with
``nbjob run --report-interval 0`` (the final page only) and ``--report-interval INTERVAL``
(default 5 s: twelve times the default's pace, to make the cost visible), rounds interleaved,
into a fresh local folder each time. For each: the wall time, the CPU seconds of nbjob and every
process below it (the kernel and the report's renderer: ``RUSAGE_CHILDREN``), and the pages
refreshed during the run (the ``report`` log line). The cost is the difference in CPU seconds
over the run's wall time (the share of one core), and the difference in wall time over the
run's. Writes the "Live report" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_section

ROOT = Path(__file__).resolve().parents[1]
NBJOB = Path(sys.executable).with_name("nbjob")
START, END = "<!-- bench/refresh.py: start -->", "<!-- bench/refresh.py: end -->"
TARGET = 0.05  # of the run's time


def notebook(cells: int, sleep: float) -> dict[str, object]:
    code = f"import time\nprint('step', flush=True)\ntime.sleep({sleep})"
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "P", "language": "python"}},
        "cells": [
            {
                "cell_type": "code",
                "id": f"c{i}",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": code,
            }
            for i in range(cells)
        ],
    }


def one_run(nb: Path, interval: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        done = subprocess.run(
            [str(NBJOB), "run", str(nb), "--output", out, "--report-interval", str(interval)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    refreshed = 0
    for line in done.stderr.splitlines():
        if '"event": "report"' in line:
            refreshed = int(json.loads(line).get("refreshed", 0))
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"wall": wall, "cpu": cpu, "refreshed": refreshed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=150)
    ap.add_argument("--sleep", type=float, default=0.1)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = ap.parse_args()
    runs: dict[float, list[dict[str, float]]] = {0.0: [], args.interval: []}
    with tempfile.TemporaryDirectory() as tmp:
        nb = Path(tmp) / "steps.ipynb"
        nb.write_text(json.dumps(notebook(args.cells, args.sleep)))
        for _ in range(args.rounds):
            for interval in runs:
                runs[interval].append(one_run(nb, interval))
                print(interval, runs[interval][-1], flush=True)
    section = report(runs, args)
    print(section)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", section, START, END)


def report(runs: dict[float, list[dict[str, float]]], args: argparse.Namespace) -> str:
    med = {i: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for i, rs in runs.items()}
    off, on = med[0.0], med[args.interval]
    cpu_share = (on["cpu"] - off["cpu"]) / off["wall"]
    wall_share = (on["wall"] - off["wall"]) / off["wall"]
    verdict = "PASS" if wall_share <= TARGET else "FAIL"
    rows = [
        f"| `--report-interval {i:g}` | {m['wall']:.2f} | {m['cpu']:.2f} | {m['refreshed']:.0f} |"
        for i, m in med.items()
    ]
    return "\n".join([
        START,
        "## Live report (bench/refresh.py)",
        "",
        f"{args.cells} cells each printing a line and sleeping {args.sleep} s, to a local folder;"
        f" medians of {args.rounds} interleaved rounds (2-core machine; CPU = nbjob, its kernel"
        " and its renderer).",
        "",
        "| run | wall (s) | CPU (s) | pages refreshed during the run |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"Refreshing every {args.interval:g} s: the run's time {wall_share:+.1%} (target ≤"
        f" {TARGET:.0%} of the run's time): **{verdict}**; CPU {cpu_share:+.1%} of one core,"
        " the renderer child's start (its imports and templates, once a run) included. The default,"
        " 60 s, refreshes twelve times less often.",
        "",
        "Reproduce: `.venv/bin/python bench/refresh.py` (`--cells`, `--sleep`, `--interval`,"
        " `--rounds`).",
        END,
    ])  # fmt: skip


if __name__ == "__main__":
    main()
