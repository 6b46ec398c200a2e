"""The kernel's interpreter, started before nbjob's own imports.

A Jupyter kernel's start is mostly its interpreter importing ipykernel and IPython (0.2-0.3 s
here, 2-3 times that on a container runtime such as gVisor). That import does not depend on
which notebook runs, so ``nbjob run`` starts it first (``start``, from ``main``: the command's
entry, before it imports anything else), about 0.03 s into the process, and it runs while
nbjob imports jupyter_client, reads its settings and prepares the run. When jupyter_client
launches the kernel, its provisioner (``kernel.provisioner``) hands the
command line, environment and folder it would have given ``Popen`` to that interpreter
(``take``), which takes them on and runs ``ipykernel_launcher`` as ``python -m`` would: the
same ``sys.argv``, ``sys.path``, working folder and environment, the same process session.

The interpreter is used only where it is what jupyter_client would have started: the same
Python with the same options, ``-m ipykernel_launcher``, and an environment that differs
from the one it started with only in what nbjob and Jupyter set for the kernel
(``LATE_PREFIXES``, the writable homes), none of which the import reads. Anything else
(another kernel, another Python, an overlay's, a remote kernel) and it is ended
(``discard``): the launch goes on as before. The Python and its options are guessed before
the notebook is known (``interpreter``): the ``python3`` kernelspec's, such as the
``-Xfrozen_modules=off`` that ``ipykernel install`` writes and its path to this Python (both
in the images' kernelspec). ``NBJOB_EARLY_KERNEL=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

# What the interpreter runs: ipykernel's imports while it waits for its launch (a line of
# JSON on stdin: the launcher's arguments, the variables that changed since it started, the
# folder), then the launcher. What those imports set in the environment stays, as it would
# in a plain launch. Nothing is imported from the folder nbjob started in ('' leaves sys.path
# first).
BOOT = """\
import sys
del sys.path[0]
try:
    import ipykernel.kernelapp, ipykernel.ipkernel, ipykernel.debugger
except Exception:
    pass
import json, os, runpy
line = sys.stdin.buffer.readline()
if not line:
    raise SystemExit(0)
spec = json.loads(line)
for name in spec["unset"]:
    os.environ.pop(name, None)
os.environ.update(spec["set"])
os.chdir(spec["cwd"])
sys.path.insert(0, os.getcwd())
sys.argv = ["", *spec["argv"]]
runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
"""
LAUNCHER = "ipykernel_launcher"
# What every local kernel's environment has unless nbjob's own sets it (``kernel.local``).
KERNEL_DEFAULTS = {"PYDEVD_DISABLE_FILE_VALIDATION": "1"}
# Variables that may differ from the interpreter's start to the launch (set before the
# launcher runs; nothing imported first reads them): nbjob's and Jupyter's own for the kernel,
# and the writable homes (``kernel.specs.HOME_FOLDERS``).
LATE_PREFIXES = ("NBJOB_", "JPY_")
OFF = "NBJOB_EARLY_KERNEL"

_waiting: subprocess.Popen[bytes] | None = None
_started_env: dict[str, str] = {}
_started_cmd: list[str] = []  # the interpreter and its options (``-X...``), as started
# The ``python3`` kernelspec in a Jupyter data folder; the folders are jupyter_core's, found
# without its import (40 ms, before the start): ``interpreter``.
SPEC = os.path.join("kernels", "python3", "kernel.json")
FLAGS = "bBdEOsuv"  # the interpreter's one-letter flags a kernelspec may give the early one


def start() -> None:
    """Start the interpreter, in a process session of its own as jupyter_client's kernels
    are; nothing happens when one is waiting already, or ``NBJOB_EARLY_KERNEL=0``."""
    global _waiting, _started_env, _started_cmd
    if _waiting is not None or os.environ.get(OFF, "").strip() in ("0", "false", "no"):
        return
    env = {**KERNEL_DEFAULTS, **os.environ}
    env["JPY_PARENT_PID"] = str(os.getpid())  # as jupyter_client's launcher sets it
    python = interpreter(env)
    with contextlib.suppress(OSError):
        _waiting = subprocess.Popen(
            [*python, "-c", BOOT],
            stdin=subprocess.PIPE,
            env=env,
            cwd="/",
            start_new_session=True,
        )
        _started_env, _started_cmd = env, python


def interpreter(env: Mapping[str, str]) -> list[str]:
    """The Python and its options that the ``python3`` kernelspec found first (JUPYTER_PATH,
    ``sys.prefix``'s and the user's in jupyter_core's order, the system's) puts before
    ``-m ipykernel_launcher``, when that Python is this one (the same file in the same folder:
    the same environment) and the rest are options (``-X...``, ``-W...``, ``FLAGS``; never a
    script, ``-c``, ``-I`` or ``-P``); else this Python alone. A guess (the notebook may want
    another kernel): ``mismatch`` checks."""
    folders = [*filter(None, env.get("JUPYTER_PATH", "").split(os.pathsep))]
    ours = os.path.join(sys.prefix, "share", "jupyter")
    user = env.get("JUPYTER_DATA_DIR") or os.path.expanduser("~/.local/share/jupyter")
    folders += [ours, user] if _environment_first(env) else [user, ours]
    for folder in [*folders, "/usr/local/share/jupyter", "/usr/share/jupyter"]:
        try:
            with open(os.path.join(folder, SPEC), encoding="utf-8") as f:
                argv = json.load(f).get("argv")
        except (OSError, ValueError, AttributeError):
            continue
        return _python_of(argv) or [sys.executable]
    return [sys.executable]


def _environment_first(env: Mapping[str, str]) -> bool:
    """Whether jupyter_core looks in ``sys.prefix`` before the user's folder: as
    JUPYTER_PREFER_ENV_PATH says, else in a virtual environment (as the images' is)."""
    said = env.get("JUPYTER_PREFER_ENV_PATH")
    if said is not None:
        return said.lower() not in ("no", "n", "false", "off", "0", "0.0")
    return sys.prefix != sys.base_prefix


def _python_of(argv: object) -> list[str] | None:
    """A kernelspec command's Python and its options, where the Python is this one (as
    jupyter_client resolves it) and ipykernel_launcher follows; else None."""
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return None
    python = _this_python(argv[0])
    end = next((i for i in range(1, len(argv)) if argv[i : i + 2] == ["-m", LAUNCHER]), None)
    if python is None or end is None:
        return None
    value = False  # a value follows -X and -W when not joined to them
    for word in argv[1:end]:
        if value:
            value = False
        elif word in ("-X", "-W"):
            value = True
        elif not word.startswith(("-X", "-W")) and not _flags(word):
            return None
    return [python, *argv[1:end]]


def _flags(word: str) -> bool:
    """Whether ``word`` is one or more of the interpreter's flags that BOOT runs under as a
    launch would (not ``-I`` or ``-P``: without the ``''`` they leave first in ``sys.path``,
    BOOT would drop another entry)."""
    return len(word) > 1 and word[0] == "-" and set(word[1:]) <= set(FLAGS)


def _this_python(command: str) -> str | None:
    """``command`` as the executable jupyter_client starts, where it is this Python."""
    major, minor = sys.version_info[:2]
    if command in ("python", f"python{major}", f"python{major}.{minor}"):
        return sys.executable  # jupyter_client's own substitution
    here = os.path.dirname(sys.executable)
    same = os.path.dirname(command) == here and os.path.isabs(command)
    if same and os.path.realpath(command) == os.path.realpath(sys.executable):
        return command
    return None


def main() -> int:
    """The ``nbjob`` command (its console script and ``python -m nbjob``): for ``nbjob run``
    the kernel's interpreter first, before the command's own imports, then ``nbjob.cli``."""
    if sys.argv[1:2] == ["run"]:
        start()
    from nbjob.cli import main as command

    return command()


def waiting() -> bool:
    """Whether an interpreter is waiting for its launch."""
    return _waiting is not None


def mismatch(cmd: Sequence[str], env: Mapping[str, str]) -> str | None:
    """Why the waiting interpreter cannot be the kernel ``cmd`` with ``env`` starts; None
    when it can."""
    from nbjob.kernel.specs import HOME_FOLDERS  # imported by the launch already

    if list(cmd[: len(_prefix())]) != _prefix():
        return "another kernel command"
    for name in sorted(set(env) | set(_started_env)):
        late = name.startswith(LATE_PREFIXES) or name in HOME_FOLDERS
        if not late and env.get(name) != _started_env.get(name):
            return f"{name} differs"
    return None


def _prefix() -> list[str]:
    """How the launch's command must begin for the waiting interpreter to be its kernel."""
    return [*(_started_cmd or [sys.executable]), "-m", LAUNCHER]


def take(cmd: Sequence[str], env: Mapping[str, str], cwd: str) -> subprocess.Popen[bytes] | None:
    """The waiting interpreter, launched as ``cmd`` in ``cwd`` with ``env`` (what
    jupyter_client would give ``Popen``); None (and the interpreter ended) where it cannot
    be, or none is waiting."""
    global _waiting
    process, _waiting = _waiting, None
    if process is None:
        return None
    env = {**env, "JPY_PARENT_PID": str(os.getpid())}
    if mismatch(cmd, env) is not None or process.poll() is not None or process.stdin is None:
        _end(process)
        return None
    changed = {k: v for k, v in env.items() if _started_env.get(k) != v}
    unset = [k for k in _started_env if k not in env]
    spec = {"argv": list(cmd[len(_prefix()) :]), "set": changed, "unset": unset, "cwd": cwd}
    try:
        process.stdin.write(json.dumps(spec).encode() + b"\n")
        process.stdin.close()
    except OSError:
        _end(process)
        return None
    return process


def discard() -> None:
    """End the waiting interpreter, if any (its launch went another way, or none came)."""
    global _waiting
    process, _waiting = _waiting, None
    if process is not None:
        _end(process)


def _end(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        process.kill()
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        process.wait(5)
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
