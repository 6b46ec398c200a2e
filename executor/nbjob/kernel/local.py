"""A local Jupyter kernel through jupyter_client: start it, watch it, interrupt it, stop it.

The kernel runs in its own process session (jupyter_client's launcher), so a platform's SIGTERM
reaches nbjob alone; nbjob then interrupts or kills the kernel's whole process group itself.
Whenever the kernel stops, what is left of its process group (``os.system("server &")`` from a
cell) is ended too (``nbjob.reaper``: TERM, a short wait, KILL; at once after a forced stop),
and logged as ``orphans_ended``.
Liveness is the kernel process's exit status, read without blocking. Messages come from the
shell and IOPub ZMQ sockets, polled together in ``next_message``.

IOPub keeps pace however fast the kernel publishes: a PUB socket silently drops what a slow
subscriber has not taken once its high-water mark (1,000 messages on both ends by default) is
reached. So the client's SUB socket has an unbounded receive queue (RCVHWM 0, set on the
client's own ZMQ context before it connects): libzmq's I/O thread, which needs no GIL, takes
every message off the connection as it arrives, however busy or stalled the main loop is. The
kernel's PUB end cannot be configured from outside (ipykernel sets no HWM and offers no option
for it), so an IPython kernel binds one more endpoint without a limit (``handshake``).
The main loop polls the shell and SUB sockets directly, with no thread in between: a relay
thread that drained SUB into an in-process socket saved no message in a flood with the main
loop stalled, and cost a thread wake-up per message and up to 0.1 s at shutdown.

Under an arbitrary user id (OpenShift runs images as ``--user 1000680000:0`` with ``HOME=/``)
the home folder is not writable; IPython and matplotlib would then print warnings on stderr,
lines that are not JSON in nbjob's JSON log stream. The kernel then gets writable IPython,
Jupyter and matplotlib folders under the work folder (``specs.writable_homes``), unless the
environment names its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import Any

import zmq

from nbjob import early, logs, reaper
from nbjob.errors import DeadKernelError, EnvironmentUnfitError, NoSuchKernelError
from nbjob.kernel import handshake
from nbjob.kernel.base import Channel, KernelSession, Message
from nbjob.kernel.specs import (
    IPYKERNEL_OPTIONS,
    installed_kernels,
    is_ipykernel,
    spec_manager,
    writable_homes,
)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped responding"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"  # the cause, from evidence: nbjob.resources.death
    return f"exited with status {code}"


class LocalKernel(KernelSession):
    """One kernel process on this machine and its ZMQ client."""

    kind = "local"

    def __init__(
        self,
        name: str,
        cwd: Path,
        startup_timeout: float,
        ipc_dir: Path | None = None,
        env: dict[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        super().__init__(name, cwd, startup_timeout)
        self.env = env or {}
        self.python = python  # the interpreter to start instead of the spec's (an overlay's)
        self.ipc_dir = ipc_dir
        self.km: Any = None
        self.client: Any = None
        self._poller: zmq.Poller | None = None
        self._pending: deque[Message] = deque()
        self._shutting_down = threading.Lock()  # held by the one shutdown that closes sockets
        self.pgid: int | None = None  # the kernel's process group (its own session)

    def kernelspecs(self) -> dict[str, dict[str, Any]]:
        return installed_kernels()

    def describe(self) -> dict[str, Any]:
        """The kind, and ``early_start`` where the kernel is the interpreter ``nbjob run``
        started before its imports (``nbjob.early``)."""
        early = getattr(getattr(self.km, "provisioner", None), "took_early", False)
        return {"kind": self.kind, **({"early_start": True} if early else {})}

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._launch()
        self._handshake()

    def start_in_background(self) -> None:
        """Launch the kernel process now, on this thread; connect to it in the background.

        The launch (importing jupyter_client, spawning the process) is Python work that a
        thread would do under the GIL while the caller imports and prepares; done first, the
        kernel boots on another core meanwhile (launch to first cell: 0.73 -> 0.65 s median).
        """
        try:
            self._launch()
        except BaseException as exc:  # raised by wait_started, as a background error would be
            self._error = exc
            return
        self._in_background(self._handshake)

    def _launch(self) -> None:
        """Start the kernel process (its own process group, Unix sockets when possible)."""
        from jupyter_client.kernelspec import NoSuchKernel
        from jupyter_client.manager import KernelManager

        from nbjob.kernel.provisioner import adopt_early
        from nbjob.kernel.session import LeanSession

        env = {**early.KERNEL_DEFAULTS, **os.environ, **self.env}
        if self.ipc_dir is not None:  # in the work folder
            env.update(writable_homes(env, self.ipc_dir.parent / "home"))
        try:
            # Unix sockets in a private folder: no TCP ports, no plain-text traffic warning.
            transport: dict[str, str] = {}
            if self.ipc_dir is not None and len(str(self.ipc_dir)) < 80:
                self.ipc_dir.mkdir(parents=True, exist_ok=True)
                transport = {"transport": "ipc", "ip": str(self.ipc_dir / "kernel")}
            self.km = KernelManager(
                kernel_name=self.name, kernel_spec_manager=spec_manager(), **transport
            )
            if self.python:  # --install-requirements: the same kernel, from the overlay
                self.km.kernel_spec.argv = [self.python, *self.km.kernel_spec.argv[1:]]
            self.km.session = LeanSession(parent=self.km)  # dates left unparsed
            adopt_early(self.km)  # the interpreter started first, where it fits
            extra = list(IPYKERNEL_OPTIONS) if is_ipykernel(self.km) else []
            self.km.start_kernel(cwd=str(self.cwd), env=env, extra_arguments=extra)
            process = self._process()
            pgid = getattr(self.km.provisioner, "pgid", None) or getattr(process, "pid", None)
            self.pgid = pgid if pgid != os.getpgrp() else None  # never nbjob's own group
        except NoSuchKernel:
            raise NoSuchKernelError(f"No such kernel: {self.name!r} is not installed") from None
        except OSError as exc:
            raise EnvironmentUnfitError(f"kernel {self.name!r} cannot start: {exc}") from None

    def _handshake(self) -> None:
        """Connect to the launched kernel and wait until it answers, IOPub subscribed."""
        self.client = self.km.client()
        self.client.context.setsockopt(zmq.RCVHWM, 0)  # this client's own context, pre-connect
        self.client.start_channels(iopub=False, hb=False)  # liveness is the exit status
        handshake.unbounded_iopub(self)
        self.client.iopub_channel.start()
        self.info = handshake.wait_ready(self)
        self._poller = zmq.Poller()
        self._poller.register(self.client.shell_channel.socket, zmq.POLLIN)
        self._poller.register(self.client.iopub_channel.socket, zmq.POLLIN)

    def _spec_language(self) -> str:
        return str(self.km.kernel_spec.language or "") if self.km is not None else ""

    # -- messages ------------------------------------------------------------------------------

    def execute(
        self,
        code: str,
        *,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: dict[str, str] | None = None,
    ) -> str:
        return str(
            self.client.execute(
                code,
                silent=silent,
                store_history=store_history,
                user_expressions=user_expressions or {},
                allow_stdin=False,
                stop_on_error=False,
            )
        )

    def next_message(self, timeout: float) -> Message | None:
        if not self._pending and self._poller is not None:
            ready = dict(self._poller.poll(int(timeout * 1000)))
            sockets: tuple[tuple[Channel, Any], ...] = (
                ("iopub", self.client.iopub_channel.socket),
                ("shell", self.client.shell_channel.socket),
            )
            for channel, socket in sockets:
                if socket in ready:
                    _, msg = self.client.session.recv(socket, mode=zmq.NOBLOCK)
                    if msg is not None:
                        self._pending.append((channel, msg))
        return self._pending.popleft() if self._pending else None

    # -- liveness ------------------------------------------------------------------------------

    def exit_code(self) -> int | None:
        """None while running; the exit code (negative: signal) once the process ended."""
        process = self._process()
        if process is not None:
            return process.poll()  # type: ignore[no-any-return,unused-ignore]
        return None if self.km is not None and self.km.is_alive() else -1

    def alive(self) -> bool:
        return self.km is not None and self.exit_code() is None

    def stopped(self) -> bool:
        """Whether the kernel process is stopped (SIGSTOP, SIGTSTP): alive, but frozen."""
        process = self._process()
        return process is not None and process.poll() is None and reaper.stopped(process.pid)

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

    def shutdown(self, grace: float = 3.0) -> None:
        """Ask the kernel to exit, kill its process group after ``grace`` seconds.

        One call closes the client's sockets and waits for the kernel; a call made while that
        one is under way (a stop cutting a graceful shutdown short, from another thread) only
        kills the process group: ZMQ sockets and jupyter_client's manager are not to be used
        from two threads at once.
        """
        if not self._shutting_down.acquire(blocking=False):
            self._kill_group()
            return
        self._join_start(5.0)  # still starting: wait a little, then kill what exists
        if self.client is not None:
            self.client.stop_channels()
        self._poller = None
        if self.km is None:
            return
        left = self._group_leftovers()
        self._stop_kernel(grace)
        self._end_group(left, grace)

    def _stop_kernel(self, grace: float) -> None:
        try:
            if self.alive() and grace > 0:
                self._ask_to_exit(grace)
            else:
                self.km.shutdown_kernel(now=True)
        except Exception:
            with contextlib.suppress(Exception):
                self.km.shutdown_kernel(now=True)

    def _ask_to_exit(self, grace: float) -> None:
        """jupyter_client's graceful shutdown (interrupt, ``shutdown_request``, TERM after
        ``grace / 2``, KILL after ``grace``), with the kernel's exit waited for on its process
        instead of polled every 0.1 s: a run ends as soon as its kernel has.

        The TERM is nbjob's own, at ``grace / 2``: jupyter_client's ``finish_shutdown`` would
        wait as long again first. ipykernel 7 can hang for good in its shutdown (its control
        thread's last flush races the IOPub thread's stop: the flush blocks, the main thread
        joins the control thread; seen in 1 run in 10 to 35 here), and such a kernel then cost
        the whole grace, not half of it."""
        km, process = self.km, self._process()
        km.shutdown_wait_time = grace
        if process is None:
            km.shutdown_kernel(now=False)
            return
        km.shutting_down = True
        km.interrupt_kernel()
        km.request_shutdown()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace / 2)
        if process.poll() is None:  # stuck, or slow to exit: TERM now
            with contextlib.suppress(OSError):
                process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace / 2)
        km.finish_shutdown(waittime=0.2)  # at once when it has exited; else TERM, then KILL
        km.cleanup_resources()

    def process_id(self) -> int | None:
        return getattr(self._process(), "pid", None)

    def _process(self) -> Any:
        """The kernel's ``Popen`` (jupyter_client's local provisioner), None before the launch."""
        return getattr(getattr(self.km, "provisioner", None), "process", None)

    def _kill_group(self) -> None:
        """SIGKILL to the kernel's process group (its own session), touching nothing else; also
        once the kernel is gone, as what it started may still be there."""
        if self.pgid is not None and (reaper.group(self.pgid) or not reaper.PROC.is_dir()):
            with contextlib.suppress(OSError):
                os.killpg(self.pgid, signal.SIGKILL)

    def kill(self) -> None:
        """The kernel and its process group, killed now; safe from any thread (no socket is
        touched: the next ``alive`` says it died)."""
        self._kill_group()

    def _group_leftovers(self) -> list[reaper.Proc]:
        """What the kernel's process group holds besides the kernel itself."""
        process = self._process()
        kernel = getattr(process, "pid", None)
        if self.pgid is None:
            return []
        return [p for p in reaper.group(self.pgid) if p.pid != kernel]

    def _end_group(self, seen: list[reaper.Proc], grace: float) -> None:
        """The kernel has stopped: end what is left of its process group (TERM, a short wait,
        KILL; at once when ``grace`` is 0) and name what was there in the log."""
        if self.pgid is None:
            return
        if not reaper.PROC.is_dir():  # no /proc to look in: the group, blindly
            self._kill_group()
            return
        ended, killed = reaper.end(reaper.group(self.pgid), min(grace, reaper.TERM_WAIT_S))
        keys = {p.key for p in ended}
        ended += [p for p in seen if p.key not in keys]  # ended with the kernel's own stop
        if ended:
            logs.get_logger().warning(
                "orphans_ended", where="the kernel's process group", **reaper.summary(ended, killed)
            )
