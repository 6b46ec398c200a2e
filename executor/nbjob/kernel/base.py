"""The one interface nbjob drives kernels through, and what is built once on top of it.

A ``KernelSession`` starts a kernel (possibly in the background while the bundle is fetched),
sends code with ``execute`` and hands back every message through ``next_message``: the only
place messages come from. Interrupt, liveness and shutdown complete the contract. The GPU
probe, the requirements check and changing folder are silent executes written once here, so
they run *inside* the kernel: a remote kernel's environment is not nbjob's.
"""

from __future__ import annotations

import ast
import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from nbjob.errors import DeadKernelError

Channel = Literal["shell", "iopub"]
Message = tuple[Channel, dict[str, Any]]

DEFAULT_KERNEL = "python3"
SILENT_TIMEOUT_S = 30.0  # how long a silent helper execute may take

# Runs silently in a Python kernel before the first cell: what GPUs does the kernel see?
GPU_PROBE = r"""
def _nbjob_probe():
    import importlib, json, os, shutil, subprocess
    importlib.invalidate_caches()
    gpus, error = [], None
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            )
            for line in out.stdout.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) >= 3:
                    gpus.append({"index": parts[0], "name": parts[1], "memory": parts[2]})
            if out.returncode:
                error = (out.stderr or out.stdout).strip()[:300]
        except Exception as exc:  # reported, never fatal
            error = str(exc)[:300]
    env = {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
           if k in os.environ}
    return json.dumps({"gpus": gpus, "nvidia_smi": smi, "error": error, "env": env})
_nbjob_result = _nbjob_probe()
del _nbjob_probe
"""

# Which requirement lines does the kernel's environment not satisfy? ``packaging`` when the
# kernel has it; else a plain check of the name and an ``==`` pin.
REQUIREMENTS_CHECK = r"""
def _nbjob_unmet(lines):
    import json, re
    from importlib.metadata import PackageNotFoundError, version
    try:
        from packaging.requirements import Requirement
    except ImportError:
        Requirement = None
    unmet = []
    for line in lines:
        try:
            if Requirement is None:
                name = re.split(r"[\s<>=!~;\[@]", line, maxsplit=1)[0]
                pin = re.search(r"==\s*([^\s,;]+)", line)
                if pin and version(name) != pin.group(1):
                    unmet.append(line)
                elif not pin:
                    version(name)
                continue
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate():
                continue
            if not req.specifier.contains(version(req.name), prereleases=True):
                unmet.append(line)
        except Exception:
            unmet.append(line)
    return json.dumps(unmet)
_nbjob_result = _nbjob_unmet(LINES)
del _nbjob_unmet
"""


class KernelSession(ABC):
    """One kernel, local or remote. Every method is safe to call once the kernel is gone."""

    kind: ClassVar[str] = ""

    def __init__(self, name: str, cwd: Path, startup_timeout: float) -> None:
        self.name = name
        self.cwd = cwd  # the local folder the kernel works in (remote: the folder it mirrors)
        self.startup_timeout = startup_timeout
        self.info: dict[str, Any] = {}  # the kernel_info reply's content
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # -- what each kind implements -------------------------------------------------------------

    @abstractmethod
    def start(self) -> None:
        """Start the kernel and wait until it answers (``info`` set) or raise NbjobError."""

    @abstractmethod
    def execute(
        self,
        code: str,
        *,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: dict[str, str] | None = None,
    ) -> str:
        """Send an execute_request; return its msg_id."""

    @abstractmethod
    def next_message(self, timeout: float) -> Message | None:
        """The next shell or IOPub message, or None when none came within ``timeout`` s."""

    @abstractmethod
    def interrupt(self) -> None: ...

    @abstractmethod
    def alive(self) -> bool: ...

    @abstractmethod
    def died(self, when: str, cell_index: int | None = None) -> DeadKernelError:
        """The error for a kernel found dead ``when`` (e.g. "while running cell 3")."""

    @abstractmethod
    def shutdown(self, grace: float = 3.0) -> None:
        """Stop the kernel: ask, then force after ``grace`` seconds (0: force now)."""

    @abstractmethod
    def kernelspecs(self) -> dict[str, dict[str, Any]]:
        """name -> spec ({'language', 'display_name', ...}) of the kernels this kind can start."""

    def describe(self) -> dict[str, Any]:
        """What run.json records about where the kernel ran (never a credential)."""
        return {"kind": self.kind}

    def _spec_language(self) -> str:
        return ""

    # -- background start ----------------------------------------------------------------------

    def start_in_background(self) -> None:
        self._in_background(self.start)

    def _in_background(self, work: Callable[[], None]) -> None:
        """``work()`` on the start thread; what it raises, ``wait_started`` raises."""

        def target() -> None:
            try:
                work()
            except BaseException as exc:
                self._error = exc

        self._thread = threading.Thread(target=target, name="kernel-start", daemon=True)
        self._thread.start()

    def wait_started(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error

    def _join_start(self, timeout: float) -> None:
        """Before a shutdown: let a start under way get somewhere, boundedly."""
        if self._thread is not None:
            self._thread.join(timeout=min(self.startup_timeout, timeout))

    @property
    def language(self) -> str:
        info = self.info.get("language_info") or {}
        return str(info.get("name") or self._spec_language() or "")

    # -- helpers built on execute/next_message -------------------------------------------------

    def run_silent(
        self, code: str, user_expressions: dict[str, str], timeout: float = SILENT_TIMEOUT_S
    ) -> dict[str, Any]:
        """Run ``code`` silently; the reply content (``status``, ``user_expressions``...).

        Raises DeadKernelError when the kernel dies, TimeoutError when it does not answer.
        """
        msg_id = self.execute(
            code, silent=True, store_history=False, user_expressions=user_expressions
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.next_message(min(0.25, max(0.0, end - time.monotonic())))
            if got is None:
                if not self.alive():
                    raise self.died("during a silent set-up step")
                continue
            channel, msg = got
            if channel == "shell" and msg.get("parent_header", {}).get("msg_id") == msg_id:
                return dict(msg.get("content") or {})
        raise TimeoutError(f"the kernel did not answer a silent request within {timeout:g} s")

    def silent_value(self, code: str, timeout: float = SILENT_TIMEOUT_S) -> Any:
        """Run ``code`` (which sets ``_nbjob_result`` to a JSON string); the decoded value."""
        reply = self.run_silent(code, {"r": "_nbjob_result"}, timeout)
        self.execute("del _nbjob_result", silent=True, store_history=False)
        result = reply.get("user_expressions", {}).get("r", {})
        try:
            return json.loads(ast.literal_eval(result["data"]["text/plain"]))
        except (KeyError, ValueError, SyntaxError, TypeError):
            raise ValueError(str(result.get("evalue") or reply.get("evalue") or "failed")) from None

    def probe_gpus(self, timeout: float = SILENT_TIMEOUT_S) -> dict[str, Any]:
        """Ask a Python kernel which GPUs it sees (nvidia-smi and *_VISIBLE_DEVICES)."""
        if self.language != "python":
            return {"gpus": [], "error": "GPU probe needs a Python kernel"}
        try:
            return dict(self.silent_value(GPU_PROBE, timeout))
        except TimeoutError:
            return {"gpus": [], "error": "GPU probe did not answer"}
        except ValueError as exc:
            return {"gpus": [], "error": f"GPU probe failed: {exc}"}

    def check_requirements(self, lines: list[str]) -> list[str]:
        """The requirement lines the kernel's environment does not satisfy (Python kernels)."""
        if not lines or self.language != "python":
            return []
        try:
            unmet = self.silent_value(REQUIREMENTS_CHECK.replace("LINES", repr(lines)))
            return [str(x) for x in unmet]
        except (TimeoutError, ValueError):
            return list(lines)

    def remote_path(self, path: Path) -> str:
        """Where the local ``path`` is as the kernel sees it (local: the same)."""
        return str(path)

    def chdir(self, path: Path) -> None:
        """Make the kernel's working folder the one that mirrors the local ``path``."""
        if self.language == "python":
            target = self.remote_path(path)
            self.run_silent(f"import os as _o; _o.chdir({target!r}); del _o", {})
        self.cwd = path

    def upload_files(self, root: Path) -> int:
        """Make the files under ``root`` reachable by the kernel; how many were copied (local:
        none, they already are)."""
        return 0

    def fetch_artifacts(self, dest: Path, timeout: float = 60.0) -> list[str]:
        """Bring files the notebook wrote to its artifacts folder into ``dest`` (local: none)."""
        return []
