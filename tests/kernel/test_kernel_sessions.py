"""One contract for every kind of kernel session, each against a real kernel.

Kinds: ``local`` (jupyter_client on this machine), ``server`` (a gateway session to a real
``jupyter-server`` with a token; files through its Contents API) and ``gateway`` (a gateway
session to Jupyter Kernel Gateway, which has no Contents API; files through the kernel).
Sessions are made by ``nbjob.kernel.open_session`` from settings, as nbjob makes them.
"""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nbjob.config import Settings
from nbjob.errors import DeadKernelError
from nbjob.kernel import KernelSession, open_session
from peers import Peer, jupyter_server_peer, kernel_gateway_peer  # noqa: F401 (fixtures)
from support import pid_exists, wait_until

# Kernels start in fixtures, by ``session.start()`` and ``request.getfixturevalue``, which the
# automatic rule cannot see: so the module says it (support/e2e.py).
pytestmark = pytest.mark.e2e

KINDS = ["local", "server", "gateway"]
MISSING = "nbjob-no-such-package==1.0"


def _peer(kind: str, request: pytest.FixtureRequest) -> Peer | None:
    if kind == "local":
        return None
    name = "jupyter_server_peer" if kind == "server" else "kernel_gateway_peer"
    peer: Peer = request.getfixturevalue(name)
    return peer


def _open(kind: str, peer: Peer | None, workdir: Path, run_id: str) -> KernelSession:
    settings = Settings(
        source="-",
        output="-",
        run_id=run_id,
        gateway_url=peer.url if peer else None,
        kernel_start_timeout=60,
    )
    environ = peer.env() if peer else {}
    (workdir / "artifacts").mkdir(parents=True, exist_ok=True)
    env = {"NBJOB_ARTIFACTS_DIR": str(workdir / "artifacts")}
    session = open_session(settings, "python3", workdir, workdir=workdir, env=env, environ=environ)
    session.start()
    return session


@pytest.fixture
def fresh(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str], KernelSession]]:
    """Factory: a newly started session of a kind, shut down after the test."""
    made: list[KernelSession] = []

    def make(kind: str) -> KernelSession:
        workdir = tmp_path / f"{kind}-{len(made)}"
        workdir.mkdir()
        made.append(_open(kind, _peer(kind, request), workdir, f"{tmp_path.name}-{len(made)}"))
        return made[-1]

    yield make
    for session in made:
        session.shutdown(grace=0)


@pytest.fixture(scope="module", params=KINDS)
def session(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KernelSession]:
    """One started session per kind, shared by the tests that leave it as they found it."""
    workdir = tmp_path_factory.mktemp(f"session-{request.param}")
    started = _open(request.param, _peer(request.param, request), workdir, workdir.name)
    yield started
    started.shutdown(grace=0)


def collect(
    session: KernelSession, msg_id: str, timeout: float = 30
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The execute_reply and the IOPub messages of ``msg_id``, up to its 'idle'."""
    reply: dict[str, Any] | None = None
    iopub: list[dict[str, Any]] = []
    idle = False
    end = time.monotonic() + timeout
    while not (reply and idle):
        assert time.monotonic() < end, f"no reply/idle within {timeout} s: {iopub}"
        got = session.next_message(0.25)
        if got is None or got[1]["parent_header"].get("msg_id") != msg_id:
            continue
        channel, msg = got
        if channel == "shell":
            reply = msg
        else:
            iopub.append(msg)
            idle = idle or msg["content"].get("execution_state") == "idle"
    return reply, iopub


def run(session: KernelSession, code: str) -> tuple[dict[str, Any], str]:
    """Execute ``code``; the reply content and all stream text."""
    reply, iopub = collect(session, session.execute(code))
    text = "".join(m["content"]["text"] for m in iopub if m["msg_type"] == "stream")
    return reply["content"], text


# -- the contract -------------------------------------------------------------------------------


def test_execute_gives_outputs_in_order(session: KernelSession) -> None:
    assert session.language == "python"
    assert session.info.get("implementation") == "ipython"
    reply, iopub = collect(session, session.execute("print('hi')\n6 * 7"))
    assert reply["content"]["status"] == "ok"
    kinds = [m["msg_type"] for m in iopub]
    assert kinds[0] == "status" and kinds[-1] == "status"
    assert kinds.index("stream") < kinds.index("execute_result")
    stream = next(m for m in iopub if m["msg_type"] == "stream")
    assert stream["content"] == {"name": "stdout", "text": "hi\n"}
    result = next(m for m in iopub if m["msg_type"] == "execute_result")
    assert result["content"]["data"]["text/plain"] == "42"


def test_interrupt_stops_a_sleeping_cell(session: KernelSession) -> None:
    msg_id = session.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
    end = time.monotonic() + 30
    while True:  # wait until the cell is really running
        assert time.monotonic() < end, "the cell never printed"
        got = session.next_message(0.25)
        if got and got[1]["msg_type"] == "stream" and "sleeping" in got[1]["content"]["text"]:
            break
    started = time.monotonic()
    session.interrupt()
    reply, _ = collect(session, msg_id, timeout=15)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - started < 10
    assert session.alive()
    assert run(session, "print('still here')")[1] == "still here\n"


def test_gpu_probe_reports_its_shape(session: KernelSession) -> None:
    probe = session.probe_gpus()
    assert set(probe) >= {"gpus", "nvidia_smi", "error", "env"}
    assert isinstance(probe["gpus"], list) and isinstance(probe["env"], dict)
    for gpu in probe["gpus"]:
        assert set(gpu) == {"index", "name", "memory"}


def test_requirements_are_checked_inside_the_kernel(session: KernelSession) -> None:
    lines = ["ipykernel>=1", "ipykernel==0.0.1", MISSING, "nbformat; python_version < '3'"]
    assert session.check_requirements(lines) == ["ipykernel==0.0.1", MISSING]
    # Without ``packaging`` in the kernel: names and == pins are still checked.
    hide = "import sys; sys.modules['packaging.requirements'] = None"
    assert run(session, hide)[0]["status"] == "ok"
    try:
        assert session.check_requirements(lines[:3]) == ["ipykernel==0.0.1", MISSING]
    finally:
        run(session, "del sys.modules['packaging.requirements']")
    assert session.check_requirements([]) == []


def test_a_local_ipython_kernel_keeps_its_history_in_memory_and_replies_without_a_sleep(
    fresh: Callable[[str], KernelSession],
) -> None:
    # as nbclient and papermill start kernels: no SQLite commit per cell, no shared history file
    session = fresh("local")
    ip = "get_ipython()"
    reply = session.run_silent(
        "", {"h": f"str({ip}.history_manager.hist_file)", "s": f"{ip}.kernel._execute_sleep"}
    )
    assert reply["user_expressions"]["h"]["data"]["text/plain"] == "':memory:'"
    assert reply["user_expressions"]["s"]["data"]["text/plain"] == "0.0"
    reply, _ = collect(session, session.execute("x = 1"))
    assert reply["content"]["status"] == "ok" and reply["content"]["execution_count"] == 1


def test_kernel_death_is_noticed(fresh: Callable[[str], KernelSession], kind: str) -> None:
    session = fresh(kind)
    session.execute("import os, time\ntime.sleep(0.3)\nos.kill(os.getpid(), 9)")
    end = time.monotonic() + 20
    while session.alive():
        assert time.monotonic() < end, "death not noticed within 20 s"
        session.next_message(0.25)
    error = session.died("while testing", cell_index=3)
    assert isinstance(error, DeadKernelError) and error.exit_code == 5
    assert error.details["cell_index"] == 3 and error.reason.endswith(
        "while testing" if kind == "local" else "the out-of-memory killer"
    )
    assert ("SIGKILL" if kind == "local" else "remote kernel died") in error.reason


def kernel_pid(session: KernelSession, code: str) -> int:
    """Run ``code`` (which imports os) in the kernel; the kernel's process id."""
    reply = session.run_silent(code, {"pid": "os.getpid()"})
    return int(reply["user_expressions"]["pid"]["data"]["text/plain"])


def test_shutdown_ends_the_kernel(
    fresh: Callable[[str], KernelSession], kind: str, request: pytest.FixtureRequest
) -> None:
    session = fresh(kind)
    pid = kernel_pid(session, "import os")
    kernel_id = getattr(session, "kernel_id", None)
    session.shutdown(grace=2)
    assert not session.alive()
    end = time.monotonic() + 15
    while pid_exists(pid):  # every kind's kernel runs on this machine in these tests
        assert time.monotonic() < end, f"kernel process {pid} still there"
        time.sleep(0.1)
    if kernel_id is not None:
        peer = _peer(kind, request)
        assert peer is not None
        with pytest.raises(urllib.error.HTTPError) as gone:
            peer.get(f"api/kernels/{kernel_id}")
        assert gone.value.code == 404
    session.shutdown(grace=0)  # a second shutdown is harmless


def test_a_shutdown_during_a_graceful_one_kills_the_kernel_at_once(
    fresh: Callable[[str], KernelSession],
) -> None:
    # a stop while the finished run's kernel runs its exit handlers: the job's main thread asks
    # again with no grace while the graceful shutdown goes on in a worker thread
    session = fresh("local")
    pid = kernel_pid(session, "import atexit, os, time\natexit.register(time.sleep, 60)")
    graceful = threading.Thread(target=session.shutdown, args=(30,), daemon=True)
    graceful.start()
    time.sleep(0.5)  # the graceful shutdown is under way: the kernel sleeps in its exit handler
    assert pid_exists(pid) and graceful.is_alive()
    started = time.monotonic()
    session.shutdown(grace=0)
    graceful.join(10)
    assert not graceful.is_alive() and not session.alive()
    assert time.monotonic() - started < 5  # not the 30 s grace, nor the 60 s handler
    assert wait_until(lambda: not pid_exists(pid), 5)


def test_a_kernel_that_does_not_exit_is_terminated_at_half_the_grace(
    fresh: Callable[[str], KernelSession],
) -> None:
    # a kernel stuck in its exit (a thread that never ends holds the interpreter's shutdown, as
    # ipykernel's own shutdown race holds its main thread): TERM at grace / 2, not after it
    session = fresh("local")
    code = "import os, threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()"
    pid = kernel_pid(session, code)
    started = time.monotonic()
    session.shutdown(grace=6)
    took = time.monotonic() - started
    assert not session.alive() and wait_until(lambda: not pid_exists(pid), 5)
    assert 2.5 < took < 4.5  # TERM at 3 s (the thread dies with it), not after the 6 s


def test_files_reach_the_kernel_and_artifacts_come_back(
    fresh: Callable[[str], KernelSession], kind: str, tmp_path: Path
) -> None:
    root = tmp_path / "bundle"
    (root / "data").mkdir(parents=True)
    (root / "sub").mkdir()
    blob = bytes(range(256)) * 6000  # 1.5 MB: more than one in-kernel chunk
    (root / "helper.py").write_text("def answer():\n    return 42\n")
    (root / "data" / "blob.bin").write_bytes(blob)
    (root / "sub" / "inner.txt").write_text("inner\n")
    (root / ".settings").write_text("hidden\n")
    session = fresh(kind)
    session.upload_files(root)
    session.chdir(root)  # as nbjob does where the kernel started elsewhere
    code = (
        "import helper, hashlib, os\n"
        "print(helper.answer(), open('.settings').read().strip())\n"
        "print(hashlib.sha256(open('data/blob.bin', 'rb').read()).hexdigest())\n"
        "os.makedirs(os.path.join(os.environ['NBJOB_ARTIFACTS_DIR'], 'out'), exist_ok=True)\n"
        "open(os.path.join(os.environ['NBJOB_ARTIFACTS_DIR'], 'out', 'm.bin'), 'wb')"
        ".write(bytes(range(256)))"
    )
    reply, text = run(session, code)
    assert reply["status"] == "ok", reply
    assert text.splitlines() == ["42 hidden", hashlib.sha256(blob).hexdigest()]
    session.chdir(root / "sub")
    assert run(session, "print(open('inner.txt').read(), end='')")[1] == "inner\n"
    # A local kernel writes straight into nbjob's artifacts folder; a remote one's come back.
    dest = _local_artifacts(session) if kind == "local" else tmp_path / "back"
    names = session.fetch_artifacts(dest)
    assert names == ([] if kind == "local" else ["out/m.bin"])
    assert (dest / "out" / "m.bin").read_bytes() == bytes(range(256))


def _local_artifacts(session: KernelSession) -> Path:
    return Path(session.env["NBJOB_ARTIFACTS_DIR"])  # type: ignore[attr-defined]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)
