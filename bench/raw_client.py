#!/usr/bin/env python3
"""The per-cell floor: a bare jupyter_client loop, no notebook, no outputs, no record.

For each of ``--cells`` trivial cells (``x = 1``): send ``execute_request``, then wait until both
its ``execute_reply`` (shell) and its ``status: idle`` (IOPub) have arrived. The kernel starts
as nbclient and papermill start it (IPython history in memory; ``--no-execute-sleep``: as nbjob
starts it, without ipykernel's 0.5 ms sleep before each reply). Prints one JSON line per
``--reps``: the loop's wall time, per-cell milliseconds and the kernel start time, so nbjob's and
nbclient's per-cell cost can be compared with what the protocol itself costs on this machine.

    .venv/bin/python bench/raw_client.py [--cells 1000] [--kernel python3] [--reps 1]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import zmq
from jupyter_client.manager import KernelManager

HIST = "--HistoryManager.hist_file=:memory:"  # no SQLite commit per cell
NO_SLEEP = "--IPythonKernel._execute_sleep=0"  # nbjob's kernels: no 0.5 ms sleep per reply


def run_cells(client: Any, cells: int, code: str) -> tuple[float, float]:
    """Execute ``code`` ``cells`` times, reply and idle awaited for each: wall and CPU seconds
    (this thread's CPU: the client's own cost, whatever else the machine is doing)."""
    shell, iopub = client.shell_channel.socket, client.iopub_channel.socket
    session = client.session
    poller = zmq.Poller()
    poller.register(shell, zmq.POLLIN)
    poller.register(iopub, zmq.POLLIN)
    started, cpu = time.perf_counter(), time.thread_time()
    for _ in range(cells):
        msg_id = client.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)
        replied = idle = False
        while not (replied and idle):
            ready = dict(poller.poll(10_000))
            if not ready:
                raise TimeoutError("the kernel did not answer within 10 s")
            if shell in ready:
                _, msg = session.recv(shell, mode=zmq.NOBLOCK)
                if msg and msg["parent_header"].get("msg_id") == msg_id:
                    replied = msg["msg_type"] == "execute_reply" or replied
            if iopub in ready:
                _, msg = session.recv(iopub, mode=zmq.NOBLOCK)
                if msg and msg["parent_header"].get("msg_id") == msg_id:
                    state = msg["content"].get("execution_state")
                    idle = idle or (msg["msg_type"] == "status" and state == "idle")
    return time.perf_counter() - started, time.thread_time() - cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--cells", type=int, default=1000)
    p.add_argument("--kernel", default="python3")
    p.add_argument("--reps", type=int, default=1, help="loops of --cells on the same kernel")
    p.add_argument("--code", default="x = 1")
    p.add_argument(
        "--no-execute-sleep",
        action="store_true",
        help=f"start the kernel as nbjob does ({NO_SLEEP}); default: as nbclient does",
    )
    args = p.parse_args()
    t0 = time.perf_counter()
    km = KernelManager(kernel_name=args.kernel)
    km.start_kernel(extra_arguments=[HIST, *([NO_SLEEP] if args.no_execute_sleep else [])])
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        start_s = time.perf_counter() - t0
        for _ in range(args.reps):
            loop_s, cpu_s = run_cells(client, args.cells, args.code)
            print(
                json.dumps(
                    {
                        "cells": args.cells,
                        "execute_sleep": not args.no_execute_sleep,
                        "loop_s": round(loop_s, 4),
                        "per_cell_ms": round(1000 * loop_s / args.cells, 4),
                        "client_cpu_per_cell_ms": round(1000 * cpu_s / args.cells, 4),
                        "kernel_start_s": round(start_s, 3),
                    }
                ),
                flush=True,
            )
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
