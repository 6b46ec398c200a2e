"""Real Jupyter servers on loopback for the kernel-session tests, each with a token.

Test modules import the fixtures (``from peers import jupyter_server_peer, ...``), so only the
modules that need a server see them. A server is started once
per test session however many modules import its fixture.

- ``jupyter_server_peer`` (session): ``jupyter-server`` with a root folder: it has the Contents
  API, so nbjob uploads bundles through it and starts kernels in the run's folder.
- ``kernel_gateway_peer`` (session): Jupyter Kernel Gateway, which has no Contents API (like
  Enterprise Gateway), so files travel through the kernel.

Both are subprocesses in their own process groups, ready when ``GET /api/kernelspecs`` answers
200 (bounded wait), stopped by process group at the end (``support.serve``).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import free_port, serve, starts_processes

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


@starts_processes
def _serve(argv: list[str], root: Path, log: Path, contents_api: bool) -> Iterator[Peer]:
    """The server in its own process group, stopped with the kernels it started (15 s grace)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBJOB_", "JUPYTER_GATE"))}
    argv = [*argv, f"--port={port}"]
    name, ready = Path(argv[0]).name, functools.partial(_ready, url)
    with serve(name, argv, log, ready=ready, env=env, cwd=root, group=True, grace=15) as server:
        yield Peer(url, TOKEN, root, server.pid, contents_api)


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
