"""Shared fixtures: a real S3-compatible server on loopback, and a flaky proxy in front of it.

- ``s3_server`` (session): moto's standalone server, ``moto_server -H 127.0.0.1 -p PORT``, as a
  subprocess; stopped by PID at the end. It yields an ``S3Server`` with ``endpoint_url``, a boto3
  ``client`` and ``env`` (fake credentials and ``NBJOB_S3_ENDPOINT_URL``) to pass to ``nbjob``.
- ``bucket``: a fresh, uniquely named bucket on that server (each test gets its own).
- ``flaky_proxy``: a factory ``flaky_proxy(fail_first=N)`` for an HTTP proxy in front of moto that
  answers 503 to the first N requests and then forwards; ``proxy.vanish()`` closes it so that
  later requests get "connection refused". Proxies are stopped after the test.

Helpers for notebooks, archives and running ``nbjob`` live in ``helpers.py``.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# The storage servers (s3rver, the GCS emulator, Azurite) and the ``store`` fixture.
sys.path.insert(0, str(Path(__file__).with_name("storage")))
pytest_plugins = ["stores"]

# Distinctive fake credentials: tests grep for them to prove they are never written anywhere.
ACCESS_KEY = "AKIATESTNBJOB00000001"
SECRET_KEY = "nbjobTestSecret/With+Special=Chars0123"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Call ``check`` until it returns something truthy (returned) or ``timeout`` passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# -- the S3 server ------------------------------------------------------------------------------


@dataclass
class S3Server:
    endpoint_url: str
    client: Any  # boto3 S3 client with the fake credentials
    pid: int
    env: dict[str, str] = field(default_factory=dict)

    def env_for(self, endpoint_url: str | None = None) -> dict[str, str]:
        """``env`` with another endpoint (e.g. a proxy's URL)."""
        return {**self.env, "NBJOB_S3_ENDPOINT_URL": endpoint_url or self.endpoint_url}

    def new_bucket(self) -> str:
        name = f"nbjob-test-{uuid.uuid4().hex[:16]}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status < 500)
    except OSError:
        return False


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    import boto3

    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        if not wait_until(lambda: proc.poll() is not None or _answers(endpoint + "/"), 30):
            raise RuntimeError(f"moto_server did not answer on {endpoint} within 30 s")
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}; see {log.name}")
        client = boto3.session.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
        ).client("s3", endpoint_url=endpoint)
        env = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,  # nothing from the machine's ~/.aws
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NBJOB_S3_ENDPOINT_URL": endpoint,
        }
        yield S3Server(endpoint_url=endpoint, client=client, pid=proc.pid, env=env)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A new bucket, unique to this test."""
    return s3_server.new_bucket()


# -- a flaky proxy ------------------------------------------------------------------------------

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "te",
    "upgrade",
    "expect",
}


class FlakyProxy:
    """HTTP proxy to ``upstream`` answering ``status`` to the first ``fail_first`` requests."""

    def __init__(self, upstream: str, fail_first: int = 0, status: int = 503) -> None:
        self.upstream = upstream.split("://", 1)[1].rstrip("/")  # host:port
        self.fail_first = fail_first
        self.status = status
        self.requests = 0  # every request received
        self.failed = 0  # requests answered with ``status``
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._open = True

    def _should_fail(self) -> bool:
        with self._lock:
            self.requests += 1
            if self.failed < self.fail_first:
                self.failed += 1
                return True
            return False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers "Expect: 100-continue" at once

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self) -> None:
                body = self._body()
                if proxy._should_fail():
                    error = (
                        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ServiceUnavailable"
                        b"</Code><Message>flaky proxy</Message></Error>"
                    )
                    self._reply(proxy.status, [("Content-Type", "application/xml")], error)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    self._reply(response.status, response.getheaders(), data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        return Handler

    def vanish(self) -> None:
        """Stop answering: the port is closed, so clients get "connection refused"."""
        if self._open:
            self._open = False
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)


@pytest.fixture
def flaky_proxy(s3_server: S3Server) -> Iterator[Callable[..., FlakyProxy]]:
    """Factory: ``flaky_proxy(fail_first=3, status=503)`` -> a FlakyProxy in front of moto."""
    proxies: list[FlakyProxy] = []

    def make(fail_first: int = 0, status: int = 503) -> FlakyProxy:
        proxy = FlakyProxy(s3_server.endpoint_url, fail_first, status)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.vanish()
