#!/usr/bin/env python3
"""Per-cell round trip: a local kernel vs a remote one on a Jupyter server over its websocket.

Run from the repository root with the project's venv::

    .venv/bin/python bench/gateway.py [--cells 200] [--rounds 3]

Starts its own ``jupyter-server`` on 127.0.0.1 with a token (stopped by PID at the end), then
runs the same notebook of trivial cells (``x = N``) through nbjob's ``Executor`` on a local
session and on a gateway session, and prints the median per-cell time (``execute_request`` to
``execute_reply`` + ``idle``) of each, plus the raw round trip of one ``execute`` through
``KernelSession.next_message`` without the executor.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
from nbjob.config import Settings
from nbjob.events import Bus
from nbjob.execute import Executor
from nbjob.kernel import KernelSession, open_session


@contextmanager
def jupyter_server(root: Path) -> Iterator[tuple[str, str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    argv = [
        str(Path(sys.executable).with_name("jupyter-server")),
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root}",
        "--allow-root",
        "--no-browser",
    ]
    log = (root.parent / "server.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while True:
            try:
                request = urllib.request.Request(
                    f"{url}/api/kernelspecs", headers={"Authorization": f"token {token}"}
                )
                urllib.request.urlopen(request, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > end or proc.poll() is not None:
                    raise RuntimeError("jupyter-server did not start") from None
                time.sleep(0.2)
        yield url, token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


def per_cell(session: KernelSession, cells: int) -> list[float]:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"x = {i}") for i in range(cells)]
    executor = Executor(session, Bus())  # no listeners
    executor.run(nb)
    return [r.duration_s or 0.0 for r in executor.results.values()]


def raw_round_trip(session: KernelSession, n: int) -> list[float]:
    times = []
    for i in range(n):
        started = time.perf_counter()
        msg_id = session.execute(f"y = {i}")
        reply = idle = False
        while not (reply and idle):
            got = session.next_message(5.0)
            assert got is not None, "no answer within 5 s"
            channel, msg = got
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            reply = reply or channel == "shell"
            idle = idle or msg["content"].get("execution_state") == "idle"
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--no-quickack", action="store_true", help="leave delayed ACKs on (to see their cost)"
    )
    args = parser.parse_args()
    if args.no_quickack:
        import nbjob.kernel.gateway

        nbjob.kernel.gateway._quick_ack = lambda ws: None
    with tempfile.TemporaryDirectory(prefix="nbjob-bench-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        with jupyter_server(root) as (url, token):
            for kind in ("gateway",) if args.no_quickack else ("local", "gateway"):
                settings = Settings(
                    source="-", output="-", run_id=f"bench-{kind}",
                    gateway_url=url if kind == "gateway" else None,
                )  # fmt: skip
                environ = {"JUPYTER_GATEWAY_AUTH_TOKEN": token}
                session = open_session(
                    settings, "python3", root, workdir=Path(tmp), environ=environ
                )
                session.start()
                try:
                    cells = [t for _ in range(args.rounds) for t in per_cell(session, args.cells)]
                    raw = raw_round_trip(session, args.cells)
                finally:
                    session.shutdown(grace=1)
                print(
                    f"{kind:8s} {args.rounds}x{args.cells} cells: median per cell "
                    f"{statistics.median(cells) * 1000:.1f} ms (p90 "
                    f"{statistics.quantiles(cells, n=10)[-1] * 1000:.1f} ms); raw execute round "
                    f"trip median {statistics.median(raw) * 1000:.1f} ms"
                )


if __name__ == "__main__":
    main()
