"""Real Jupyter servers on loopback for the kernel-session tests, each with a token.

Test modules import the fixtures (``from peers import jupyter_server_peer, ...``): a second
conftest.py would replace the one ``from conftest import ...`` finds. A server is started once
per test session however many modules import its fixture.

- ``jupyter_server_peer`` (session): ``jupyter-server`` with a root folder: it has the Contents
  API, so nbjob uploads bundles through it and starts kernels in the run's folder.
- ``kernel_gateway_peer`` (session): Jupyter Kernel Gateway, which has no Contents API (like
  Enterprise Gateway), so files travel through the kernel.

Both are subprocesses in their own process groups, ready when ``GET /api/kernelspecs`` answers
200 (bounded wait), stopped by PID at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, wait_until

TOKEN = "nbjobGatewayToken-5f3a9c"  # distinctive: tests grep for it in every output


@dataclass
class Peer:
    url: str
    token: str
    root: Path  # where the server's kernels start (Contents API root for jupyter-server)
    pid: int
    contents_api: bool

    def env(self, token: str | None = None) -> dict[str, str]:
        """Variables that point ``nbjob`` at this server."""
        return {"NBJOB_GATEWAY_URL": self.url, "JUPYTER_GATEWAY_AUTH_TOKEN": token or self.token}

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.url}/{path}", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")


def _ready(url: str) -> bool:
    request = urllib.request.Request(
        f"{url}/api/kernelspecs", headers={"Authorization": f"token {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _serve(argv: list[str], root: Path, log: Path, contents_api: bool) -> Iterator[Peer]:
    port = free_port()
    out = log.open("wb")
    proc = subprocess.Popen(
        [*argv, f"--port={port}"],
        cwd=root,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("NBJOB_", "JUPYTER_GATE"))},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until(lambda: proc.poll() is not None or _ready(url), 60, 0.2):
            raise RuntimeError(f"{argv[0]} did not answer on {url} within 60 s; see {log}")
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited with {proc.returncode}; see {log}")
        yield Peer(url, TOKEN, root, proc.pid, contents_api)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the kernels it started
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        out.close()


_running: dict[str, Peer] = {}


def _shared(key: str, peers: Iterator[Peer]) -> Iterator[Peer]:
    """The first module's fixture starts (and at the end stops) the server; others reuse it."""
    for peer in peers:
        _running[key] = peer
        try:
            yield peer
        finally:
            _running.pop(key, None)


@pytest.fixture(scope="session")
def jupyter_server_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    if "server" in _running:
        yield _running["server"]
        return
    base = tmp_path_factory.mktemp("jupyter-server")
    root = base / "root"
    root.mkdir()
    argv = [
        str(Path(sys.executable).with_name("jupyter-server")),
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
        "--allow-root",
        "--no-browser",
    ]
    yield from _shared("server", _serve(argv, root, base / "server.log", contents_api=True))


@pytest.fixture(scope="session")
def kernel_gateway_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    if "gateway" in _running:
        yield _running["gateway"]
        return
    base = tmp_path_factory.mktemp("kernel-gateway")
    argv = [
        str(Path(sys.executable).with_name("jupyter-kernelgateway")),
        "--KernelGatewayApp.ip=127.0.0.1",
        f"--KernelGatewayApp.auth_token={TOKEN}",
    ]
    yield from _shared("gateway", _serve(argv, base, base / "gateway.log", contents_api=False))
