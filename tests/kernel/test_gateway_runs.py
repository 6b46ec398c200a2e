"""End-to-end: the ``nbjob`` command with its kernel on a real Jupyter server.

Runs as a platform starts them (a subprocess, settings from the environment), against
``jupyter-server`` (Contents API) and Jupyter Kernel Gateway (no Contents API). Each test checks
what a user sees: exit code, executed notebook, run.json, artifacts, and that the token is in
none of the outputs.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from peers import TOKEN, Peer, jupyter_server_peer, kernel_gateway_peer  # noqa: F401 (fixtures)
from support import make_zip, notebook_json, run_nbjob, start_nbjob, stream_text, wait_until

HELPER = "def answer():\n    return 41 + 1\n"
CELLS = [
    "import helper, os\nprint('answer', helper.answer())",
    "print('data', open('data/values.txt').read().strip())\nprint('cwd', os.getcwd())",
    "out = os.environ['NBJOB_ARTIFACTS_DIR']\n"
    "open(os.path.join(out, 'metric.txt'), 'w').write('0.97')",
]


@pytest.fixture(params=["server", "gateway"])
def peer(request: pytest.FixtureRequest) -> Peer:
    name = "jupyter_server_peer" if request.param == "server" else "kernel_gateway_peer"
    found: Peer = request.getfixturevalue(name)
    return found


def bundle(tmp_path: Path, cells: list[str], **extra: str) -> Path:
    files = {"nb.ipynb": notebook_json(cells), "helper.py": HELPER, **extra}
    return make_zip(tmp_path / "bundle.zip", files)


def outputs(out: Path) -> tuple[Any, dict[str, Any]]:
    return nbformat.read(out / "nb.ipynb", as_version=4), json.loads((out / "run.json").read_text())


def assert_no_token(token: str, out: Path, *texts: str) -> None:
    """``token`` is in none of ``texts`` and no file under ``out``."""
    for text in texts:
        assert token not in text
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert token.encode() not in path.read_bytes(), path


def test_bundle_runs_remotely_with_its_files(peer: Peer, tmp_path: Path) -> None:
    source = bundle(
        tmp_path,
        CELLS,
        **{"data/values.txt": "1 2 3\n", "requirements.txt": "ipykernel>=1\nnbjob-no-such==9\n"},
    )
    out = tmp_path / "out"
    result = run_nbjob("run", source, "--output", out, env=peer.env())
    assert result.returncode == 0, result.stderr[-3000:]
    nb, record = outputs(out)
    text = stream_text(nb)
    assert "answer 42" in text and "data 1 2 3" in text
    cwd = text.split("cwd ", 1)[1].splitlines()[0]
    kernel = record["kernel"]
    assert kernel["kind"] == "gateway" and kernel["gateway_url"] == peer.url
    assert kernel["remote_cwd"] == cwd
    if peer.contents_api:  # the kernel worked in the run's folder under the server's root
        assert kernel["files"] == "contents_api"
        assert cwd == str(peer.root / "nbjob-runs" / record["run_id"] / "bundle")
        assert (peer.root / "nbjob-runs" / record["run_id"] / "bundle" / "helper.py").is_file()
    else:
        assert kernel["files"] == "in_kernel" and not Path(cwd).exists()  # cleaned up
    assert record["unmet_requirements"] == ["nbjob-no-such==9"]
    assert (out / "artifacts" / "metric.txt").read_text() == "0.97"
    assert record["artifacts"] == ["metric.txt"]
    assert_no_token(TOKEN, out, result.stdout, result.stderr)


def test_cell_timeout_interrupts_the_remote_cell_exit_4(
    jupyter_server_peer: Peer,  # noqa: F811
    tmp_path: Path,
) -> None:
    source = bundle(tmp_path, ["print('go', flush=True)\nimport time\ntime.sleep(60)"])
    out = tmp_path / "out"
    started = time.monotonic()
    result = run_nbjob(
        "run", source, "--output", out, "--cell-timeout", "2", env=jupyter_server_peer.env()
    )
    assert result.returncode == 4, result.stderr[-3000:]
    assert time.monotonic() - started < 40
    nb, record = outputs(out)
    assert record["status"] == "timed_out" and record["cells"][0]["status"] == "timed_out"
    assert "go" in stream_text(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]  # banners are markdown cells
    assert "KeyboardInterrupt" in json.dumps(code[0].outputs)  # the interrupt reached it


def test_sigterm_interrupts_the_remote_cell_exit_143(
    jupyter_server_peer: Peer,  # noqa: F811
    tmp_path: Path,
) -> None:
    source = bundle(tmp_path, ["print('go', flush=True)\nimport time\ntime.sleep(60)", "1"])
    out = tmp_path / "out"
    proc = start_nbjob("run", source, "--output", out, env=jupyter_server_peer.env())
    try:
        assert wait_until(lambda: '"text": "go' in proc.output()[1], 60), proc.output()[1]
        sent = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        result = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert result.returncode == 143, result.stderr[-3000:]
    assert time.monotonic() - sent < 10  # within --stop-grace
    nb, record = outputs(out)
    assert record["status"] == "stopped"
    assert [c["status"] for c in record["cells"]] == ["interrupted", "pending"]
    assert "go" in stream_text(nb)
    kernels = jupyter_server_peer.get("api/kernels")
    assert record["kernel"]["kernel_id"] not in [k["id"] for k in kernels]


def test_remote_kernel_death_exit_5(jupyter_server_peer: Peer, tmp_path: Path) -> None:  # noqa: F811
    cells = ["print('before')", "import os\nos.kill(os.getpid(), 9)", "print('never')"]
    out = tmp_path / "out"
    result = run_nbjob(
        "run", bundle(tmp_path, cells), "--output", out, env=jupyter_server_peer.env()
    )
    assert result.returncode == 5, result.stderr[-3000:]
    nb, record = outputs(out)
    assert "before" in stream_text(nb)  # partial results stored
    assert record["status"] == "kernel_died" and record["failed_cell"]["index"] == 1
    # "In [2] (cell 1)" when the kernel's execute_input came before it died; a kernel killed
    # at once may never send it, and then only the index is known.
    assert "remote kernel died" in record["reason"]
    assert re.search(r"while running (In \[2\] \(cell 1\)|cell 1)", record["reason"])
    assert [c["status"] for c in record["cells"]] == ["completed", "kernel_died", "pending"]


@pytest.mark.parametrize("problem", ["token", "unreachable"])
def test_gateway_problems_are_one_line_exit_7(
    jupyter_server_peer: Peer,  # noqa: F811
    tmp_path: Path,
    problem: str,
) -> None:
    env = jupyter_server_peer.env(token="nbjobWrongToken-0000")
    if problem == "unreachable":
        env["NBJOB_GATEWAY_URL"] = "http://127.0.0.1:9"
    out = tmp_path / "out"
    result = run_nbjob("run", bundle(tmp_path, ["1"]), "--output", out, env=env, timeout=60)
    assert result.returncode == 7, result.stderr[-3000:]
    reason = json.loads((out / "run.json").read_text())["reason"]
    assert reason == result.last_event["reason"] and "\n" not in reason
    assert ("refused the credentials" if problem == "token" else "cannot be reached") in reason
    termination = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert termination == []  # nothing but JSON log lines
    assert_no_token("nbjobWrongToken-0000", out, result.stdout, result.stderr)
