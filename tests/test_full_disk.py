"""Full disks, closed consoles and long names: the record tells the truth however a run ends.

Issue 15, findings 1, 2, 7 and 10, with the real failures: small tmpfs mounts that fill up
(root only: skipped otherwise, with the reason), ``/dev/full``, a pipe whose reader has gone,
a notebook named with 250 bytes. The in-process tests (the log's places) need no mount.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nbjob import logs
from nbjob.errors import EnvironmentUnfitError
from nbjob.listeners.log import cell_level
from nbjob.storage import Storage
from nbjob.storage.base import Options
from nbjob.storage.retry import local_disk_error
from support import (
    NBJOB,
    FlakyProxy,
    S3Server,
    log_events,
    make_zip,
    nbjob_env,
    notebook,
    notebook_json,
    read_json,
    results,
    run_nbjob,
    texts,
)

Mount = Callable[[str, str], Path]

# A cell that fills the disk under ``folder`` (an expression) and says so, then prints
# ``lines`` long lines while it is full: a healthy cell, whatever the disk does.
FILL = """\
import os, pathlib
filler = pathlib.Path({folder}) / "filler.bin"
try:
    with open(filler, "wb") as f:
        for _ in range(100):
            f.write(b"x" * (1 << 20))
            f.flush()
except OSError as exc:
    print("the disk is full:", exc.strerror)
for i in range({lines}):
    print("line while full", i, "x" * 100)
"""


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Mount]:
    """``tmpfs(name, size)``: a tmpfs of ``size`` (``30m``) mounted at tmp_path/name, unmounted
    after the test. Mounting needs root: skipped, with the reason, where it cannot be done."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs to fill needs root")
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    with contextlib.suppress(OSError), (folder / "filler.bin").open("wb") as f:
        while True:
            f.write(b"x" * (1 << 20))
            f.flush()


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr[-3000:]


# -- the log's places (in process: /dev/full and a real closed pipe) ---------------------------


def test_a_full_log_file_drops_and_counts_its_events_and_the_console_is_told_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "executor.log"
    logs.configure("json", [Path("/dev/full"), good], truncate=True)
    try:
        log = logs.get_logger()
        for i in range(3):
            log.info("stream", text=f"line {i}")
        assert logs.dropped() == {"/dev/full": 3}
    finally:
        logs.close()
    told = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    failed = [e for e in told if e["event"] == "log_write_failed"]
    assert len(failed) == 1 and failed[0]["level"] == "warning"
    assert failed[0]["target"] == "/dev/full" and "No space left" in failed[0]["reason"]
    assert [e["text"] for e in map(json.loads, good.read_text().splitlines()) if "text" in e] == [
        "line 0",
        "line 1",
        "line 2",
    ]


def test_a_log_folder_that_cannot_be_made_is_a_place_that_drops_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = Path("/dev/null/logs/executor.log")  # its folder can never be made
    logs.configure("json", [nowhere, tmp_path / "executor.log"], truncate=True)
    try:
        logs.get_logger().info("run_start")
        assert logs.dropped() == {str(nowhere): 1}
    finally:
        logs.close()
    told = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [e["event"] for e in told] == ["run_start", "log_write_failed"]
    assert told[1]["target"] == str(nowhere)


def test_a_closed_console_is_dropped_and_the_log_file_keeps_every_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader has gone, as with `nbjob run ... | head -1`
    with os.fdopen(write, "w") as console:
        monkeypatch.setattr("sys.stderr", console)
        logs.configure("json", [tmp_path / "executor.log"], truncate=True)
        try:
            for i in range(3):
                logs.get_logger().info("stream", text=f"line {i}")
            assert logs.dropped() == {"stderr": 3}
        finally:
            logs.close()
        console.write("more\n")  # what else writes to it goes nowhere now, without an error
        console.flush()
    events = [json.loads(line) for line in (tmp_path / "executor.log").read_text().splitlines()]
    assert [e["event"] for e in events] == ["stream", "log_write_failed", "stream", "stream"]
    assert events[1]["target"] == "stderr" and "Broken pipe" in events[1]["reason"]


def test_a_full_disk_is_not_retried_wherever_the_client_wraps_it() -> None:
    full = OSError(28, "No space left on device")
    try:
        try:
            raise full
        except OSError as exc:
            raise RuntimeError("download failed") from exc
    except RuntimeError as wrapped:
        assert local_disk_error(wrapped) is full
    assert local_disk_error(ConnectionResetError(104, "reset")) is None


def test_failed_cells_are_logged_at_error_and_stopped_ones_at_warning() -> None:
    assert [cell_level(s) for s in ("failed", "timed_out", "kernel_died")] == ["error"] * 3
    assert cell_level("interrupted") == "warning"
    assert cell_level("completed") == "info"


# -- a closed console (a real pipe) --------------------------------------------------------------


@pytest.mark.parametrize(("cell", "code"), [("print('ok')", 0), ("1 / 0", 1)])
def test_a_closed_console_ends_the_run_as_it_would_have(
    tmp_path: Path, cell: str, code: int
) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "for i in range(300): print('line', i)", cell)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [NBJOB, "run", str(nb), "--output", str(out)],
        env=nbjob_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline()  # one line, then the reader goes away
    proc.stdout.close()
    assert proc.wait(timeout=120) == code
    executed, record = results(out)
    assert record["exit_code"] == code and record["status"] != "internal_error"
    code_cells = [c for c in executed.cells if c.cell_type == "code"]  # a failure adds banners
    assert texts(code_cells[0]).endswith("line 299\n")
    assert record["log_dropped"]["stderr"] > 0
    events = log_events(out)
    assert any(e["event"] == "log_write_failed" for e in events)
    level = "info" if code == 0 else "error"  # what log collectors alert on
    assert [e["level"] for e in events if e["event"] in ("cell_end", "run_end")][-2:] == [
        level,
        level,
    ]


# -- a full disk -----------------------------------------------------------------------------------


def test_a_results_folder_that_fills_during_a_run_is_a_storage_error_with_a_local_copy(
    tmp_path: Path, tmpfs: Mount
) -> None:
    """(a): the disk fills while a (healthy) cell runs and stays full: no cell fails, the
    small run.json with the reason gets through, the notebook goes to the local copy."""
    disk = tmpfs("disk", "30m")
    nb = notebook(
        tmp_path / "nb.ipynb",
        FILL.format(folder="os.environ['NBJOB_ARTIFACTS_DIR']", lines=300),
        "print('after')",
    )
    result = run_nbjob("run", nb, "--output", disk / "out")
    no_traceback(result.stderr)
    assert result.returncode == 6, result.stderr[-2000:]
    record = read_json(disk / "out" / "run.json")
    assert record["status"] == "storage_error" and record["exit_code"] == 6
    assert "No space left on device" in record["reason"]
    assert [c["status"] for c in record["cells"]] == ["completed", "completed"]
    copy = Path(record["reason"].split("a local copy is in ")[1])
    executed, copied = results(copy)
    assert copied["status"] == "storage_error"
    assert "line while full 299" in texts(executed.cells[0])
    assert texts(executed.cells[1]) == "after\n"
    assert result.last_event["event"] == "run_end" and result.last_event["level"] == "error"


def test_with_the_work_folder_full_too_the_local_copy_goes_where_there_is_room(
    tmp_path: Path, tmpfs: Mount
) -> None:
    """The results folder and the work folder share the full disk: the local copy goes to
    the temporary folder ($TMPDIR), named in the reason."""
    disk = tmpfs("disk", "30m")
    nb = notebook(
        tmp_path / "nb.ipynb", FILL.format(folder="os.environ['NBJOB_ARTIFACTS_DIR']", lines=300)
    )
    spill = tmp_path / "spill"
    spill.mkdir()
    result = run_nbjob(
        "run", nb, "--output", disk / "out", "--workdir", disk / "work", env={"TMPDIR": str(spill)}
    )
    no_traceback(result.stderr)
    assert result.returncode == 6, result.stderr[-2000:]
    reason = read_json(disk / "out" / "run.json")["reason"]
    copy = Path(reason.split("a local copy is in ")[1])
    assert copy.parent == spill
    executed, copied = results(copy)
    assert copied["status"] == "storage_error"
    assert "line while full 299" in texts(executed.cells[0])


def test_a_disk_full_for_a_while_fails_no_cell_and_the_log_says_what_it_lost(
    tmp_path: Path, tmpfs: Mount
) -> None:
    """The disk fills and frees again: the run succeeds; the log's gap is counted and marked."""
    disk = tmpfs("disk", "30m")
    nb = notebook(
        tmp_path / "nb.ipynb",
        FILL.format(folder="os.environ['NBJOB_ARTIFACTS_DIR']", lines=300)
        + "import time\ntime.sleep(2)  # nbjob logs the lines while the disk is full\n"
        + "filler.unlink()\nprint('room again')",
        "print('after')",
    )
    out = disk / "out"
    result = run_nbjob("run", nb, "--output", out)
    no_traceback(result.stderr)
    assert result.returncode == 0, result.stderr[-2000:]
    executed, record = results(out)
    assert record["status"] == "succeeded"
    assert [c["status"] for c in record["cells"]] == ["completed", "completed"]
    assert "room again" in texts(executed.cells[0])
    assert record["log_dropped"][str(out / "executor.log")] > 0
    events = log_events(out)  # whole JSON lines only, the gap said where it is
    assert any(e["event"] == "log_lines_dropped" and e["dropped"] > 0 for e in events)
    assert events[-1]["event"] == "run_end"


def test_s3_results_with_a_full_work_folder_are_stored(
    tmp_path: Path, tmpfs: Mount, s3_server: S3Server, bucket: str
) -> None:
    """(b): the work folder (the log's, the kernel's) fills up: the results still reach S3."""
    work = tmpfs("work", "30m")
    nb = notebook(
        tmp_path / "nb.ipynb",
        FILL.format(folder="os.environ['NBJOB_ARTIFACTS_DIR'] + '/..'", lines=50),
        "print('after')",
    )
    result = run_nbjob(
        "run", nb, "--output", f"s3://{bucket}/run", "--workdir", work, env=s3_server.env
    )
    no_traceback(result.stderr)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(s3_server.get(bucket, "run/run.json"))
    assert record["status"] == "succeeded"
    assert [c["status"] for c in record["cells"]] == ["completed", "completed"]
    stored = json.loads(s3_server.get(bucket, "run/nb.ipynb"))
    assert "line while full 49" in "".join(stored["cells"][0]["outputs"][-1]["text"])


def test_a_small_bundle_runs_on_a_small_work_folder_and_a_big_one_is_exit_7_with_numbers(
    tmp_path: Path, tmpfs: Mount
) -> None:
    """(c): the reserve scales with the disk and the bundle: 803 bytes fit a 100 MB folder; a
    bundle bigger than the free space is this machine's problem (7), with the numbers."""
    work = tmpfs("work", "100m")
    small = make_zip(tmp_path / "small.zip", {"nb.ipynb": notebook_json(["print('ran')"])})
    assert small.stat().st_size < 1024
    ok = run_nbjob("run", small, "--output", tmp_path / "out", "--workdir", work)
    assert ok.returncode == 0, ok.stderr[-2000:]

    big = make_zip(
        tmp_path / "big.zip",
        {"nb.ipynb": notebook_json(["print('ran')"]), "data.bin": os.urandom(20 << 20)},
    )
    with (work / "taken.bin").open("wb") as f:  # 90 MB of the 100 taken: 10 free
        f.write(b"x" * (90 << 20))
    refused = run_nbjob("run", big, "--output", tmp_path / "out2", "--workdir", work)
    assert refused.returncode == 7, refused.stderr[-2000:]
    record = read_json(tmp_path / "out2" / "run.json")
    assert record["status"] == "environment_unfit"
    assert "has no room for the bundle: 23.0 MiB needed" in record["reason"]
    assert "(20.0 MiB unpacked + 3.0 MiB kept free), 10.0 MiB free" in record["reason"]


def test_a_work_folder_that_cannot_be_made_is_exit_7_in_one_line(
    tmp_path: Path, tmpfs: Mount
) -> None:
    """A disk with no inode left: not even the work folder can be made."""
    disk = tmpfs("disk", "1m,nr_inodes=3")
    with contextlib.suppress(OSError):
        for name in "abc":
            (disk / name).touch()
    nb = notebook(tmp_path / "nb.ipynb", "print('never')")
    result = run_nbjob("run", nb, "--output", tmp_path / "out", "--workdir", disk / "work")
    no_traceback(result.stderr)
    assert result.returncode == 7, result.stderr
    assert "disk cannot take the run's files" in result.stderr
    assert "No space left on device" in result.stderr


def test_a_download_into_a_full_work_folder_fails_at_once(
    tmp_path: Path,
    tmpfs: Mount,
    s3_server: S3Server,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(d): ENOSPC while downloading is this machine's disk: no retries (exit 7)."""
    s3_server.client.put_object(Bucket=bucket, Key="big.bin", Body=b"y" * (2 << 20))
    work = tmpfs("work", "1m")
    fill(work)
    proxy = FlakyProxy(s3_server.endpoint_url)  # counts the requests
    endpoint = f"http://127.0.0.1:{proxy.port}"
    for key, value in s3_server.env_for(endpoint).items():
        monkeypatch.setenv(key, value)
    try:
        storage = Storage(Options(endpoint_url=endpoint))
        started = time.monotonic()
        with pytest.raises(EnvironmentUnfitError, match="disk cannot take it"):
            storage.fetch(f"s3://{bucket}/big.bin", work)
        assert time.monotonic() - started < 3  # five tries would back off 7.5 s
        assert proxy.requests <= 2  # the object's head and one GET
    finally:
        proxy.vanish()


# -- long names ----------------------------------------------------------------------------------


def test_a_notebook_named_with_250_bytes_is_stored(tmp_path: Path) -> None:
    name = "n" * 244 + ".ipynb"
    assert len(name.encode()) == 250
    nb = notebook(tmp_path / name, "print('long')")
    out = tmp_path / "out"
    result = run_nbjob("run", nb, "--output", out)
    assert result.returncode == 0, result.stderr[-2000:]
    executed, record = results(out, name)
    assert record["status"] == "succeeded" and texts(executed.cells[0]) == "long\n"
    assert (out / ("n" * 244 + ".html")).is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
