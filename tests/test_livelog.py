"""The live log: segments written once, a follower reading only new bytes (``nbjob.livelog``).

The run goes to a real S3 server (moto) through a byte-counting proxy; the follower is
``livelog.read_new`` polling while the run goes, as ``nbjob watch`` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from nbjob import livelog
from nbjob.layout import Destination
from nbjob.storage import Options, Storage
from support import make_zip, notebook_json, start_nbjob, wait_until
from support.proxy import FlakyProxy
from support.s3 import S3Server

TICKS = "import time\nfor i in range(8):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.5)"


def _events(data: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in data.splitlines()]


def test_segments_hold_each_byte_once_and_a_follower_reads_only_new_bytes(
    s3_server: S3Server,
    bucket: str,
    flaky_proxy: Callable[..., FlakyProxy],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = flaky_proxy()
    source = make_zip(tmp_path / "b.zip", {"nb.ipynb": notebook_json([TICKS])})
    url = f"s3://{bucket}/runs/live"
    run = start_nbjob("run", source, "--output", url, "--checkpoint-interval", "0.5",
                      env=s3_server.env_for(proxy.url))  # fmt: skip
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    storage = Storage(Options(endpoint_url=proxy.url))  # the follower's requests counted too
    dest = Destination(url)
    seen, offset, while_running = b"", 0, False
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = run.running()
            new, offset = livelog.read_new(storage, dest, 1, offset)
            seen += new
            if running and b"tick 2" in seen:
                while_running = True
            if not running:
                break
            time.sleep(0.3)
        assert run.wait(30).returncode == 0
    finally:
        run.kill()
    assert while_running, "the follower saw no tick while the run went on"
    new, offset = livelog.read_new(storage, dest, 1, offset)  # the last lines
    seen += new
    whole = s3_server.get(bucket, "runs/live/executor.log")
    assert whole.startswith(seen) and len(seen) > 0.9 * len(whole)
    texts = "".join(str(e.get("text", "")) for e in _events(seen) if e.get("event") == "stream")
    assert texts == "".join(f"tick {i}\n" for i in range(8))
    # Each byte of the log was uploaded once as a segment (and once more, whole, at the end).
    segments = {p: n for p, n in proxy.sent.items() if n and "/runs/live/log/1/" in p}
    assert len(segments) > 2 and sum(segments.values()) == len(seen)
    assert proxy.sent[f"/{bucket}/runs/live/executor.log"] == len(whole)
    # What the follower downloaded: the log's bytes once. A poll with nothing new: one GET.
    assert sum(n for p, n in proxy.received.items() if "/runs/live/log/1/" in p) == len(seen)
    before = sum(proxy.requests_by.values())
    assert livelog.read_new(storage, dest, 1, offset) == (b"", offset)
    assert sum(proxy.requests_by.values()) == before + 1
    assert livelog.read_new(storage, dest, 2, 0) == (b"", 0)  # another attempt's: none yet
    # A follower that comes late starts near the end: the newest segment holds run_end.
    last, _ = livelog.read_new(storage, dest, 1, livelog.near_end(storage, dest, 1, keep=0))
    assert _events(last)[-1]["event"] == "run_end" and len(last) < len(seen)
    assert livelog.near_end(storage, dest, 1, keep=10**9) == 0


def test_a_local_destination_is_read_from_its_executor_log(tmp_path: Path) -> None:
    dest = Destination(str(tmp_path))
    log = tmp_path / "executor.log"
    log.write_bytes(b'{"event": "a"}\n{"event": "b"}\n{"eve')  # the last line being written
    data, offset = livelog.read_new(Storage(), dest, 1, 0)
    assert data == b'{"event": "a"}\n{"event": "b"}\n' and offset == len(data)
    with log.open("ab") as f:
        f.write(b'nt": "c"}\n')
    assert livelog.read_new(Storage(), dest, 1, offset) == (b'{"event": "c"}\n', len(data) + 15)
    assert livelog.near_end(Storage(), dest, 1, keep=20) == 30  # the last line's start
    assert livelog.near_end(Storage(), dest, 1, keep=30) == 15  # the last two lines
    assert livelog.near_end(Storage(), dest, 1, keep=1000) == 0
    log.write_bytes(b"")  # a new attempt began the file again: nothing, the caller restarts
    assert livelog.read_new(Storage(), dest, 1, offset) == (b"", offset)


def test_the_shipper_stores_whole_lines_once_and_starts_again_in_a_new_folder(
    tmp_path: Path,
) -> None:
    log = tmp_path / "executor.log"
    log.write_bytes(b"one\ntwo\nthr")
    shipper = livelog.Shipper(Storage(), log)
    first = Destination(str(tmp_path / "out"))
    assert shipper.ship(first, 1) == 8
    with log.open("ab") as f:
        f.write(b"ee\n")
    assert shipper.ship(first, 1) == 6 and shipper.ship(first, 1) == 0
    stored = sorted((tmp_path / "out" / "log" / "1").iterdir())
    assert [p.name for p in stored] == ["000000000000000.log", "000000000000008.log"]
    assert b"".join(p.read_bytes() for p in stored) == log.read_bytes()
    moved = Destination(str(tmp_path / "moved"))
    assert shipper.ship(moved, 2) == len(log.read_bytes())  # all of it, in the new place
    assert (tmp_path / "moved" / "log" / "2" / "000000000000000.log").exists()


KILLED = (
    "import os, pathlib, time\n"
    "pathlib.Path({pidfile!r}).write_text(str(os.getpid()))\n"
    "for i in range(100):\n"
    "    print(f'tick {{i}}', flush=True)\n"
    "    time.sleep(0.3)"
)


def test_a_killed_attempts_log_is_rebuilt_from_its_segments(
    s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = tmp_path / "kernel.pid"
    cell = KILLED.format(pidfile=str(pidfile))
    source = make_zip(tmp_path / "b.zip", {"nb.ipynb": notebook_json([cell])})
    url = f"s3://{bucket}/runs/k"
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    storage, dest = Storage(Options(endpoint_url=s3_server.endpoint_url)), Destination(url)
    first = start_nbjob("run", source, "--output", url, "--checkpoint-interval", "0.5",
                        env=s3_server.env)  # fmt: skip
    try:
        assert wait_until(lambda: b"tick 5" in livelog.read_new(storage, dest, 1, 0)[0], 60)
    finally:
        for pid in (first.proc.pid, int(pidfile.read_text()) if pidfile.exists() else 0):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # the node is gone: nbjob and its kernel
        first.proc.wait(timeout=10)
    stored, _ = livelog.read_new(storage, dest, 1, 0)
    assert s3_server.keys(bucket, "runs/k/executor.log") == []  # whole only at the end
    again = make_zip(tmp_path / "again.zip", {"nb.ipynb": notebook_json(["print('again')"])})
    second = start_nbjob("run", again, "--output", url, env=s3_server.env).wait(90)
    assert second.returncode == 0, second.stderr
    kept = s3_server.get(bucket, "runs/k/attempts/1/executor.log")
    assert kept.startswith(stored) and b"tick 5" in kept
    assert b"again" in livelog.read_new(storage, dest, 2, 0)[0]  # attempt 2's own segments
