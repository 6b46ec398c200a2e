"""``nbjob pack``: deterministic bundles that ``nbjob run`` runs as they are, locally or from S3."""

from __future__ import annotations

import json
import os
import tarfile
import zipfile
from pathlib import Path

import nbformat
import pytest
from support import S3Server, make_notebook, read_json, run_nbjob, stream_text

pytestmark = pytest.mark.timeout(120)


def names(archive: Path) -> list[str]:
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            return sorted(zf.namelist())
    with tarfile.open(archive) as tf:
        return sorted(tf.getnames())


def member(archive: Path, name: str) -> bytes:
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            return zf.read(name)
    with tarfile.open(archive) as tf:
        f = tf.extractfile(name)
        assert f is not None
        return f.read()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A notebook with a parameters cell, helpers beside it, a data folder, requirements."""
    root = tmp_path / "project"
    make_notebook(
        root / "analysis.ipynb",
        [
            ("code", "scale = 1\nlabel = 'default'", ["parameters"]),
            "from helper import double\nprint('result', label, double(21) * scale)",
        ],
    )
    (root / "helper.py").write_text("def double(x):\n    return 2 * x\n")
    (root / "other.py").write_text("X = 1\n")
    (root / "data").mkdir()
    (root / "data" / "a.csv").write_text("1,2\n")
    (root / "data" / "b.csv").write_text("3,4\n")
    (root / "notes.txt").write_text("not packed by default\n")
    (root / "requirements.txt").write_text("nbformat\n")
    return root


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_pack_is_deterministic(project: Path, tmp_path: Path, suffix: str) -> None:
    first, second = tmp_path / f"one{suffix}", tmp_path / f"two{suffix}"
    assert run_nbjob("pack", project / "analysis.ipynb", "-o", first).returncode == 0
    for path in project.rglob("*"):  # same content, other times
        os.utime(path, (1_700_000_000, 1_700_000_000))
    result = run_nbjob("pack", project / "analysis.ipynb", "-o", second, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert first.read_bytes() == second.read_bytes()
    # The defaults: the notebook, every .py beside it, requirements.txt and the manifest.
    assert names(first) == [
        "analysis.ipynb",
        "helper.py",
        "nbjob.json",
        "other.py",
        "requirements.txt",
    ]
    assert json.loads(member(first, "nbjob.json")) == {"notebook": "analysis.ipynb"}
    assert member(first, "helper.py") == (project / "helper.py").read_bytes()


def test_pack_include_globs_and_repack_into_the_same_folder(project: Path) -> None:
    """``--include``: comma-separated globs; the bundle itself is never packed into itself."""
    out = project / "bundle.zip"
    args = ["pack", "analysis.ipynb", "--include", "helper.py, data/*.csv, *", "-o", out.name]
    first = run_nbjob(*args, cwd=project)
    assert first.returncode == 0, first.stderr
    packed = out.read_bytes()
    again = run_nbjob(*args, cwd=project)  # bundle.zip now matches '*'
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == packed
    assert names(out) == [
        "analysis.ipynb",
        "data/a.csv",
        "data/b.csv",
        "helper.py",
        "nbjob.json",
        "notes.txt",
        "other.py",
        "requirements.txt",
    ]
    assert first.stdout.strip() == "nbjob run bundle.zip"


def test_pack_parameters_land_in_manifest_and_run_uses_them(project: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar.gz"
    result = run_nbjob(
        "pack", project / "analysis.ipynb", "-o", bundle, "-p", "scale", "10", "-r", "label", "7"
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads(member(bundle, "nbjob.json"))
    assert manifest == {"notebook": "analysis.ipynb", "parameters": {"scale": 10, "label": "7"}}
    out = tmp_path / "out"
    run = run_nbjob("run", bundle, "--output", out, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    nb = nbformat.read(out / "analysis.ipynb", as_version=4)
    assert "result 7 420" in stream_text(nb)
    assert read_json(out / "run.json")["parameters"] == {"scale": 10, "label": "7"}


def test_pack_upload_then_run_the_printed_command(
    project: Path, tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    result = run_nbjob(
        "pack",
        project / "analysis.ipynb",
        "-o",
        tmp_path / "analysis.zip",
        "--upload",
        f"s3://{bucket}/bundles/",
        env=s3_server.env,
    )
    assert result.returncode == 0, result.stderr
    command = result.stdout.strip()
    assert command == f"nbjob run s3://{bucket}/bundles/analysis.zip"
    assert s3_server.get(bucket, "bundles/analysis.zip") == (tmp_path / "analysis.zip").read_bytes()
    dest = f"s3://{bucket}/results"
    run = run_nbjob(*command.split()[1:], "--output", dest, env=s3_server.env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    nb = nbformat.reads(s3_server.get(bucket, "results/analysis.ipynb").decode(), as_version=4)
    assert "result default 42" in stream_text(nb)
    assert json.loads(s3_server.get(bucket, "results/run.json"))["status"] == "succeeded"


@pytest.mark.parametrize(
    "case, expected",
    [
        ("not-ipynb", "not a notebook"),
        ("missing", "not a notebook"),
        ("not-json", "not a notebook"),
        ("no-cells", "not a notebook"),
        ("bad-suffix", "must end in .zip, .tar.gz or .tgz"),
        ("include-none", "matches no file"),
        ("include-parent", "must stay inside the notebook's folder"),
        ("include-absolute", "must stay inside the notebook's folder"),
    ],
)
def test_pack_bad_input_is_a_usage_error(
    project: Path, tmp_path: Path, case: str, expected: str
) -> None:
    nb, out, extra = project / "analysis.ipynb", tmp_path / "new" / "b.zip", []
    if case == "not-ipynb":
        nb = project / "notes.txt"
    elif case == "missing":
        nb = project / "nope.ipynb"
    elif case == "not-json":
        nb.write_text("not json")
    elif case == "no-cells":
        nb.write_text("{}")
    elif case == "bad-suffix":
        out = tmp_path / "new" / "b.rar"
    elif case == "include-none":
        extra = ["--include", "*.nothing"]
    elif case == "include-parent":
        extra = ["--include", "../*"]
    elif case == "include-absolute":
        extra = ["--include", "/etc/*"]
    result = run_nbjob("pack", nb, "-o", out, *extra, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nbjob: error: "), result.stderr
    assert expected in lines[0]
    assert result.stdout == ""
    assert not (tmp_path / "new").exists()  # nothing written


def test_pack_upload_to_a_missing_bucket_is_a_storage_error(
    project: Path, tmp_path: Path, s3_server: S3Server
) -> None:
    result = run_nbjob(
        "pack",
        project / "analysis.ipynb",
        "-o",
        tmp_path / "analysis.zip",
        "--upload",
        "s3://no-such-bucket-nbjob/bundles/",
        env=s3_server.env,
    )
    assert result.returncode == 6, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("nbjob: error: upload s3://no-such-bucket-nbjob/bundles/analysis.zip")
    assert "NoSuchBucket" in last
    assert "Traceback" not in result.stderr and result.stdout == ""
