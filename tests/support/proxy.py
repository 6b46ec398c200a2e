"""An HTTP proxy in front of an S3 server that fails the first requests, then forwards.

``FlakyProxy(upstream, fail_first=N)`` answers ``status`` (503) to the first N requests;
``hold="run.json", hold_s=S`` holds the first request whose path holds that text S seconds
before forwarding it (a slow store, to stop a run in the middle of a read); ``held`` is set
when it arrives. ``vanish()`` closes its port so that later requests get "connection refused".
``sent`` and ``received`` count the bytes of request bodies and of successful (2xx) response
bodies by object path (the path without its query: a multipart upload's parts add up under
their object's path), for
measuring what a run uploads and what a reader downloads; ``requests_by`` counts the requests.
It runs in a thread of the test process (no process is started).
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FlakyProxy"]

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

    def __init__(
        self,
        upstream: str,
        fail_first: int = 0,
        status: int = 503,
        hold: str | None = None,
        hold_s: float = 0.0,
    ) -> None:
        self.upstream = upstream.split("://", 1)[1].rstrip("/")  # host:port
        self.fail_first = fail_first
        self.status = status
        self.hold = hold
        self.hold_s = hold_s
        self.held = threading.Event()
        self.requests = 0  # every request received
        self.failed = 0  # requests answered with ``status``
        self.sent: Counter[str] = Counter()  # request body bytes by object path
        self.received: Counter[str] = Counter()  # response body bytes by object path
        self.requests_by: Counter[str] = Counter()  # "METHOD path" -> requests
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._open = True

    def _should_fail(self, path: str) -> bool:
        with self._lock:
            self.requests += 1
            hold = self.hold is not None and self.hold in path and not self.held.is_set()
            if hold:
                self.held.set()
        if hold:
            threading.Event().wait(self.hold_s)
        with self._lock:
            if self.failed < self.fail_first:
                self.failed += 1
                return True
            return False

    def _count(self, method: str, path: str, status: int, sent: int, received: int) -> None:
        key = path.split("?", 1)[0]
        with self._lock:
            self.sent[key] += sent
            self.received[key] += received if 200 <= status < 300 else 0
            self.requests_by[f"{method} {key}"] += 1

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
                if proxy._should_fail(self.path):
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
                    proxy._count(self.command, self.path, response.status, len(body), len(data))
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
