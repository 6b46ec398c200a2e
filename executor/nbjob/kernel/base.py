"""The one interface nbjob drives kernels through, and what is built once on top of it.

A ``KernelSession`` starts a kernel (possibly in the background while the bundle is fetched),
sends code with ``execute`` and hands back every message through ``next_message``: the only
place messages come from. Interrupt, liveness and shutdown complete the contract. The GPU
probe, the requirements check, setting a variable and changing folder are silent executes
written once here, so they run *inside* the kernel: a remote kernel's environment is not
nbjob's. Their code comes from the kernel's language (``lang``, ``nbjob.languages``); a step
the language lacks is skipped.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from nbjob import languages
from nbjob.errors import DeadKernelError

Channel = Literal["shell", "iopub"]
Message = tuple[Channel, dict[str, Any]]

DEFAULT_KERNEL = languages.get(languages.DEFAULT_LANGUAGE).default_kernel or "python3"
SILENT_TIMEOUT_S = 30.0  # how long a silent helper execute may take


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

    def process_id(self) -> int | None:
        """The kernel's process id on this machine, for its resources (``nbjob.resources``);
        None: a kernel elsewhere (a gateway's), or none started."""
        return None

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

    @property
    def lang(self) -> languages.Language:
        """The kernel's language: the code nbjob sends it, and what it can do."""
        return languages.get(self.language)

    def silent_value(self, code: str, timeout: float = SILENT_TIMEOUT_S) -> Any:
        """Run ``code`` (which sets the language's ``RESULT`` to a JSON string); the value."""
        lang = self.lang
        reply = self.run_silent(code, {"r": lang.RESULT}, timeout)
        self.execute(lang.forget(lang.RESULT), silent=True, store_history=False)
        result = reply.get("user_expressions", {}).get("r", {})
        try:
            return lang.decode(result["data"]["text/plain"])
        except (KeyError, ValueError, SyntaxError, TypeError):
            raise ValueError(str(result.get("evalue") or reply.get("evalue") or "failed")) from None

    def probe_gpus(self, timeout: float = SILENT_TIMEOUT_S) -> dict[str, Any]:
        """Ask the kernel which GPUs it sees (nvidia-smi and *_VISIBLE_DEVICES)."""
        if not self.lang.supports("gpu_probe"):
            able = ", ".join(languages.supporting("gpu_probe"))
            return {"gpus": [], "error": f"GPU probe needs a {able} kernel, not {self.language!r}"}
        try:
            return dict(self.silent_value(self.lang.gpu_probe(), timeout))
        except TimeoutError:
            return {"gpus": [], "error": "GPU probe did not answer"}
        except ValueError as exc:
            return {"gpus": [], "error": f"GPU probe failed: {exc}"}

    def check_requirements(self, lines: list[str]) -> list[str]:
        """The requirement lines the kernel's environment does not satisfy (none checked where
        the language has no check)."""
        if not lines or not self.lang.supports("requirements_check"):
            return []
        try:
            unmet = self.silent_value(self.lang.requirements_check(lines))
            return [str(x) for x in unmet]
        except (TimeoutError, ValueError):
            return list(lines)

    def set_env(self, name: str, value: str) -> bool:
        """Set an environment variable inside the kernel; False where the language cannot."""
        if not self.lang.supports("set_env"):
            return False
        self.run_silent(self.lang.set_env(name, value), {})
        return True

    def remote_path(self, path: Path) -> str:
        """Where the local ``path`` is as the kernel sees it (local: the same)."""
        return str(path)

    def chdir(self, path: Path) -> None:
        """Make the kernel's working folder the one that mirrors the local ``path`` (where
        the language cannot, only ``cwd`` changes: ``prepare.kernel_at`` starts a kernel
        there instead)."""
        if self.lang.supports("chdir"):
            self.run_silent(self.lang.chdir(self.remote_path(path)), {})
        self.cwd = path

    def upload_files(self, root: Path) -> int:
        """Make the files under ``root`` reachable by the kernel; how many were copied (local:
        none, they already are)."""
        return 0

    def fetch_artifacts(self, dest: Path, timeout: float = 60.0) -> list[str]:
        """Bring files the notebook wrote to its artifacts folder into ``dest`` (local: none)."""
        return []
