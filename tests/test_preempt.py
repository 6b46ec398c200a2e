"""Preemption-proof long runs, against moto on loopback with real signals and real SIGKILL.

- artifacts stream to S3 during the run: a node lost without warning (SIGKILL of nbjob and of
  its kernel's process group) loses only the last checkpoint or two;
- the ``ArtifactStream`` sends a file once it has stopped changing, never a temporary name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nbjob.artifacts import ArtifactStream, generation, is_temporary
from nbjob.storage import Options, Storage
from support import (
    S3Server,
    make_zip,
    notebook_json,
    pid_exists,
    read_json,
    run_nbjob,
    start_nbjob,
    wait_idle,
    wait_until,
)

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
    assert wait_until(lambda: not pid_exists(kernel_pid), 10)
    keys = s3_server.keys(bucket, "runs/r1/artifacts/")
    names = [k.rsplit("/", 1)[-1] for k in keys]
    print(f"node loss: {len(names)} of {written} checkpoints reached S3")
    assert len(names) >= written - 2, (names, written)
    assert names == [f"ckpt-{i:03d}.bin" for i in range(1, len(names) + 1)]
    for key in keys:  # every one whole
        assert len(s3_server.get(bucket, key)) == 200_000
    assert "runs/r1/run.json" in s3_server.keys(bucket, "runs/r1/")


def test_stream_sends_settled_files_and_never_temporary_ones(
    s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    folder = tmp_path / "art"
    (folder / "sub").mkdir(parents=True)
    stream = ArtifactStream(
        Storage(Options(s3_server.endpoint_url)), f"s3://{bucket}/a", folder, interval=0.1
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


# -- attempts and resume ----------------------------------------------------------------------

EPOCHS = (
    "import json, os, pathlib, time\n"
    "art = pathlib.Path(os.environ['NBJOB_ARTIFACTS_DIR'])\n"
    "pathlib.Path({pidfile!r}).write_text(str(os.getpid()))\n"
    "ckpt = art / 'state.json'\n"
    "start = json.loads(ckpt.read_text())['epoch'] if ckpt.exists() else 0\n"
    "print(f'attempt {{os.environ[\"NBJOB_ATTEMPT\"]}} starts at epoch {{start}}')\n"
    "epoch = start\n"
    "for epoch in range(start + 1, {epochs} + 1):\n"
    "    time.sleep({every})\n"
    "    (art / 'state.json.tmp').write_text(json.dumps({{'epoch': epoch}}))\n"
    "    os.replace(art / 'state.json.tmp', ckpt)\n"
    "print('done at epoch', epoch)"
)


def _epochs_bundle(tmp_path: Path, epochs: int = 6, every: float = 1.0) -> tuple[Path, Path]:
    pidfile = tmp_path / "kernel.pid"
    cell = EPOCHS.format(pidfile=str(pidfile), epochs=epochs, every=every)
    return make_zip(tmp_path / "b.zip", {"nb.ipynb": notebook_json([cell])}), pidfile


def _s3_json(s3: S3Server, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(s3.get(bucket, key)))
    except Exception:
        return None


def test_sigkill_then_retry_resumes_from_the_checkpoint_in_s3(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    source, pidfile = _epochs_bundle(tmp_path)
    dest = f"s3://{bucket}/runs/r1"
    args = ("run", source, "--output", dest, "--run-id", "r1")
    first = start_nbjob(*args, env=s3_server.env)
    try:
        state = wait_until(
            lambda: (
                (_s3_json(s3_server, bucket, "runs/r1/artifacts/state.json") or {}).get("epoch", 0)
                >= 3
            ),
            60,
        )
        assert state, first.output()
    finally:
        _kill_group(first.proc.pid)  # node lost: nbjob and its kernel
        if pidfile.exists():
            _kill_group(int(pidfile.read_text()))
    first.proc.wait(timeout=10)
    saved = _s3_json(s3_server, bucket, "runs/r1/artifacts/state.json")
    assert saved and saved["epoch"] >= 3

    second = start_nbjob(*args, env=s3_server.env).wait(90)
    assert second.returncode == 0, second.stderr
    record = _s3_json(s3_server, bucket, "runs/r1/run.json")
    assert record and (record["attempt"], record["resumed_from"]) == (2, 1)
    assert [e["attempt"] for e in record["earlier_attempts"]] == [1]
    assert record["earlier_attempts"][0]["status"] == "ended_without_record"  # SIGKILLed
    nb = s3_server.get(bucket, "runs/r1/nb.ipynb").decode()
    assert f"attempt 2 starts at epoch {saved['epoch']}" in nb and "done at epoch 6" in nb
    keys = s3_server.keys(bucket, "runs/r1/attempts/")
    kept = ("executor.log", "nb.ipynb", "resources.jsonl", "run.json")
    assert keys == [f"runs/r1/attempts/1/{n}" for n in kept]
    old = _s3_json(s3_server, bucket, "runs/r1/attempts/1/run.json")
    assert old and old["attempt"] == 1 and old["run_id"] == "r1"
    assert (
        "attempt 1 starts at epoch 0"
        in s3_server.get(bucket, "runs/r1/attempts/1/nb.ipynb").decode()
    )


def test_sigterm_then_retry_resumes_locally_and_no_resume_starts_over(tmp_path: Path) -> None:
    source, _ = _epochs_bundle(tmp_path, epochs=4, every=0.5)
    dest = tmp_path / "out"
    args = ("run", source, "--output", dest, "--run-id", "r2")
    first = start_nbjob(*args)
    state = dest / "artifacts" / "state.json"
    assert wait_until(lambda: state.exists() and json.loads(state.read_text())["epoch"] >= 2, 60)
    first.proc.send_signal(signal.SIGTERM)
    assert first.wait(30).returncode == 143
    epoch = json.loads(state.read_text())["epoch"]

    second = run_nbjob(*args)
    assert second.returncode == 0, second.stderr
    record = read_json(dest / "run.json")
    assert (record["attempt"], record["resumed_from"]) == (2, 1)
    assert record["earlier_attempts"][0]["status"] == "stopped"
    assert f"attempt 2 starts at epoch {epoch}" in (dest / "nb.ipynb").read_text()
    assert read_json(dest / "attempts/1/run.json")["exit_code"] == 143
    assert (dest / "attempts/1/executor.log").read_text().count('"run_start"') == 1

    third = run_nbjob(*args, "--no-resume")
    assert third.returncode == 0, third.stderr
    record = read_json(dest / "run.json")
    assert (record["attempt"], record["resumed_from"]) == (3, None)
    assert [e["attempt"] for e in record["earlier_attempts"]] == [1, 2]
    assert "attempt 3 starts at epoch 0" in (dest / "nb.ipynb").read_text()
    assert json.loads((dest / "attempts/2/artifacts/state.json").read_text())["epoch"] == 4


def test_the_same_command_again_continues_the_run_and_new_run_starts_another(
    tmp_path: Path,
) -> None:
    """No run id given (a rerun by hand): the second attempt takes the destination's run id
    and resumes; the log says why. ``--new-run``: a run of its own, nothing restored."""
    source, _ = _epochs_bundle(tmp_path, epochs=4, every=0.5)
    dest = tmp_path / "out"
    first = start_nbjob("run", source, "--output", dest)
    state = dest / "artifacts" / "state.json"
    assert wait_until(lambda: state.exists() and json.loads(state.read_text())["epoch"] >= 2, 60)
    first.proc.send_signal(signal.SIGTERM)
    assert first.wait(30).returncode == 143
    epoch, run_id = json.loads(state.read_text())["epoch"], read_json(dest / "run.json")["run_id"]

    second = run_nbjob("run", source, "--output", dest)
    assert second.returncode == 0, second.stderr
    record = read_json(dest / "run.json")
    assert (record["run_id"], record["attempt"], record["resumed_from"]) == (run_id, 2, 1)
    assert f"attempt 2 starts at epoch {epoch}" in (dest / "nb.ipynb").read_text()
    said = next(e for e in second.events if e["event"] == "attempt")
    assert said["resume"].startswith("a rerun continues the destination's run"), said
    assert {e["run_id"] for e in second.events if "run_id" in e} == {run_id}

    third = run_nbjob("run", source, "--output", dest, "--new-run")
    assert third.returncode == 0, third.stderr
    record = read_json(dest / "run.json")
    assert record["run_id"] != run_id and (record["attempt"], record["resumed_from"]) == (3, None)
    assert "attempt 3 starts at epoch 0" in (dest / "nb.ipynb").read_text()
    said = next(e for e in third.events if e["event"] == "attempt")
    assert said["resume"] == "--new-run given", said


def test_the_platform_s_attempt_number(tmp_path: Path) -> None:
    source, _ = _epochs_bundle(tmp_path, epochs=1, every=0)
    dest = tmp_path / "out"
    result = run_nbjob("run", source, "--output", dest, env={"SLURM_RESTART_COUNT": "3"})
    assert result.returncode == 0, result.stderr
    assert read_json(dest / "run.json")["attempt"] == 4
    assert "attempt 4 starts" in (dest / "nb.ipynb").read_text()
    again = run_nbjob("run", source, "--output", dest, "--attempt", "2")
    assert again.returncode == 0, again.stderr  # a lower number is never reused
    assert read_json(dest / "run.json")["attempt"] == 5
    assert read_json(dest / "attempts/4/run.json")["attempt"] == 4


def test_a_file_replaced_often_by_rename_still_goes_up_during_the_run(
    s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    folder = tmp_path / "art"
    folder.mkdir()
    storage = Storage(Options(s3_server.endpoint_url))
    stream = ArtifactStream(storage, f"s3://{bucket}/a", folder).start()
    seen: set[bytes] = set()
    try:
        for step in range(120):  # a checkpoint every 50 ms for 6 s, never still for a scan
            (folder / "ckpt.json.tmp").write_text(str(step))
            os.replace(folder / "ckpt.json.tmp", folder / "ckpt.json")
            time.sleep(0.05)
            if s3_server.keys(bucket):
                seen.add(s3_server.get(bucket, "a/ckpt.json"))
    finally:
        stream.close()
    assert len(seen) >= 2, seen  # several whole snapshots went up while it kept changing
    assert all(int(v) in range(120) for v in seen)


def test_a_file_given_its_old_inode_number_back_is_still_seen_replaced(tmp_path: Path) -> None:
    """Replaced twice between two scans, a file on ext4 or XFS has its old inode number back
    (the freed one goes to the next new file) and its status change in the same clock tick as
    its write: the inode's generation still tells it was replaced, so it is sent by the second
    scan, while a file rewritten in place waits until it is still."""
    stream = ArtifactStream(Storage(Options()), "s3://bucket/a", tmp_path)  # scanned by hand
    ckpt, log = tmp_path / "ckpt.json", tmp_path / "train.log"

    def checkpoint_twice(epoch: int) -> None:
        for step in range(2):
            (tmp_path / "ckpt.json.tmp").write_text(f"{epoch}.{step}")
            os.replace(tmp_path / "ckpt.json.tmp", ckpt)
        with log.open("a") as f:
            f.write(f"epoch {epoch}\n")

    checkpoint_twice(0)
    stream.ready()  # the files seen once
    number = ckpt.stat().st_ino
    checkpoint_twice(1)
    first = stream.ready()
    checkpoint_twice(2)
    second = stream.ready()
    assert "train.log" not in first and "train.log" not in second  # in place, never still
    if ckpt.stat().st_ino != number:
        assert "ckpt.json" in first  # a new inode number: replaced, plainly
    elif generation(ckpt) is None:
        pytest.skip("this filesystem reuses inode numbers and keeps no generation")
    else:
        assert "ckpt.json" in second, (first, second)


# -- bounded storage waits --------------------------------------------------------------------


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A loopback endpoint that accepts connections and never answers; its URL."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():  # ends with the fixture
            with contextlib.suppress(TimeoutError, OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        done.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def test_a_black_holed_store_is_exit_6_within_the_storage_timeout(
    s3_server: S3Server, black_hole: str, tmp_path: Path
) -> None:
    env = s3_server.env_for(black_hole)
    started = time.monotonic()
    result = run_nbjob(
        "run", "s3://b/in/b.zip", "--output", "s3://b/out", "--storage-timeout", "6",
        env={**env, "TMPDIR": str(tmp_path)}, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    took = time.monotonic() - started
    print(f"black hole: exit {result.returncode} after {took:.1f} s (--storage-timeout 6)")
    assert result.returncode == 6, result.stderr
    assert took < 6 + 6, took  # the budget, plus nbjob's start and end
    reason = result.last_event["reason"]
    assert "\n" not in reason and "has not answered" in reason, reason


def test_an_unread_destination_is_never_overwritten(
    s3_server: S3Server, bucket: str, tmp_path: Path, flaky_proxy: Any
) -> None:
    earlier = {"run_id": "r3", "attempt": 1, "status": "stopped", "exit_code": 143}
    s3_server.client.put_object(Bucket=bucket, Key="r/run.json", Body=json.dumps(earlier))
    proxy = flaky_proxy(fail_first=2)  # the read of run.json (2 client tries) gets 503s
    source = make_zip(tmp_path / "b.zip", {"nb.ipynb": notebook_json(["print(1)"])})
    result = run_nbjob(
        "run", source, "--output", f"s3://{bucket}/r", "--run-id", "r3",
        env={**s3_server.env_for(proxy.url), "NBJOB_STORAGE_ATTEMPTS": "1"},
    )  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert result.last_event["reason"].startswith("cannot read earlier attempts: ")
    assert json.loads(s3_server.get(bucket, "r/run.json")) == earlier  # untouched
    keys = s3_server.keys(bucket, "r/attempts/")
    assert len(keys) == 2 and keys[0].startswith("r/attempts/unread-"), keys
    record = json.loads(s3_server.get(bucket, keys[1]))
    assert keys[1].endswith("/run.json") and record["status"] == "storage_error"


def test_a_stop_while_earlier_attempts_are_read_still_puts_the_record_on_top(
    s3_server: S3Server, bucket: str, tmp_path: Path, flaky_proxy: Any
) -> None:
    """The read a stop interrupts is waited for at the end (never a second read, which would
    meet this attempt's own lease): run.json goes on top, not under attempts/unread-*."""
    proxy = flaky_proxy(hold="r/run.json", hold_s=1.5)  # the lease taken, run.json is slow
    source = make_zip(tmp_path / "b.zip", {"nb.ipynb": notebook_json(["print(1)"])})
    run = start_nbjob(
        "run", source, "--output", f"s3://{bucket}/r", "--stop-grace", "8",
        env=s3_server.env_for(proxy.url),
    )  # fmt: skip
    try:
        assert proxy.held.wait(30)
        run.proc.send_signal(signal.SIGTERM)
        result = run.wait(timeout=30)
    finally:
        run.kill()
    assert result.returncode == 143, result.stderr
    record = json.loads(s3_server.get(bucket, "r/run.json"))
    assert record["status"] == "stopped", record
    assert record["reason"] == "stopped by SIGTERM during reading earlier attempts", record
    assert not s3_server.keys(bucket, "r/attempts/"), s3_server.keys(bucket, "r/")
