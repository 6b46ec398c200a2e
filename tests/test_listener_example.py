"""The worked example of docs/trackers/listeners.md, as written there: its module and its entry
point are read from the page, installed in a temporary folder as pip would install them, and
``nbjob run --listener webhook`` posts the run's end to a webhook server on loopback (a thread
of this process)."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support import make_notebook, run_nbjob

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PAGE = Path(__file__).resolve().parents[1] / "docs" / "trackers" / "listeners.md"
GLUE = (
    "from IPython.display import display\n"
    "display({'application/scrapbook.scrap.json+json':\n"
    "         {'name': 'accuracy', 'data': 0.93, 'encoder': 'json', 'version': 1}},\n"
    "        raw=True, metadata={'scrapbook': {'name': 'accuracy'}})"
)


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(), re.S)


def install_example(site: Path) -> None:
    """The page's package, as pip installs it: the module and a .dist-info whose
    entry_points.txt holds the page's ``[project.entry-points."nbjob.listeners"]``."""
    (module,) = _blocks("python")
    (toml,) = _blocks("toml")
    project = tomllib.loads(toml)["project"]
    site.mkdir()
    (site / "nbjob_webhook.py").write_text(module)
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    points = project["entry-points"]["nbjob.listeners"]
    lines = [f"{name} = {target}" for name, target in points.items()]
    (info / "entry_points.txt").write_text("[nbjob.listeners]\n" + "\n".join(lines) + "\n")


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[Any]]]:
    """A webhook on loopback: the JSON bodies it received."""
    received: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/runs", received
    finally:
        server.shutdown()
        server.server_close()


def test_the_documented_webhook_listener_posts_the_run_end(
    tmp_path: Path, webhook: tuple[str, list[Any]]
) -> None:
    url, received = webhook
    site, out = tmp_path / "site", tmp_path / "out"
    install_example(site)
    nb = make_notebook(tmp_path / "nb.ipynb", [GLUE, "1 / 0"])
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "WEBHOOK_URL": url}
    result = run_nbjob("run", nb, "--output", out, "--listener", "webhook", "--run-id", "hook-1",
                       env=env)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert received == [
        {
            "run_id": "hook-1",
            "status": "failed",
            "exit_code": 1,
            "results": str(out),
            "metrics": {"accuracy": 0.93},
        }
    ]


def test_the_documented_listener_without_its_variable_is_a_usage_error(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_example(site)
    nb = make_notebook(tmp_path / "nb.ipynb", ["open('ran', 'w').close()"])
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    result = run_nbjob("run", nb, "--output", tmp_path / "out", "--listener", "webhook",
                       env={"PYTHONPATH": path}, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert "listener 'webhook' could not be loaded: KeyError" in result.stderr
    assert not (tmp_path / "ran").exists()
