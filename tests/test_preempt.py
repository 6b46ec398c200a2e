"""Preemption-proof long runs, against moto on loopback with real signals and real SIGKILL.

- artifacts stream to S3 during the run: a node lost without warning (SIGKILL of nbjob and of
  its kernel's process group) loses only the last checkpoint or two;
- the ``ArtifactStream`` sends a file once it has stopped changing, never a temporary name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import S3Server, wait_until
from helpers import make_zip, notebook_json, start_nbjob
from nbjob.artifacts import ArtifactStream, is_temporary, wait_idle
from nbjob.storage import Storage

pytestmark = pytest.mark.timeout(180)

CHECKPOINTS = (
    "import os, pathlib, time\n"
    "art = pathlib.Path(os.environ['NBJOB_ARTIFACTS_DIR'])\n"
    "pathlib.Path({pidfile!r}).write_text(str(os.getpid()))\n"
    "for i in range(1, {n} + 1):\n"
    "    (art / f'ckpt-{{i:03d}}.bin').write_bytes(os.urandom(200_000))\n"
    "    time.sleep({every})"
)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def test_node_loss_keeps_all_but_the_newest_checkpoints(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    pidfile, work = tmp_path / "kernel.pid", tmp_path / "work"
    cell = CHECKPOINTS.format(pidfile=str(pidfile), n=40, every=1.5)
    source = make_zip(tmp_path / "b.zip", {"nb.ipynb": notebook_json([cell])})
    dest = f"s3://{bucket}/runs/r1"
    run = start_nbjob(
        "run", source, "--output", dest, "--workdir", work, "--run-id", "r1", env=s3_server.env
    )
    art = work / "artifacts"
    try:
        assert wait_until(lambda: len(list(art.glob("ckpt-*.bin"))) >= 8, 90), run.output()
        written = len(list(art.glob("ckpt-*.bin")))
        kernel_pid = int(pidfile.read_text())
    finally:
        _kill_group(run.proc.pid)  # the node is gone: nbjob and its kernel, no grace
        if pidfile.exists():
            _kill_group(int(pidfile.read_text()))
    run.proc.wait(timeout=10)
    assert wait_until(lambda: not _alive(kernel_pid), 10)
    keys = s3_server.keys(bucket, "runs/r1/artifacts/")
    names = [k.rsplit("/", 1)[-1] for k in keys]
    print(f"node loss: {len(names)} of {written} checkpoints reached S3")
    assert len(names) >= written - 2, (names, written)
    assert names == [f"ckpt-{i:03d}.bin" for i in range(1, len(names) + 1)]
    for key in keys:  # every one whole
        assert len(s3_server.get(bucket, key)) == 200_000
    assert "runs/r1/run.json" in s3_server.keys(bucket, "runs/r1/")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stream_sends_settled_files_and_never_temporary_ones(
    s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    folder = tmp_path / "art"
    (folder / "sub").mkdir(parents=True)
    stream = ArtifactStream(
        Storage(s3_server.endpoint_url), f"s3://{bucket}/a", folder, interval=0.1
    ).start()
    try:
        (folder / "sub" / "m.json").write_text('{"a": 1}')
        (folder / "model.pt.tmp").write_bytes(b"half")
        (folder / ".hidden").write_bytes(b"x")
        wait_idle(stream, 10)
        assert s3_server.keys(bucket) == ["a/sub/m.json"]
        os.replace(folder / "model.pt.tmp", folder / "model.pt")  # write-then-rename
        (folder / "sub" / "m.json").write_text('{"a": 2}')
        assert wait_until(lambda: len(s3_server.keys(bucket)) == 2, 10)
        wait_idle(stream, 10)
        assert s3_server.get(bucket, "a/sub/m.json") == b'{"a": 2}'
        assert s3_server.get(bucket, "a/model.pt") == b"half"
        started = time.monotonic()
        (folder / "late.bin").write_bytes(b"late")
        assert stream.flush() == 1  # what is left goes at once, not after two scans
        assert time.monotonic() - started < 5
        assert s3_server.get(bucket, "a/late.bin") == b"late"
    finally:
        stream.close()
    assert is_temporary("x/.y") and is_temporary("a.part") and not is_temporary("a.pt")
