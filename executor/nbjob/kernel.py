"""A local Jupyter kernel: choose it, start it, watch it, interrupt it, stop it.

The kernel runs in its own process session (jupyter_client's launcher), so a platform's SIGTERM
reaches nbjob alone; nbjob then interrupts or kills the kernel's whole process group itself.
Liveness is the kernel process's exit status, read without blocking.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nbjob.errors import DeadKernelError, EnvironmentUnfitError, NoSuchKernelError

DEFAULT_KERNEL = "python3"

# Runs silently in a Python kernel before the first cell: what GPUs does the kernel see?
_GPU_PROBE = r"""
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


def installed_kernels() -> dict[str, dict[str, Any]]:
    """name -> {'language': ..., 'display_name': ...} for every installed kernelspec."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().get_all_specs()
    return {name: s.get("spec", {}) for name, s in specs.items()}


def choose(notebook_meta: Mapping[str, Any], override: str | None) -> str:
    """The kernel to run: override, else the notebook's kernelspec, else one of its language."""
    installed = installed_kernels()
    if override:
        if override not in installed:
            raise NoSuchKernelError(
                f"kernel {override!r} is not installed; installed: {', '.join(sorted(installed))}"
            )
        return override
    spec = notebook_meta.get("kernelspec") or {}
    name = spec.get("name")
    if name in installed:
        return str(name)
    language = spec.get("language") or (notebook_meta.get("language_info") or {}).get("name")
    if not name and not language:
        language = "python"
    if language:
        if language == "python" and DEFAULT_KERNEL in installed:
            return DEFAULT_KERNEL
        for candidate, meta in sorted(installed.items()):
            if meta.get("language") == language:
                return candidate
    raise NoSuchKernelError(
        f"No such kernel: the notebook asks for {name or language!r}, which is not installed "
        f"here; installed: {', '.join(sorted(installed))} (choose one with --kernel)"
    )


def describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped responding"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = ", often the out-of-memory killer" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {code}"


class Kernel:
    """One kernel process and its client; all methods are safe to call once stopped."""

    def __init__(
        self,
        name: str,
        cwd: Path,
        startup_timeout: float,
        ipc_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.env = env or {}
        self.ipc_dir = ipc_dir
        self.cwd = cwd
        self.startup_timeout = startup_timeout
        self.km: Any = None
        self.client: Any = None
        self.info: dict[str, Any] = {}
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        from jupyter_client.kernelspec import NoSuchKernel
        from jupyter_client.manager import KernelManager

        env = {**os.environ, **self.env}
        env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        try:
            # Unix sockets in a private folder: no TCP ports, no plain-text traffic warning.
            transport: dict[str, str] = {}
            if self.ipc_dir is not None and len(str(self.ipc_dir)) < 80:
                self.ipc_dir.mkdir(parents=True, exist_ok=True)
                transport = {"transport": "ipc", "ip": str(self.ipc_dir / "kernel")}
            self.km = KernelManager(kernel_name=self.name, **transport)
            self.km.start_kernel(cwd=str(self.cwd), env=env)
        except NoSuchKernel:
            raise NoSuchKernelError(f"No such kernel: {self.name!r} is not installed") from None
        except OSError as exc:
            raise EnvironmentUnfitError(f"kernel {self.name!r} cannot start: {exc}") from None
        self.client = self.km.client()
        self.client.start_channels()
        self.info = self._wait_ready()

    def _wait_ready(self) -> dict[str, Any]:
        """The kernel_info reply, once IOPub is subscribed too.

        A SUB socket joins late: what the kernel publishes before the subscription is in place
        is lost, and a cell whose 'idle' is lost would never end. So the kernel is ready when
        it has answered kernel_info and any IOPub message has arrived (``iopub_welcome``, or the
        status of a kernel_info request); without one the request is sent again. Unlike
        ``wait_for_ready`` this adds no fixed wait once the kernel answers.
        """
        from queue import Empty

        shell, iopub = self.client.shell_channel, self.client.iopub_channel
        end = time.monotonic() + self.startup_timeout
        reply: dict[str, Any] | None = None
        subscribed = False
        while time.monotonic() < end:
            self.client.kernel_info()
            settle = time.monotonic() + (0.2 if reply else min(1.0, end - time.monotonic()))
            while time.monotonic() < settle:
                if reply is None and shell.msg_ready():
                    msg = shell.get_msg(timeout=0)
                    if msg["msg_type"] == "kernel_info_reply":
                        reply = msg["content"]
                        settle = time.monotonic() + 0.2
                try:
                    iopub.get_msg(timeout=0.02)
                    subscribed = True
                except Empty:
                    pass
                if reply is not None and subscribed:
                    while iopub.msg_ready():  # drop what is queued (strays are ignored anyway)
                        iopub.get_msg(timeout=0)
                    return reply
            if not self.alive():
                raise self.died("while starting")
        raise EnvironmentUnfitError(
            f"kernel {self.name!r} did not answer within {self.startup_timeout:g} s"
        )

    def start_in_background(self) -> None:
        def target() -> None:
            try:
                self.start()
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

    @property
    def language(self) -> str:
        info = self.info.get("language_info") or {}
        return str(info.get("name") or self.km.kernel_spec.language or "")

    # -- liveness ------------------------------------------------------------------------------

    def exit_code(self) -> int | None:
        """None while running; the exit code (negative: signal) once the process ended."""
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        if process is not None:
            return process.poll()  # type: ignore[no-any-return,unused-ignore]
        return None if self.km is not None and self.km.is_alive() else -1

    def alive(self) -> bool:
        return self.km is not None and self.exit_code() is None

    def died(self, when: str, cell_index: int | None = None) -> DeadKernelError:
        code = self.exit_code()
        return DeadKernelError(
            f"the kernel {describe_exit(code)} {when}", cell_index=cell_index, exit_status=code
        )

    # -- control -------------------------------------------------------------------------------

    def interrupt(self) -> None:
        if self.alive():
            with contextlib.suppress(OSError, RuntimeError):
                self.km.interrupt_kernel()

    def probe_gpus(self, timeout: float = 30) -> dict[str, Any]:
        """Ask a Python kernel which GPUs it sees (nvidia-smi and *_VISIBLE_DEVICES)."""
        if self.language != "python":
            return {"gpus": [], "error": "GPU probe needs a Python kernel"}
        msg_id = self.client.execute(
            _GPU_PROBE,
            silent=True,
            store_history=False,
            user_expressions={"r": "_nbjob_result"},
            allow_stdin=False,
        )
        try:
            reply = self.client.get_shell_msg(timeout=timeout)
            while reply["parent_header"].get("msg_id") != msg_id:
                reply = self.client.get_shell_msg(timeout=timeout)
        except Exception:
            if not self.alive():
                raise self.died("during the GPU check") from None
            return {"gpus": [], "error": "GPU probe did not answer"}
        self.client.execute("del _nbjob_result", silent=True, store_history=False)
        result = reply["content"].get("user_expressions", {}).get("r", {})
        try:
            text = ast.literal_eval(result["data"]["text/plain"])
            return dict(json.loads(text))
        except (KeyError, ValueError, SyntaxError, TypeError):
            return {"gpus": [], "error": str(result.get("evalue", "GPU probe failed"))}

    def shutdown(self, grace: float = 3.0) -> None:
        """Ask the kernel to exit, kill its process group after ``grace`` seconds."""
        if self._thread is not None:  # still starting: wait a little, then kill what exists
            self._thread.join(timeout=min(self.startup_timeout, 5.0))
        if self.client is not None:
            self.client.stop_channels()
        if self.km is None:
            return
        try:
            if self.alive() and grace > 0:
                self.km.shutdown_wait_time = grace
                self.km.shutdown_kernel(now=False)
            else:
                self.km.shutdown_kernel(now=True)
        except Exception:
            with contextlib.suppress(Exception):
                self.km.shutdown_kernel(now=True)
