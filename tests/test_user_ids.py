"""Arbitrary user ids (OpenShift's ``--user 1000680000:0``, ``HOME=/``): nbjob's stderr stays
JSON lines, the kernel gets writable IPython and Jupyter folders (issue 15, finding 12)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nbjob
import pytest
from nbjob.kernel.specs import HOME_FOLDERS, spec_manager, writable_homes
from support import notebook

UID, GID = 1000680000, 0  # what OpenShift gives a pod: a high user id, the root group


def test_a_kernel_gets_writable_folders_only_when_home_cannot_be_written(tmp_path: Path) -> None:
    made = writable_homes({"HOME": "/nonexistent", "MPLCONFIGDIR": "/mine"}, tmp_path / "home")
    assert set(made) == set(HOME_FOLDERS) - {"MPLCONFIGDIR"}  # a variable set is kept
    assert all(Path(p).is_dir() and str(p).startswith(str(tmp_path)) for p in made.values())
    assert set(writable_homes({}, tmp_path / "home")) == set(HOME_FOLDERS)
    assert writable_homes({"HOME": str(tmp_path)}, tmp_path / "other") == {}


def test_kernelspecs_are_looked_for_where_jupyter_looks_and_in_ipythons_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jupyter_client's folders, then IPython's legacy ``kernels`` folder (IPYTHONDIR, else
    ~/.ipython when HOME can be written): a kernelspec installed there is found."""
    from jupyter_core.paths import jupyter_path

    spec = tmp_path / "ipy" / "kernels" / "mine"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipy"))
    manager = spec_manager()
    assert manager.kernel_dirs == [*jupyter_path("kernels"), str(tmp_path / "ipy" / "kernels")]
    assert "mine" in manager.find_kernel_specs()
    monkeypatch.delenv("IPYTHONDIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert spec_manager().kernel_dirs[-1] == str(tmp_path / ".ipython" / "kernels")
    monkeypatch.setenv("HOME", "/nonexistent")  # an arbitrary user id's: Jupyter's folders only
    assert spec_manager().kernel_dirs == jupyter_path("kernels")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder another user can write (pytest's own are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="nbjob-uid-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _python_for(uid: int, env: dict[str, str]) -> str | None:
    """An interpreter of this Python's version that ``uid`` can start with this environment's
    packages: this one, or the system's of the same version when this one lives in a folder
    ``uid`` cannot enter (a pyenv under /root)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    check = f"import sys, ipykernel, nbjob; assert sys.version.startswith('{version}')"
    for python in candidates:
        try:
            done = subprocess.run(
                [python, "-c", check], env=env, user=uid, group=GID, extra_groups=[],
                capture_output=True, timeout=60,
            )  # fmt: skip
        except OSError:
            continue
        if done.returncode == 0:
            return python
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="running nbjob as another user id needs root")
def test_under_an_arbitrary_user_id_with_home_at_root_every_stderr_line_is_json(
    shared_dir: Path,
) -> None:
    paths = [
        str(Path(nbjob.__file__).parents[1]),
        *{sysconfig.get_path(k) for k in ("purelib", "platlib")},
    ]
    env = {
        "HOME": "/",  # not writable by this user, as in OpenShift
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join(paths),
        "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter"),  # the kernelspecs
        "NBJOB_LOG_FORMAT": "json",
    }
    python = _python_for(UID, env)
    if python is None:
        pytest.skip(f"no Python {sys.version_info[:2]} that user {UID} can start")
    nb = notebook(
        shared_dir / "nb.ipynb",
        "import os\nfolders = [os.environ[k] for k in ('IPYTHONDIR', 'JUPYTER_RUNTIME_DIR')]\n"
        "print(all(os.access(f, os.W_OK) for f in folders), os.environ['HOME'])",
    )
    nb.chmod(0o644)
    out = shared_dir / "out"
    done = subprocess.run(
        [python, "-m", "nbjob", "run", nb, "--output", out],
        env=env, user=UID, group=GID, extra_groups=[], cwd=shared_dir,
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    not_json = [line for line in done.stderr.splitlines() if not _is_json(line)]
    assert not_json == [], done.stderr
    streams = [json.loads(line) for line in done.stderr.splitlines()]
    assert [e["text"] for e in streams if e["event"] == "stream"] == ["True /\n"]
    assert json.loads((out / "run.json").read_text())["status"] == "succeeded"
    assert (out / "nb.html").is_file()


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
