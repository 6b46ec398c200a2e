"""Bundles: unsafe or broken archives are refused (exit 3, one-line reason), good ones run.

Bad bundles run through ``nbjob run`` as a platform would, and through ``bundle.unpack`` directly;
either way nothing may be written outside the unpack folder.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import tarfile
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbjob import bundle
from nbjob.errors import BundleError
from support import make_targz, make_zip, notebook_json, read_json, run_nbjob, stream_text

pytestmark = pytest.mark.timeout(120)

NB = notebook_json(["print('ran')"])
# An absolute path that must never be created; unique, so that a leftover cannot hide a bug.
ABSOLUTE = f"/tmp/nbjob-evil-{uuid.uuid4().hex}.txt"


def _tarinfo(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    return info


def _zip_symlink(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("nb.ipynb", NB)
        info = zipfile.ZipInfo("evil-link")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../../../etc")
        zf.writestr("evil-link/evil.txt", "through the link")
    return path


def _zip_lying_header(path: Path) -> Path:
    """A zip whose headers say 100 bytes while the entry inflates to 2 MB."""
    make_zip(path, {"nb.ipynb": NB, "evil-big.bin": b"\0" * (2 << 20)})
    data = bytearray(path.read_bytes())
    local = data.rfind(b"PK\x03\x04")  # the second entry's local header
    central = data.rfind(b"PK\x01\x02")  # and its central directory record
    struct.pack_into("<I", data, local + 22, 100)  # uncompressed size
    struct.pack_into("<I", data, central + 24, 100)
    path.write_bytes(bytes(data))
    return path


def _damaged(path: Path, build: Callable[[Path], Path]) -> Path:
    data = build(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# name -> (archive builder, extra nbjob flags, expected fragment of the reason)
BAD: dict[str, tuple[Callable[[Path], Path], list[str], str]] = {
    "zip-traversal": (
        lambda p: make_zip(p.with_suffix(".zip"), {"nb.ipynb": NB, "../../evil.txt": "x"}),
        [],
        "points outside the bundle",
    ),
    "tar-traversal": (
        lambda p: make_targz(p.with_suffix(".tar.gz"), {"nb.ipynb": NB, "a/../../evil.txt": "x"}),
        [],
        "points outside the bundle",
    ),
    "zip-absolute": (
        lambda p: make_zip(p.with_suffix(".zip"), {"nb.ipynb": NB, ABSOLUTE: "x"}),
        [],
        "absolute path",
    ),
    "tar-absolute": (
        lambda p: make_targz(p.with_suffix(".tar.gz"), {"nb.ipynb": NB, ABSOLUTE: "x"}),
        [],
        "absolute path",
    ),
    "zip-symlink": (lambda p: _zip_symlink(p.with_suffix(".zip")), [], "is a link"),
    "tar-symlink": (
        lambda p: make_targz(
            p.with_suffix(".tar.gz"),
            {
                "nb.ipynb": NB,
                "evil-link": _tarinfo("evil-link", tarfile.SYMTYPE, "/etc"),
                "evil-link/evil.txt": "through the link",
            },
        ),
        [],
        "is a link",
    ),
    "tar-hardlink": (
        lambda p: make_targz(
            p.with_suffix(".tar.gz"),
            {"nb.ipynb": NB, "evil-hard": _tarinfo("evil-hard", tarfile.LNKTYPE, "/etc/passwd")},
        ),
        [],
        "is a link",
    ),
    "tar-fifo": (
        lambda p: make_targz(
            p.with_suffix(".tar.gz"),
            {"nb.ipynb": NB, "evil-fifo": _tarinfo("evil-fifo", tarfile.FIFOTYPE)},
        ),
        [],
        "device or FIFO",
    ),
    "tar-device": (
        lambda p: make_targz(
            p.with_suffix(".tar.gz"),
            {"nb.ipynb": NB, "evil-dev": _tarinfo("evil-dev", tarfile.CHRTYPE)},
        ),
        [],
        "device or FIFO",
    ),
    "too-many-files": (
        lambda p: make_zip(
            p.with_suffix(".zip"), {"nb.ipynb": NB, **{f"f{i}.txt": "x" for i in range(5)}}
        ),
        ["--max-bundle-files", "3"],
        "more than 3 files",
    ),
    "too-many-bytes": (
        lambda p: make_targz(
            p.with_suffix(".tar.gz"), {"nb.ipynb": NB, "big.bin": b"\0" * 300_000}
        ),
        ["--max-bundle-bytes", "100000"],
        "more than 100000 bytes",
    ),
    "zip-lying-header": (lambda p: _zip_lying_header(p.with_suffix(".zip")), [], "damaged"),
    "zip-damaged": (
        lambda p: _damaged(
            p.with_suffix(".zip"), lambda q: make_zip(q, {"nb.ipynb": NB, "h.py": "x = 1\n" * 99})
        ),
        [],
        "damaged archive",
    ),
    "tar-damaged": (
        lambda p: _damaged(
            p.with_suffix(".tar.gz"),
            lambda q: make_targz(q, {"nb.ipynb": NB, "h.py": os.urandom(20_000)}),
        ),
        [],
        "damaged archive",
    ),
    "no-notebook": (
        lambda p: make_zip(p.with_suffix(".zip"), {"helper.py": "x = 1\n"}),
        [],
        "no notebook",
    ),
    "several-notebooks": (
        lambda p: make_zip(p.with_suffix(".zip"), {"b.ipynb": NB, "a.ipynb": NB}),
        [],
        "several notebooks at the bundle root (a.ipynb, b.ipynb)",
    ),
    "notebook-not-found": (
        lambda p: make_zip(p.with_suffix(".zip"), {"a.ipynb": NB}),
        ["--notebook", "sub/other.ipynb"],
        "'sub/other.ipynb' not found",
    ),
    "notebook-outside": (
        lambda p: make_zip(p.with_suffix(".zip"), {"a.ipynb": NB}),
        ["--notebook", "../a.ipynb"],
        "points outside the bundle",
    ),
    "bad-manifest": (
        lambda p: make_zip(p.with_suffix(".zip"), {"a.ipynb": NB, "nbjob.json": "{not json"}),
        [],
        "nbjob.json: cannot be parsed",
    ),
}


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if not p.is_dir() or p.is_symlink()}


def assert_nothing_escaped(tmp_path: Path, unpack_dir: Path, allowed: set[Path]) -> None:
    """Only the archive, the allowed files and plain files under ``unpack_dir`` exist."""
    assert not os.path.lexists(ABSOLUTE)
    outside = {p for p in files_under(tmp_path) if unpack_dir not in p.parents}
    assert outside <= allowed, f"written outside the unpack folder: {outside - allowed}"
    for p in files_under(unpack_dir):
        assert p.is_file() and not p.is_symlink(), f"{p} is not a regular file"
        assert stat.S_ISREG(p.lstat().st_mode)
        assert not p.name.startswith("evil") or p.name == "evil-big.bin"


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_bundle_is_refused(case: str, tmp_path: Path) -> None:
    build, flags, expected = BAD[case]
    archive = build(tmp_path / "bundle")
    work, out, tmp = tmp_path / "work", tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    result = run_nbjob(
        "run", archive, "--output", out, "--workdir", work, *flags,
        env={"TMPDIR": str(tmp)}, cwd=tmp,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    record = read_json(out / "run.json")
    assert record["status"] == "invalid_input"
    reason = record["reason"]
    assert expected in reason
    assert "\n" not in reason and len(reason) < 500
    assert result.last_event["reason"] == reason  # the last line on stderr says it too
    assert "Traceback" not in result.stderr
    allowed = {archive, out / "run.json", out / "executor.log"}
    assert_nothing_escaped(tmp_path, work / "bundle", allowed | files_under(work / "ipc"))


@pytest.mark.parametrize(
    "case", [c for c in sorted(BAD) if not c.startswith(("notebook-", "bad-"))]
)
def test_unpack_refuses_and_stays_inside(case: str, tmp_path: Path) -> None:
    build, flags, expected = BAD[case]
    archive = build(tmp_path / "bundle")
    limits = {"max_files": 10_000, "max_bytes": 10**9}
    if flags[:1] == ["--max-bundle-files"]:
        limits["max_files"] = int(flags[1])
    if flags[:1] == ["--max-bundle-bytes"]:
        limits["max_bytes"] = int(flags[1])
    dest = tmp_path / "dest" / "bundle"
    if case in ("no-notebook", "several-notebooks"):
        with pytest.raises(BundleError, match="notebook"):
            bundle.open_bundle(archive, dest, None, **limits)
    else:
        with pytest.raises(BundleError) as info:
            bundle.unpack(archive, dest, **limits)
        assert expected in info.value.reason
    assert_nothing_escaped(tmp_path, dest, {archive})
    written = sum(p.stat().st_size for p in files_under(dest))
    assert written <= limits["max_bytes"]


def test_lying_zip_header_writes_no_more_than_it_claims(tmp_path: Path) -> None:
    archive = _zip_lying_header(tmp_path / "bundle.zip")
    with pytest.raises(BundleError, match="damaged"):
        bundle.unpack(archive, tmp_path / "dest", 100, 10**9)
    big = tmp_path / "dest" / "evil-big.bin"
    assert not big.exists() or big.stat().st_size <= 100


def test_encrypted_or_unknown_compression_zip_is_invalid_input(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bundle.zip", {"nb.ipynb": NB})
    data = bytearray(archive.read_bytes())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    encrypted = bytearray(data)
    encrypted[local + 6] |= 1  # general purpose flag bit 0: encrypted
    encrypted[central + 8] |= 1
    archive.write_bytes(bytes(encrypted))
    with pytest.raises(BundleError, match="encrypted"):
        bundle.unpack(archive, tmp_path / "a", 100, 10**6)
    unknown = bytearray(data)
    struct.pack_into("<H", unknown, local + 8, 99)  # compression method 99 (AES)
    struct.pack_into("<H", unknown, central + 10, 99)
    archive.write_bytes(bytes(unknown))
    with pytest.raises(BundleError, match="damaged archive"):
        bundle.unpack(archive, tmp_path / "b", 100, 10**6)


def test_single_top_folder_and_mac_metadata(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "b.zip",
        {"proj/": "", "proj/nb.ipynb": NB, "__MACOSX/proj/._nb.ipynb": "x", ".DS_Store": "x"},
    )
    found = bundle.open_bundle(archive, tmp_path / "u", None, 100, 10**6)
    assert found.root == (tmp_path / "u" / "proj").resolve()
    assert found.relative_notebook == "nb.ipynb"


def test_manifest_is_read(tmp_path: Path) -> None:
    manifest = {"notebook": "sub/b.ipynb", "parameters": {"n": 3}, "kernel": "python3"}
    archive = make_targz(
        tmp_path / "b.tar.gz",
        {"a.ipynb": NB, "sub/b.ipynb": NB, "nbjob.json": json.dumps(manifest)},
    )
    found = bundle.open_bundle(archive, tmp_path / "u", None, 100, 10**6)
    assert (found.relative_notebook, found.parameters, found.kernel) == (
        "sub/b.ipynb",
        {"n": 3},
        "python3",
    )
    # --notebook wins over the manifest
    found = bundle.open_bundle(archive, tmp_path / "v", "a.ipynb", 100, 10**6)
    assert found.relative_notebook == "a.ipynb"


# -- good bundles, run for real -----------------------------------------------------------------

ANALYSIS = notebook_json(
    [
        "import helper\nprint('helper says', helper.double(21))",
        "with open('data/values.csv') as f:\n    print('sum', sum(map(int, f.read().split())))",
        "import os\nprint('cwd', os.path.basename(os.getcwd()))",
    ]
)
SUBFOLDER_FILES = {
    "project/README.md": "a project",
    "project/sub/analysis.ipynb": ANALYSIS,
    "project/sub/helper.py": "def double(x):\n    return 2 * x\n",
    "project/sub/data/values.csv": "1\n2\n3\n",
}


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_notebook_in_subfolder_imports_helper_and_reads_data(tmp_path: Path, suffix: str) -> None:
    """A zip/tar.gz of one top folder; --notebook picks a notebook in a subfolder of it."""
    make = make_zip if suffix == ".zip" else make_targz
    archive = make(tmp_path / f"bundle{suffix}", SUBFOLDER_FILES)
    out = tmp_path / "out"
    result = run_nbjob("run", archive, "--notebook", "sub/analysis.ipynb", "--output", out)
    assert result.returncode == 0, result.stderr
    nb = nbformat.read(out / "analysis.ipynb", as_version=4)
    text = stream_text(nb)
    assert "helper says 42" in text
    assert "sum 6" in text
    assert "cwd sub" in text
    assert read_json(out / "run.json")["notebook"] == "sub/analysis.ipynb"


def test_manifest_chooses_notebook_and_default_parameters(tmp_path: Path) -> None:
    chosen = notebook_json(
        [("code", "n = 1\nlabel = 'default'", ["parameters"]), "print('chosen', n, label)"]
    )
    manifest = {"notebook": "chosen.ipynb", "parameters": {"n": 5, "label": "from-manifest"}}
    archive = make_zip(
        tmp_path / "bundle.zip",
        {"other.ipynb": NB, "chosen.ipynb": chosen, "nbjob.json": json.dumps(manifest)},
    )
    out = tmp_path / "out"
    result = run_nbjob("run", archive, "--output", out, "-p", "label", "from-cli")
    assert result.returncode == 0, result.stderr
    assert "chosen 5 from-cli" in stream_text(nbformat.read(out / "chosen.ipynb", as_version=4))
    assert read_json(out / "run.json")["parameters"] == {"n": 5, "label": "from-cli"}
    assert not (out / "other.ipynb").exists()


def test_notebook_option_chooses_among_several(tmp_path: Path) -> None:
    archive = make_targz(
        tmp_path / "bundle.tar.gz",
        {"a.ipynb": notebook_json(["print('this is a')"]), "b.ipynb": NB},
    )
    out = tmp_path / "out"
    result = run_nbjob("run", archive, "--notebook", "a.ipynb", "--output", out)
    assert result.returncode == 0, result.stderr
    assert "this is a" in stream_text(nbformat.read(out / "a.ipynb", as_version=4))
