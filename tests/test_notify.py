"""``--notify URL``: the run's end POSTed to a real HTTP server on loopback, for a success and a
failure; a URL that never answers changes nothing; the URL's credentials never reach a log."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support import notebook, read_json, run_nbjob

pytestmark = pytest.mark.e2e

GLUE = (
    "display({'application/scrapbook.scrap.json+json':\n"
    "         {'name': 'loss', 'data': 0.25, 'encoder': 'json', 'version': 1}},\n"
    "        raw=True, metadata={'scrapbook': {'name': 'loss'}})"
)
PASSWORD = "hunter2-webhook-password"
KEY = "T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"  # a webhook's secret path, as Slack's


class Hook(ThreadingHTTPServer):
    """A webhook on loopback: the requests it received (path, headers, JSON body)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.server_address[1]}/services/{KEY}"


class _Handler(BaseHTTPRequestHandler):
    server: Hook

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(
            {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
        )
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("last", "code", "status"),
    [("print('done')", 0, "succeeded"), ("raise ValueError('boom')", 1, "failed")],
)
def test_the_run_end_is_posted(
    tmp_path: Path, hook: Hook, last: str, code: int, status: str
) -> None:
    nb = notebook(tmp_path / "nb.ipynb", GLUE, last)
    out = tmp_path / "out"
    url = hook.url(f"bot:{PASSWORD}@")
    result = run_nbjob("run", nb, "--output", out, "--notify", url, "--run-id", "r-7")
    assert result.returncode == code, result.stderr
    [request] = hook.received
    body = request["body"]
    assert request["path"] == f"/services/{KEY}"
    assert request["headers"]["Content-Type"] == "application/json"
    auth = base64.b64decode(request["headers"]["Authorization"].split()[1]).decode()
    assert auth == f"bot:{PASSWORD}"
    assert body["run_id"] == "r-7" and body["attempt"] == 1
    assert (body["status"], body["exit_code"]) == (status, code)
    assert body["metrics"] == {"loss": 0.25}
    assert body["output"] == str(out) and body["stored"] is True
    assert body["notebook"] == str(out / "nb.ipynb")
    assert body["report"] == str(out / "nb.html")
    assert body["duration_s"] == read_json(out / "run.json")["duration_s"]
    assert f"nbjob run r-7 {status} (exit {code})" in body["text"]
    assert str(out / "nb.ipynb") in body["text"] and "loss=0.25" in body["text"]
    if code:
        assert "ValueError: boom" in body["reason"] and "ValueError: boom" in body["text"]
    log = (out / "executor.log").read_text()
    for where in (log, result.stderr, (out / "run.json").read_text()):
        assert PASSWORD not in where and KEY not in where
    assert '"event": "notified"' in log


def test_a_notify_url_that_never_answers_changes_nothing(tmp_path: Path, hook: Hook) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections are taken, never answered
    try:
        nb = notebook(tmp_path / "nb.ipynb", "print('ok')")
        out = tmp_path / "out"
        never = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        result = run_nbjob(
            "run", nb, "--output", out, "--notify", never, "--notify", hook.url(), "--no-report"
        )
    finally:
        silent.close()
    assert result.returncode == 0, result.stderr
    assert read_json(out / "run.json")["status"] == "succeeded"
    events = [json.loads(line) for line in (out / "executor.log").read_text().splitlines()]
    failed = [e for e in events if e["event"] == "notify_failed"]
    assert failed and failed[0]["url"].endswith("/…") and "/hook" not in failed[0]["url"]
    [request] = hook.received  # the other URL got its message all the same
    assert request["body"]["status"] == "succeeded"
