#!/usr/bin/env python3
"""The resource sampler's cost: its thread's CPU time per second of run, on a real process tree.

Run from the repository root with the project's venv::

    .venv/bin/python bench/resources.py [--seconds 30] [--workers 8] [--interval 1]

Starts a stand-in for a training kernel (a Python process holding 200 MiB, with ``--workers``
children, like data-loader workers; all stopped by PID at the end), then runs nbjob's
``Sampler`` on it exactly as a run does — the process tree from ``/proc``, this process's memory
cgroup, NVML when present — for ``--seconds`` seconds at ``--interval``, plus one cell per
second (its start, reply and end: the per-cell readings). The cost is the sampler thread's CPU time
(``time.thread_time``) plus the cell readings' (the main thread's, around them), over the
wall time: the share of one core. Writes the "Resource sampler" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import write_section

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "executor"))

from nbjob.resources import MemoryGroup, Resources  # noqa: E402
from nbjob.resources.sampler import Sampler  # noqa: E402

START, END = "<!-- bench/resources.py: start -->", "<!-- bench/resources.py: end -->"
TARGET = 0.01  # of one core
CELLS = 500  # cells (start, reply, end) in a row, for the cost of one

KERNEL = """
import os, subprocess, sys, time
hold = b'x' * (200 * 2**20)
workers = [subprocess.Popen([sys.executable, '-c', 'import time; b = bytearray(20 * 2**20); '
                             'time.sleep(3600)']) for _ in range(int(sys.argv[1]))]
print('ready', flush=True)
time.sleep(3600)
"""


def start_kernel(workers: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", KERNEL, str(workers)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def cell(sampler: Sampler, index: int) -> None:
    """One cell's readings, as a run takes them: its start, its reply, its end."""
    sampler.cell_started(index)
    sampler.cell_replied(index)
    sampler.cell_ended(index)


def measure(pid: int, seconds: float, interval: float) -> dict[str, float]:
    """The sampler on ``pid`` for ``seconds``: its CPU share of one core and its samples."""
    sampler = Sampler(interval, MemoryGroup.find())
    sampler.start(pid)
    cells_cpu, began, index = 0.0, time.monotonic(), 0
    while time.monotonic() - began < seconds:
        t = time.thread_time()
        cell(sampler, index)
        cells_cpu += time.thread_time() - t
        index += 1
        time.sleep(1.0)
    wall = time.monotonic() - began
    t = time.thread_time()
    for i in range(CELLS):  # a notebook of many short cells: what each cell adds
        cell(sampler, index + i)
    tight = time.thread_time() - t
    sampler.stop()
    return {
        "wall_s": wall,
        "thread_cpu_s": sampler.cpu_time,
        "cells_cpu_s": cells_cpu,
        "cells": index,
        "samples": sampler.rounds,  # the thread's (the timeline also has the cells')
        "share": (sampler.cpu_time + cells_cpu) / wall,
        "per_sample_ms": 1000 * sampler.cpu_time / max(1, sampler.rounds),
        "per_cell_ms": 1000 * tight / CELLS,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = ap.parse_args()
    assert Resources is not None
    kernel = start_kernel(args.workers)
    try:
        result = measure(kernel.pid, args.seconds, args.interval)
    finally:
        os.killpg(kernel.pid, signal.SIGKILL)
        kernel.wait(10)
    procs = sum(1 for p in os.listdir("/proc") if p.isdigit())
    section = report(result, args, procs)
    print(section)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", section, START, END)


def report(r: dict[str, float], args: argparse.Namespace, procs: int) -> str:
    verdict = "PASS" if r["share"] <= TARGET else "FAIL"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return "\n".join([
        START,
        "## Resource sampler (bench/resources.py)",
        "",
        f"Measured {when} on {os.cpu_count()} cores, Linux {platform.release()}, Python "
        f"{platform.python_version()}; {procs} processes in /proc (each sample scans them "
        f"for the tree). A stand-in kernel holding 200 MiB with {args.workers} child workers; "
        f"the sampler every {args.interval:g} s for {r['wall_s']:.0f} s, plus one cell a second "
        f"(its start, reply and end: the per-cell readings); then {CELLS} cells in a row, "
        "for what each cell adds to a notebook of many short cells (on the run's thread).",
        "",
        "| thread samples | sampler thread CPU (s) | cell readings CPU (s) | CPU per sample (ms) "
        "| CPU per cell: start, reply, end (ms) | share of one core | target | result |",
        "|---:|---:|---:|---:|---:|---:|---|---|",
        f"| {r['samples']:.0f} | {r['thread_cpu_s']:.3f} | {r['cells_cpu_s']:.3f} | "
        f"{r['per_sample_ms']:.2f} | {r['per_cell_ms']:.2f} | {100 * r['share']:.2f} % | "
        f"≤ {100 * TARGET:g} % | **{verdict}** |",
        "",
        "Reproduce: `.venv/bin/python bench/resources.py` (`--seconds`, `--workers`, "
        "`--interval`).",
        END,
    ])  # fmt: skip


if __name__ == "__main__":
    main()
