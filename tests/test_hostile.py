"""Hostile or broken input ends as exit 3 with one line; a bug in nbjob as ``internal_error``."""

from __future__ import annotations

import io
import json
import tarfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
from nbjob import bundle, config, prepare, stop
from nbjob.errors import EnvironmentUnfitError
from nbjob.job import Job
from support import free_port, log_events, notebook, notebook_json, read_json, run_nbjob

pytestmark = pytest.mark.timeout(120)

KERNELSPEC = {"name": "python3", "language": "python", "display_name": "Python 3"}


def _cell(source: Any) -> dict[str, Any]:
    return {"cell_type": "code", "source": source, "metadata": {}, "outputs": []}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ([1, 2], "nb.ipynb is not a notebook (no list of cells)"),
        ({"cells": {}}, "nb.ipynb is not a notebook (no list of cells)"),
        ({"cells": [_cell(42)]}, "nb.ipynb: cell 0's source is not text"),
        ({"cells": [_cell(["a", 1])]}, "nb.ipynb: cell 0's source is not text"),
        ({"cells": [7]}, "nb.ipynb: cell 0 is not a code, markdown or raw cell"),
    ],
)
def test_a_notebook_that_is_not_one_is_exit_3(tmp_path: Path, content: Any, reason: str) -> None:
    if isinstance(content, dict):
        meta = {"metadata": {"kernelspec": KERNELSPEC}, "nbformat": 4, "nbformat_minor": 5}
        content = {**meta, **content}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(content))
    result = run_nbjob("run", path, "--output", tmp_path / "out", "--log-format", "json")
    assert result.returncode == 3, result.stderr
    assert result.last_event["reason"] == reason
    assert "Traceback" not in result.stderr
    assert read_json(tmp_path / "out" / "run.json")["status"] == "invalid_input"


def test_an_internal_error_has_its_own_status_and_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug in nbjob")

    monkeypatch.setattr(prepare, "inject_parameters", bug)
    nb = notebook(tmp_path / "nb.ipynb", "print('never')")
    out = tmp_path / "out"
    settings = config.resolve({"source": str(nb), "output": str(out), "log_format": "json"}, {})
    assert Job(settings, stop.StopToken()).run() == 1
    record = read_json(out / "run.json")
    assert (record["status"], record["exit_code"]) == ("internal_error", 1)
    assert record["reason"] == "internal error: RuntimeError: a bug in nbjob"
    assert record["traceback"].startswith("Traceback") and "in bug" in record["traceback"]
    logged = [e for e in log_events(out) if e["event"] == "internal_error"]
    assert len(logged) == 1 and "RuntimeError: a bug in nbjob" in logged[0]["traceback"]
    assert "Traceback" not in (out / "nb.ipynb").read_text()  # never in the notebook


# -- archives ---------------------------------------------------------------------------------

NB = notebook_json(["print('hi')"])


def _zip_bomb(path: Path, mib: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("nb.ipynb", NB)
        with zf.open("data.bin", "w", force_zip64=True) as f:
            zero = bytes(1 << 20)
            for _ in range(mib):
                f.write(zero)
    return path


def _tar_bomb(path: Path, mib: int) -> Path:
    data = path.with_suffix(".raw")
    with data.open("wb") as f:
        f.truncate(mib << 20)  # sparse zeros
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        tf.add(data, arcname="data.bin")
        info = tarfile.TarInfo("nb.ipynb")
        info.size = len(NB)
        tf.addfile(info, io.BytesIO(NB))
    data.unlink()
    return path


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_a_compression_bomb_is_exit_3_at_once(tmp_path: Path, kind: str) -> None:
    make = _zip_bomb if kind == "zip" else _tar_bomb
    archive = make(tmp_path / f"bomb.{kind}", 256)
    assert archive.stat().st_size < 2 << 20
    work = tmp_path / "work"
    started = time.monotonic()
    result = run_nbjob("run", archive, "--output", tmp_path / "out", "--workdir", work)
    took = time.monotonic() - started
    assert result.returncode == 3, result.stderr
    assert "compression bomb" in result.last_event["reason"]
    assert took < 10, took  # nbjob's start included; the unpack itself stops within a second
    written = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
    assert written < 100 << 20, written


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_duplicate_entry_names_are_exit_3(tmp_path: Path, kind: str) -> None:
    archive = tmp_path / f"dup.{kind}"
    if kind == "zip":
        with warnings.catch_warnings(), zipfile.ZipFile(archive, "w") as zf:
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate; that is the point
            zf.writestr("nb.ipynb", NB)
            zf.writestr("nb.ipynb", notebook_json(["print('the later copy')"]))
    else:
        with tarfile.open(archive, "w:gz") as tf:
            for data in (NB, notebook_json(["print('the later copy')"])):
                info = tarfile.TarInfo("nb.ipynb")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    result = run_nbjob("run", archive, "--output", tmp_path / "out")
    assert result.returncode == 3, result.stderr
    assert result.last_event["reason"] == (
        "bundle holds 'nb.ipynb' twice; entry names must be unique"
    )


def test_unpacking_stops_when_the_disk_is_nearly_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A work folder without room for the bundle and the reserve is this machine's problem
    (exit 7), said with the numbers. (tests/test_full_disk.py fills a real file system.)"""
    archive = tmp_path / "b.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("nb.ipynb", NB)
    kept = bundle.reserve(tmp_path, len(NB))
    monkeypatch.setattr(bundle, "free_bytes", lambda _p: len(NB) + kept - 1)
    with pytest.raises(EnvironmentUnfitError, match=r"room for the bundle: .* needed .* free"):
        bundle.unpack(archive, tmp_path / "x", 100, 1 << 30)
    monkeypatch.setattr(bundle, "free_bytes", lambda _p: len(NB) + kept)
    bundle.unpack(archive, tmp_path / "z", 100, 1 << 30)
    monkeypatch.setattr(bundle, "free_bytes", lambda _p: 0)
    with pytest.raises(EnvironmentUnfitError, match="0 B free"):
        bundle.unpack(archive, tmp_path / "y", 100, 1 << 30)


# -- credentials in URLs ----------------------------------------------------------------------

PASSWORD = "nbjobCanaryPassw0rd"


@pytest.mark.parametrize("where", ["source", "endpoint"])
def test_a_password_in_a_url_is_written_nowhere(tmp_path: Path, where: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    termination = tmp_path / "termination-log"
    termination.write_text("")
    out = tmp_path / "out"
    if where == "source":
        args: tuple[str, ...] = (f"http://alice:{PASSWORD}@{dead}/b.zip",)
    else:
        args = ("s3://b/in/b.zip", "--s3-endpoint-url", f"http://alice:{PASSWORD}@{dead}")
    result = run_nbjob(
        "run", *args, "--output", out, "--termination-log", termination,
        "--storage-timeout", "3", env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"},
    )  # fmt: skip
    assert result.returncode == 6, result.stderr
    written = {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "termination log": termination.read_text(),
        **{p.name: p.read_text() for p in out.rglob("*") if p.is_file()},
    }
    assert {"run.json", "executor.log"} <= written.keys()
    assert termination.read_text().strip()
    leaks = [name for name, text in written.items() if PASSWORD in text]
    assert not leaks, leaks
    if where == "source":
        assert "alice:REDACTED@" in written["run.json"]
