"""The kernel's interpreter started before nbjob's imports (``nbjob.early``): the kernel a
notebook gets from it is the one a plain launch starts, and one that cannot be used is ended."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nbjob import early
from support import notebook, run_nbjob, running, start_nbjob, wait_until

# What a cell sees of its kernel's process (written to FACTS).
FACTS = """\
import json, os, sys
main = sys.modules["__main__"]
json.dump({
    "argv": sys.argv, "path": sys.path, "cwd": os.getcwd(), "env": dict(os.environ),
    "main": [getattr(main.__spec__, "name", None), getattr(main, "__file__", None)],
    "session_leader": os.getsid(0) == os.getpid(), "parent": os.getppid(),
    "stdin": sys.stdin.read(), "modules": sorted(sys.modules), "orig_argv": sys.orig_argv,
    "xoptions": sys._xoptions, "os_frozen": getattr(os.__spec__, "origin", None),
}, open(os.environ["FACTS"], "w"))
"""
# Variables that differ between two runs whatever starts their kernels.
PER_RUN = {"FACTS", "JPY_PARENT_PID", "NBJOB_EARLY_KERNEL", "NBJOB_ARTIFACTS_DIR"}


def _facts(tmp_path: Path, name: str, early_kernel: str, **extra_env: str) -> dict[str, Any]:
    nb = notebook(tmp_path / "work" / "facts.ipynb", FACTS)
    facts = tmp_path / f"{name}.json"
    env = {"FACTS": str(facts), "NBJOB_EARLY_KERNEL": early_kernel, **extra_env}
    result = run_nbjob("run", nb, "--output", tmp_path / name, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    kernel = json.loads((tmp_path / name / "run.json").read_text())["kernel"]
    assert kernel.get("early_start", False) == (early_kernel == "1")
    data: dict[str, Any] = json.loads(facts.read_text())
    data["env"] = {k: v for k, v in data["env"].items() if k not in PER_RUN}
    data["argv"] = [a for a in data["argv"] if not a.endswith(".json")]  # its connection file
    return data


def test_the_early_kernel_is_the_kernel_a_plain_launch_starts(tmp_path: Path) -> None:
    early_start = _facts(tmp_path, "early", "1")
    plain = _facts(tmp_path, "plain", "0")
    # it was the early interpreter: `python -c` (nbjob.early.BOOT), not `-m ipykernel_launcher`
    assert early_start.pop("orig_argv")[1] == "-c"
    assert plain.pop("orig_argv")[1:3] == ["-m", "ipykernel_launcher"]
    assert early_start["parent"] != plain["parent"]  # each run's own nbjob
    early_start.pop("parent"), plain.pop("parent")
    env_a, env_b = early_start.pop("env"), plain.pop("env")
    assert {k for k in env_a.keys() | env_b.keys() if env_a.get(k) != env_b.get(k)} == set()
    assert early_start == plain
    assert plain["cwd"] == str((tmp_path / "work").resolve())
    assert plain["session_leader"] and plain["stdin"] == ""


def test_the_kernelspecs_interpreter_options_are_the_early_kernels_too(tmp_path: Path) -> None:
    """``ipykernel install`` writes ``-Xfrozen_modules=off`` into the kernelspec (the images'
    has it): the early interpreter starts with it, and its kernel is the plain launch's."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = ["python", "-Xfrozen_modules=off", "-m", "ipykernel_launcher"]
    kernel = {"argv": [*argv, "-f", "{connection_file}"], "language": "python"}
    (spec / "kernel.json").write_text(json.dumps({**kernel, "display_name": "Python 3"}))
    path = str(tmp_path / "jupyter")
    early_start = _facts(tmp_path, "early", "1", JUPYTER_PATH=path)
    plain = _facts(tmp_path, "plain", "0", JUPYTER_PATH=path)
    assert early_start.pop("orig_argv")[1:3] == ["-Xfrozen_modules=off", "-c"]
    assert plain.pop("orig_argv")[1:4] == argv[1:]
    assert early_start["xoptions"] == plain["xoptions"] == {"frozen_modules": "off"}
    assert plain["os_frozen"] != "frozen"  # os comes from its file, not the frozen copy
    for facts in (early_start, plain):
        facts.pop("parent"), facts.pop("env")
    assert early_start == plain


def test_only_this_python_and_its_options_are_taken_from_a_kernelspec(tmp_path: Path) -> None:
    launcher = ["-m", "ipykernel_launcher", "-f", "{connection_file}"]
    me = sys.executable
    assert early._python_of(["python", "-Xfrozen_modules=off", *launcher]) == [
        me,
        "-Xfrozen_modules=off",
    ]
    assert early._python_of([me, "-X", "dev", "-E", *launcher]) == [me, "-X", "dev", "-E"]
    assert early._python_of(["python", "-Wignore", "-OO", "-su", *launcher]) == [
        me,
        "-Wignore",
        "-OO",
        "-su",
    ]
    assert early._python_of(["python3", *launcher]) == [me]
    # the images' kernelspec names .../bin/python, nbjob's script runs .../bin/python3: the
    # same file in the same folder, started by the name the kernelspec gives
    twin = Path(me).parent / ("python3" if Path(me).name == "python" else "python")
    if twin.exists() and twin.resolve() == Path(me).resolve():
        assert early._python_of([str(twin), *launcher]) == [str(twin)]
    elsewhere = tmp_path / "python"
    elsewhere.symlink_to(Path(me).resolve())  # the same file, another environment's folder
    for other in (
        [str(elsewhere), *launcher],
        ["/opt/other/python", "-Xdev", *launcher],  # another Python
        ["python", "script.py", *launcher],  # a script, not an option
        ["python", "-c", "pass", *launcher],
        ["python", "-I", *launcher],  # isolated: BOOT's sys.path[0] is not ''
        ["python", "-Es", "-P", *launcher],
        ["python", "-Xdev", "-m", "other_kernel"],  # another kernel
        ["python", 3, *launcher],
        "python -m ipykernel_launcher",
    ):
        assert early._python_of(other) is None


def _spec(folder: Path, option: str) -> Path:
    """A python3 kernelspec under ``folder`` (a Jupyter data folder) whose Python has
    ``option``."""
    (folder / "kernels" / "python3").mkdir(parents=True, exist_ok=True)
    argv = ["python", option, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (folder / "kernels" / "python3" / "kernel.json").write_text(json.dumps({"argv": argv}))
    return folder / "kernels" / "python3" / "kernel.json"


def test_the_python3_kernelspec_found_first_is_the_guess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = sys.executable
    a, b = _spec(tmp_path / "a", "-Xa"), _spec(tmp_path / "b", "-Xb")
    path = os.pathsep.join(str(tmp_path / name) for name in ("a", "b"))
    assert early.interpreter({"JUPYTER_PATH": path}) == [me, "-Xa"]
    a.write_text("{not json")
    assert early.interpreter({"JUPYTER_PATH": path}) == [me, "-Xb"]  # unreadable: the next
    # sys.prefix's folder and the user's, in jupyter_core's order
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "env"))
    _spec(tmp_path / "env" / "share" / "jupyter", "-Xenv")
    _spec(tmp_path / "user", "-Xuser")
    user = {"JUPYTER_DATA_DIR": str(tmp_path / "user")}
    assert early.interpreter({**user, "JUPYTER_PREFER_ENV_PATH": "1"}) == [me, "-Xenv"]
    assert early.interpreter({**user, "JUPYTER_PREFER_ENV_PATH": "0"}) == [me, "-Xuser"]
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path / "env"))  # not a virtual environment
    assert early.interpreter(user) == [me, "-Xuser"]
    monkeypatch.setattr(sys, "base_prefix", "/usr")  # a virtual environment's own first
    assert early.interpreter(user) == [me, "-Xenv"]
    b.unlink()
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "nowhere"))
    nowhere = {"JUPYTER_PATH": path, "JUPYTER_DATA_DIR": str(tmp_path / "nowhere")}
    assert early.interpreter(nowhere) == [me]  # none readable: this Python alone


def test_an_interpreter_that_does_not_fit_is_ended() -> None:
    for cmd, env in [
        (["/usr/bin/python3.99", "-m", "ipykernel_launcher"], {}),  # another Python
        ([sys.executable, "-m", "other_kernel"], {}),  # another kernel
        ([sys.executable, "-m", "ipykernel_launcher"], {"PYTHONPATH": "/elsewhere"}),
    ]:
        early.start()
        process = early._waiting
        assert process is not None and early.waiting()
        assert early.take(cmd, {**os.environ, **env}, "/") is None
        assert process.poll() is not None and not early.waiting()  # ended, and reaped


def test_variables_set_for_the_kernel_may_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(early, "_started_env", {"HOME": "/root", "PATH": "/bin"})
    cmd = [sys.executable, "-m", "ipykernel_launcher", "-f", "x.json"]
    late = {"NBJOB_ARTIFACTS_DIR": "/a", "JPY_SESSION_NAME": "s", "IPYTHONDIR": "/w/ipython"}
    assert early.mismatch(cmd, {"HOME": "/root", "PATH": "/bin", **late}) is None
    assert early.mismatch(cmd, {"HOME": "/root"}) == "PATH differs"
    assert early.mismatch(cmd, {"HOME": "/", "PATH": "/bin"}) == "HOME differs"
    assert early.mismatch(["python", *cmd[1:]], {}) == "another kernel command"


def test_off_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBJOB_EARLY_KERNEL", "0")
    early.start()
    assert not early.waiting()


def _early_interpreters(parent: int) -> list[int]:
    """The early interpreters ``parent`` started that are still there (their environment says
    whose they are)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if early.BOOT.encode() in cmdline and f"JPY_PARENT_PID={parent}".encode() in environ:
            found.append(int(entry.name))
    return found


def test_a_run_that_ends_before_its_kernel_leaves_no_interpreter(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "1")
    run = start_nbjob("run", nb, "--output", tmp_path / "out", "--listener", "no-such-plugin")
    parent = run.proc.pid
    result = run.wait()
    assert result.returncode == 2, result.stderr[-2000:]  # a usage error, before the launch
    assert "no-such-plugin" in result.stderr
    assert _early_interpreters(parent) == []


def test_an_unused_interpreter_ends_once_nbjob_is_gone() -> None:
    """nbjob killed outright (no ``discard``): the interpreter reads the end of its stdin and
    exits on its own, as soon as its imports are done."""
    code = "from nbjob import early; early.start(); print(early._waiting.pid, flush=True)"
    process = subprocess.Popen(
        [sys.executable, "-c", code + "; import os; os._exit(0)"], stdout=subprocess.PIPE, text=True
    )
    out, _ = process.communicate(timeout=60)
    pid = int(out.split()[0])
    assert wait_until(lambda: not running(pid), timeout=30)
