"""One writer per destination, and an attempt that died without a word (issue 15, findings 3-4).

In-process: every store's create-only-if-absent (``Storage.create_exclusive``), the lease's
rules (a dead holder here, an old heartbeat, a lease renewed or unchanged while watched), and
the summary of an earlier record left ``running``. With real processes: two ``nbjob run`` at
once on one local and one S3 (moto) destination — one runs, the other stops with exit 8 and its
results beside; an attempt SIGKILLed with its whole process group (a container's OOM kill),
then its retry: not blocked by the dead attempt's lease, and the dead attempt kept as "ended
without a record".
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from nbjob import attempts, lease, logs
from nbjob.errors import ConcurrentAttemptError, StorageError
from nbjob.layout import Destination
from nbjob.record import RunRecord
from nbjob.storage import Options, Storage, join
from stores import Store
from support import (
    NbjobProcess,
    S3Server,
    log_events,
    notebook,
    read_json,
    start_nbjob,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)

SLOW = 'import time\nfor _ in range(80):\n    time.sleep(0.1)\nprint("done")'  # ~8 s


def lease_data(**changes: Any) -> bytes:
    data = {
        "run_id": "other",
        "attempt": 1,
        "host": "another-host",
        "pid": 1,
        "started_at": logs.now_iso(),
        "heartbeat_at": logs.now_iso(),
        "token": "theirs",
    }
    return json.dumps({**data, **changes}).encode()


# -- the stores -----------------------------------------------------------------------------------


# Test servers that ignore the condition (the real services honour it): strict xfails, so a
# server that learns it is noticed. docs/running/attempts.md says so.
IGNORE_THE_CONDITION = {
    "s3rver": "s3rver ignores If-None-Match on PutObject",
    "gcs": "gcp-storage-emulator ignores ifGenerationMatch",
}


def test_each_store_creates_only_if_absent(store: Store, request: pytest.FixtureRequest) -> None:
    """The primitive the lease stands on, against each real store: the second create of one
    name loses and leaves the first's bytes; a removed object can be created again."""
    if store.name in IGNORE_THE_CONDITION:
        reason = IGNORE_THE_CONDITION[store.name]
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    storage = Storage(Options(store.endpoint_url, timeout=10))
    url = join(store.new_root(), "run/.nbjob-lease/1.json")
    with pytest.MonkeyPatch.context() as env:
        for name, value in store.env.items():
            env.setenv(name, value)
        assert storage.exclusive(url)
        assert storage.create_exclusive(url, b"first") is True
        assert storage.create_exclusive(url, b"second") is False
        assert store.get(url) == b"first"
        storage.remove(url)
        storage.remove(url)  # nothing there: nothing to do
        assert store.get(url) is None
        assert storage.create_exclusive(url, b"third") is True
        assert store.get(url) == b"third"


def test_a_store_that_cannot_create_exclusively_goes_unleased(tmp_path: Path) -> None:
    class NoExclusive(Storage):
        def exclusive(self, url: str) -> bool:
            return False

    class Refuses(Storage):  # a store answering 501 to If-None-Match
        def create_exclusive(self, url: str, data: bytes) -> bool:
            raise StorageError(f"create {url} failed: 501 NotImplemented")

    held = lease.acquire(NoExclusive(), Destination(str(tmp_path)), "r", "t", 2.0)
    assert isinstance(held, lease.Unleased) and held.facts()["held"] is False
    assert "cannot create a file only if absent" in held.reason
    refused = lease.acquire(Refuses(), Destination(str(tmp_path)), "r", "t", 2.0)
    assert isinstance(refused, lease.Unleased) and "501 NotImplemented" in refused.reason
    # The run goes on, and says so: in run.json and as a warning in the log.
    record, said = RunRecord.start("r", "nb.ipynb", str(tmp_path), "local", {}), Said()
    attempts.announce(attempts.Attempt(lease=refused), record, said)
    assert record.to_json()["lease"] == {"held": False, "reason": refused.reason}
    assert said.lines == [("warning", "no_lease", {"reason": refused.reason})]


class Said:
    """What was logged (the log's interface: a method per level)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))


# -- the lease's rules ----------------------------------------------------------------------------


def test_a_lease_is_held_renewed_and_released(tmp_path: Path) -> None:
    storage, dest = Storage(), Destination(str(tmp_path / "out"))
    held = lease.acquire(storage, dest, "r1", "2026-01-01T00:00:00+00:00", 0.01)
    assert isinstance(held, lease.Lease) and held.generation == 1
    first = json.loads(Path(dest.lease_file(1)).read_bytes())
    assert (first["run_id"], first["host"], first["pid"]) == (
        "r1",
        socket.gethostname(),
        os.getpid(),
    )
    assert first["stale_s"] == lease.STALE_MIN_S
    # A second run in this process (or a live process of this host) is another live attempt.
    with pytest.raises(ConcurrentAttemptError, match=f"pid {os.getpid()}"):
        lease.acquire(storage, dest, "r2", "t", 0.01)
    held.set_attempt(3)
    assert json.loads(Path(dest.lease_file(1)).read_bytes())["attempt"] == 3
    held.release()
    assert not Path(dest.lease).exists()  # nothing left behind in a local folder
    again = lease.acquire(storage, dest, "r2", "t", 0.01)
    assert isinstance(again, lease.Lease) and again.generation == 1
    again.release()


def test_a_dead_holder_here_or_an_old_heartbeat_is_taken_over(tmp_path: Path) -> None:
    storage, dest = Storage(), Destination(str(tmp_path))
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    storage.create_exclusive(dest.lease_file(1), lease_data(host=socket.gethostname(), pid=dead))
    held = lease.acquire(storage, dest, "r", "t", 2.0)
    assert isinstance(held, lease.Lease) and held.generation == 2
    assert storage.get_bytes(dest.lease_file(1)) is None  # the stale one is removed
    held.release()
    old = "2020-01-01T00:00:00.000+00:00"  # another host's, not renewed for years
    storage.create_exclusive(dest.lease_file(4), lease_data(heartbeat_at=old))
    held = lease.acquire(storage, dest, "r", "t", 2.0)
    assert isinstance(held, lease.Lease) and held.generation == 5
    held.release()


def test_a_restarted_containers_own_pid_is_not_alive(tmp_path: Path) -> None:
    """A container restarted in its pod: same host name, and nbjob has the same pid (1, say)
    as the attempt that died; a lease of that pid not held by this process is stale."""
    storage, dest = Storage(), Destination(str(tmp_path))
    mine = lease_data(host=socket.gethostname(), pid=os.getpid())
    storage.create_exclusive(dest.lease_file(1), mine)
    held = lease.acquire(storage, dest, "r", "t", 2.0)
    assert isinstance(held, lease.Lease) and held.generation == 2
    held.release()


def test_another_hosts_lease_is_watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh lease of another host: alive once it is seen renewed; stale once it did not
    change for the stale time while watched (whatever the clocks say)."""
    storage, dest = Storage(), Destination(str(tmp_path))
    storage.create_exclusive(dest.lease_file(1), lease_data())

    def renew() -> None:
        time.sleep(0.3)
        storage.put_bytes(dest.lease_file(1), lease_data(heartbeat_at=logs.now_iso()))

    threading.Thread(target=renew, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(ConcurrentAttemptError, match="on host another-host"):
        lease.acquire(storage, dest, "r", "t", 2.0)
    assert time.monotonic() - started < 5
    monkeypatch.setattr(lease, "STALE_MIN_S", 1.0)
    held = lease.acquire(storage, dest, "r", "t", 0.1)
    assert isinstance(held, lease.Lease) and held.generation == 2
    held.release()


def test_from_outside_a_lease_shows_life_by_a_live_pid_here_or_a_recent_heartbeat(
    tmp_path: Path,
) -> None:
    """What ``nbjob watch`` asks of a quiet run's destination: the newest lease shows life."""
    storage, dest = Storage(), Destination(str(tmp_path))
    assert not lease.shows_life(storage, dest)  # no lease at all
    old = "2020-01-01T00:00:00.000+00:00"
    storage.create_exclusive(dest.lease_file(1), lease_data(heartbeat_at=old))
    assert not lease.shows_life(storage, dest)  # another host's, not renewed for years
    storage.create_exclusive(dest.lease_file(2), lease_data(heartbeat_at=logs.now_iso()))
    assert lease.shows_life(storage, dest)  # the newest one was renewed just now
    here = lease_data(host=socket.gethostname(), pid=os.getppid(), heartbeat_at=old)
    storage.create_exclusive(dest.lease_file(3), here)
    assert lease.shows_life(storage, dest)  # a live process of this host, however old its beat
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    recent = lease_data(host=socket.gethostname(), pid=dead, heartbeat_at=logs.now_iso())
    storage.create_exclusive(dest.lease_file(4), recent)
    assert not lease.shows_life(storage, dest)  # its process is gone from this host


def test_a_holder_whose_lease_was_taken_over_knows_it(tmp_path: Path) -> None:
    storage, dest = Storage(), Destination(str(tmp_path))
    held = lease.acquire(storage, dest, "r", "t", 2.0)
    assert isinstance(held, lease.Lease)
    storage.create_exclusive(dest.lease_file(2), lease_data())  # taken for stale
    held.renew()
    assert held.lost and held.lost_to is not None and held.lost_to.generation == 2
    held.release()
    assert storage.get_bytes(dest.lease_file(2)) is not None  # the new holder's: left alone


def test_an_earlier_record_left_running_ended_without_a_record() -> None:
    record = {
        "status": "running",
        "exit_code": None,
        "attempt": 1,
        "started_at": "2026-01-01T00:00:00+00:00",
        "heartbeat_at": "2026-01-01T01:00:00+00:00",
        "progress": {"running_cell": 3},
        "platform": {"name": "kubernetes"},
    }
    kept = attempts.unrecorded(record)
    assert (kept["status"], kept["exit_code"]) == ("ended_without_record", None)
    assert (kept["last_seen_at"], kept["running_cell"]) == ("2026-01-01T01:00:00+00:00", 3)
    assert "last seen 2026-01-01T01:00:00+00:00 while cell 3 ran" in kept["reason"]
    assert "lastState.terminated.reason" in kept["reason"]
    short = attempts.summary(kept)
    assert short["status"] == "ended_without_record" and short["running_cell"] == 3


# -- real processes -------------------------------------------------------------------------------


def both(a: NbjobProcess, b: NbjobProcess) -> tuple[Any, Any]:
    return a.wait(120), b.wait(120)


def check_one_ran(
    first: Any, second: Any, top: dict[str, Any], beside: list[dict[str, Any]]
) -> None:
    """One attempt ran (exit 0, attempt 1 at the top); the other stopped with exit 8 and one
    line naming the holder, its run.json beside, with no attempt number of its own."""
    codes = sorted([first.returncode, second.returncode])
    assert codes == [0, 8], (first.stderr[-2000:], second.stderr[-2000:])
    loser = first if first.returncode == 8 else second
    assert loser.last_event["status"] == "concurrent_attempt"
    assert "another attempt is writing to" in loser.last_event["reason"]
    assert (top["status"], top["attempt"], top["lease"]["held"]) == ("succeeded", 1, True)
    assert [(b["status"], b["exit_code"], b["attempt"]) for b in beside] == [
        ("concurrent_attempt", 8, None)
    ]
    assert "this attempt stopped before its first cell" in beside[0]["reason"]
    assert "; its record: " in loser.last_event["reason"]
    assert "attempts/concurrent-" in loser.last_event["reason"]


def test_two_attempts_at_once_on_a_local_destination(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", SLOW)
    out = tmp_path / "out"
    args = ("run", nb, "--output", out, "--run-id", "r1", "--no-report")
    first, second = both(start_nbjob(*args), start_nbjob(*args))
    (beside,) = (out / "attempts").glob("concurrent-*")
    check_one_ran(first, second, read_json(out / "run.json"), [read_json(beside / "run.json")])
    # The holder's log is its own: one run_start, its cell, never truncated by the other.
    events = [e["event"] for e in log_events(out)]
    assert events.count("run_start") == 1 and "cell_end" in events
    assert [e["event"] for e in log_events(beside)].count("run_start") == 1
    assert not (out / ".nbjob-lease").exists()  # released at the end
    assert not (out / "attempts" / "1").exists()  # neither archived the other


def test_two_attempts_at_once_on_s3(tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    nb = notebook(tmp_path / "nb.ipynb", SLOW)
    out = f"s3://{bucket}/runs/r1"
    args = ("run", nb, "--output", out, "--run-id", "r1", "--no-report")
    env = s3_server.env
    first, second = both(start_nbjob(*args, env=env), start_nbjob(*args, env=env))
    keys = s3_server.keys(bucket)
    beside = [k for k in keys if k.startswith("runs/r1/attempts/concurrent-")]
    assert [k.rsplit("/", 1)[1] for k in sorted(beside)] == ["executor.log", "run.json"], keys
    top = json.loads(s3_server.get(bucket, "runs/r1/run.json"))
    loser = json.loads(s3_server.get(bucket, next(k for k in beside if k.endswith("run.json"))))
    check_one_ran(first, second, top, [loser])
    assert not [k for k in keys if "/.nbjob-lease/" in k]  # released at the end


def test_a_killed_attempt_is_summed_up_and_does_not_block_its_retry(tmp_path: Path) -> None:
    """SIGKILL to the whole process group mid-cell (as a container's OOM kill): the retry
    takes the dead attempt's lease at once and keeps it as ended without a record."""
    nb = notebook(tmp_path / "nb.ipynb", "x = 1", SLOW)
    out = tmp_path / "out"
    args = ("run", nb, "--output", out, "--run-id", "r1", "--no-report")
    dying = start_nbjob(*args, "--checkpoint-interval", "0.2")

    def running() -> bool:
        """Cell 1 is running, as the dead attempt's last checkpoint says."""
        if not (out / "run.json").exists():
            return False
        return bool(read_json(out / "run.json")["progress"]["running_cell"] == 1)

    assert wait_until(running, 60), dying.output()[1][-2000:]
    os.killpg(dying.proc.pid, signal.SIGKILL)
    dying.wait(10)
    assert list((out / ".nbjob-lease").iterdir())  # the dead attempt's lease is left behind
    seen = read_json(out / "run.json")["heartbeat_at"]
    started = time.monotonic()
    retry = start_nbjob("run", notebook(tmp_path / "quick.ipynb", "print(2)"), *args[2:]).wait(60)
    assert retry.returncode == 0, retry.stderr[-2000:]
    assert time.monotonic() - started < lease.STALE_MIN_S  # not blocked by the stale lease
    top = read_json(out / "run.json")
    assert top["attempt"] == 2 and top["lease"]["generation"] == 2
    (earlier,) = top["earlier_attempts"]
    kept = read_json(out / "attempts" / "1" / "run.json")
    for entry in (earlier, kept):
        assert (entry["status"], entry["exit_code"]) == ("ended_without_record", None)
        assert entry["last_seen_at"] >= seen and entry["running_cell"] == 1
        assert entry["reason"].startswith(
            f"ended without a record: last seen {entry['last_seen_at']}"
        )
        assert "while cell 1 ran" in entry["reason"]
    warned = [e for e in log_events(out) if e["event"] == "earlier_attempt_ended_without_record"]
    assert warned and warned[0]["running_cell"] == 1 and warned[0]["level"] == "warning"
    assert not (out / ".nbjob-lease").exists()
