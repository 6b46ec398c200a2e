"""A remote kernel on a Jupyter Server, Kernel Gateway or Enterprise Gateway.

REST for the kernel's life (``POST /api/kernels``, ``.../interrupt``, ``DELETE``, ``GET`` for
liveness) and the ``/api/kernels/<id>/channels`` websocket for messages (protocol v5 as JSON).
A receiver thread puts each incoming message on a queue that ``next_message`` reads.

Files: where the server has a Contents API, the bundle goes to ``nbjob-runs/<run id>/bundle``
under the server's root and the kernel starts there (``path``); otherwise (Enterprise Gateway)
the kernel makes a temporary folder and the files travel through silent executes (code from
the kernel's language: its ``file_transfer`` capability; without it, no files). The notebook
writes artifacts to ``$NBJOB_ARTIFACTS_DIR``, set in the kernel to a folder beside the bundle;
``fetch_artifacts`` brings them back.

A kernel that dies is restarted by Jupyter Server, which says so with an IOPub status
'restarting' (or 'dead' when it gives up): either, a 404 for the kernel, or a closed websocket
means the kernel this run was using is gone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import posixpath
import queue
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from nbjob.errors import DeadKernelError, EnvironmentUnfitError, NoSuchKernelError
from nbjob.kernel import transfer
from nbjob.kernel.base import KernelSession, Message
from nbjob.kernel.rest import GatewayAPI, GatewayError

LIVENESS_EVERY_S = 1.0  # at most one GET /api/kernels/<id> this often
RUNS_FOLDER = "nbjob-runs"


class GatewayKernel(KernelSession):
    """A kernel started and driven over a Jupyter server's REST and websocket API."""

    kind = "gateway"

    def __init__(
        self,
        name: str,
        cwd: Path,
        startup_timeout: float,
        api: GatewayAPI,
        run_id: str,
    ) -> None:
        super().__init__(name, cwd, startup_timeout)
        self.api = api
        self.run_id = run_id
        self.kernel_id: str | None = None
        self.contents = False  # does the server have a Contents API?
        self.run_dir = posixpath.join(RUNS_FOLDER, run_id)  # Contents API path
        self.remote_cwd = ""  # the bundle folder's path on the kernel's machine
        self.remote_artifacts = ""
        self.local_root: Path | None = None
        self._session = uuid.uuid4().hex
        self._spec: dict[str, Any] = {}
        self._queue: queue.Queue[Message] = queue.Queue()
        self._ws: Any = None
        self._receiver: threading.Thread | None = None
        self._gone: str | None = None  # why the kernel is known to be gone
        self._checked = 0.0

    def kernelspecs(self) -> dict[str, dict[str, Any]]:
        answer = self.api.request("GET", "api/kernelspecs") or {}
        specs = answer.get("kernelspecs") or {}
        return {name: dict(s.get("spec") or {}) for name, s in specs.items()}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "gateway_url": self.api.base,
            "kernel_id": self.kernel_id,
            "files": "contents_api" if self.contents else "in_kernel",
            "remote_cwd": self.remote_cwd,
        }

    def _spec_language(self) -> str:
        return str(self._spec.get("language") or "")

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        specs = self.kernelspecs()  # also proves the URL and the token
        if self.name not in specs:
            raise NoSuchKernelError(
                f"No such kernel: {self.name!r} is not offered by the gateway "
                f"{self.api.base}; offered: {', '.join(sorted(specs))}"
            )
        self._spec = specs[self.name]
        self.contents = self._has_contents_api() and self._made_run_folder()
        body: dict[str, Any] = {"name": self.name}
        if self.contents:
            body["path"] = posixpath.join(self.run_dir, "bundle")
        model = self.api.request("POST", "api/kernels", body)
        self.kernel_id = str(model["id"])
        self._ws = self.api.websocket(
            f"api/kernels/{self.kernel_id}/channels",
            timeout=self.api.timeout,
            session_id=self._session,
        )
        self._ws.settimeout(None)
        self._receiver = threading.Thread(target=self._receive, name="gateway-ws", daemon=True)
        self._receiver.start()
        self.info = self._wait_ready()
        if self.lang.supports("file_transfer"):
            self._set_up_folders()

    def _has_contents_api(self) -> bool:
        try:
            self.api.request("GET", "api/contents", query={"content": "0"})
            return True
        except GatewayError as exc:
            if exc.http_status in (404, 405, 501):
                return False
            raise

    def _made_run_folder(self) -> bool:
        """The run's folder under the server's root; False where it cannot be written."""
        try:
            transfer.contents_mkdir(self.api, posixpath.join(self.run_dir, "bundle"))
            return True
        except GatewayError as exc:
            if exc.http_status in (0, 401):
                raise
            return False  # e.g. a read-only Contents API: files go through the kernel

    def _wait_ready(self) -> dict[str, Any]:
        end = time.monotonic() + self.startup_timeout
        while time.monotonic() < end:
            msg_id = self._send("kernel_info_request", {})
            resend = min(end, time.monotonic() + 2.0)
            while time.monotonic() < resend:
                got = self.next_message(min(0.25, max(0.0, resend - time.monotonic())))
                if got is None:
                    if not self.alive():
                        raise self.died("while starting")
                    continue
                channel, msg = got
                if channel == "shell" and msg["parent_header"].get("msg_id") == msg_id:
                    return dict(msg["content"])
        raise EnvironmentUnfitError(
            f"gateway kernel {self.name!r} did not answer within {self.startup_timeout:g} s"
        )

    def _set_up_folders(self) -> None:
        """cwd and NBJOB_ARTIFACTS_DIR inside the kernel (a temp folder without Contents API)."""
        code = self.lang.remote_setup("../artifacts", make_temp=not self.contents)
        try:
            where = self.silent_value(code)
        except (TimeoutError, ValueError) as exc:
            raise EnvironmentUnfitError(f"gateway kernel set-up failed: {exc}") from None
        self.remote_cwd, self.remote_artifacts = where["cwd"], where["artifacts"]

    # -- messages ------------------------------------------------------------------------------

    def _send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        if self._ws is None or self._gone:
            raise self.died("before a request could be sent")
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "username": "nbjob",
            "session": self._session,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(),
            "version": "5.3",
        }
        msg = {
            "header": header,
            "parent_header": {},
            "metadata": {},
            "content": content,
            "channel": channel,
            "buffers": [],
        }
        try:
            self._ws.send(json.dumps(msg))
        except Exception as exc:
            self._gone = self._gone or f"lost its connection ({type(exc).__name__})"
            raise self.died("while a request was sent") from None
        return msg_id

    def _receive(self) -> None:
        """Receiver thread: websocket frames -> (channel, message) on the queue."""
        ws = self._ws
        try:
            while True:
                _quick_ack(ws)
                frame = ws.recv()
                if not frame:
                    break
                if isinstance(frame, bytes):
                    continue  # binary frames are the v1 protocol, never requested
                msg = json.loads(frame)
                channel = msg.pop("channel", None)
                if channel not in ("shell", "iopub"):
                    continue
                msg.setdefault("msg_type", msg["header"]["msg_type"])
                msg.setdefault("parent_header", {})
                if channel == "iopub" and msg["msg_type"] == "status" and not msg["parent_header"]:
                    state = msg["content"].get("execution_state")
                    if state in ("restarting", "dead"):
                        self._gone = f"died (the server reports it {state})"
                self._queue.put((channel, msg))
        except Exception:  # closed, reset or shut down: the kernel is unreachable
            pass
        self._gone = self._gone or "lost its connection to the gateway (websocket closed)"

    def execute(
        self,
        code: str,
        *,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: dict[str, str] | None = None,
    ) -> str:
        content = {
            "code": code,
            "silent": silent,
            "store_history": store_history,
            "user_expressions": user_expressions or {},
            "allow_stdin": False,
            "stop_on_error": False,
        }
        return self._send("execute_request", content)

    def next_message(self, timeout: float) -> Message | None:
        try:
            if timeout <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    # -- liveness ------------------------------------------------------------------------------

    def alive(self) -> bool:
        if self.kernel_id is None or self._gone:
            return False
        now = time.monotonic()
        if now - self._checked >= LIVENESS_EVERY_S:
            self._checked = now
            try:
                model = self.api.request(
                    "GET", f"api/kernels/{self.kernel_id}", timeout=min(self.api.timeout, 2.0)
                )
                if (model or {}).get("execution_state") == "dead":
                    self._gone = "died (the server reports it dead)"
            except GatewayError as exc:
                if exc.http_status == 404:
                    self._gone = "is gone from the server (HTTP 404)"
                # other errors: the websocket tells when the server is really gone
        return self._gone is None

    def died(self, when: str, cell_index: int | None = None) -> DeadKernelError:
        why = self._gone or "stopped responding"
        hint = "; a crash, a kill or the out-of-memory killer" if "died" in why else ""
        return DeadKernelError(
            f"the remote kernel {why} {when}{hint}", cell_index=cell_index, exit_status=None
        )

    # -- control -------------------------------------------------------------------------------

    def interrupt(self) -> None:
        if self.kernel_id is not None and not self._gone:
            with contextlib.suppress(GatewayError):
                self.api.request("POST", f"api/kernels/{self.kernel_id}/interrupt", {}, timeout=5.0)

    def shutdown(self, grace: float = 3.0) -> None:
        """DELETE the kernel; the server asks it to exit and kills it after its own wait."""
        self._join_start(5.0)
        if grace > 0 and not self.contents and self.remote_cwd and self.alive():
            with contextlib.suppress(Exception):  # the temporary folder made in the kernel
                top = posixpath.dirname(self.remote_cwd)
                self.run_silent(self.lang.remove_tree(top), {}, grace)
        if self.kernel_id is not None:
            with contextlib.suppress(GatewayError):
                self.api.request(
                    "DELETE", f"api/kernels/{self.kernel_id}", timeout=max(1.0, grace + 1.0)
                )
            self.kernel_id = None
        self._gone = self._gone or "was shut down"
        if self._ws is not None:  # wakes the receiver thread's recv, then frees the socket
            with contextlib.suppress(OSError, AttributeError):
                self._ws.sock.shutdown(socket.SHUT_RDWR)
            if self._receiver is not None:
                self._receiver.join(timeout=2.0)
            with contextlib.suppress(Exception):
                self._ws.shutdown()

    # -- files ---------------------------------------------------------------------------------

    def remote_path(self, path: Path) -> str:
        root = self.local_root or self.cwd
        try:
            relative = path.relative_to(root).as_posix()
        except ValueError:
            relative = "."
        return posixpath.normpath(posixpath.join(self.remote_cwd, relative))

    def upload_files(self, root: Path) -> int:
        """Copy the bundle to the kernel's folder before the first cell."""
        files = list(transfer.local_files(root))
        by_kernel = files if not self.contents else [f for f in files if transfer.hidden(f[0])]
        if self.contents:
            plain = [f for f in files if not transfer.hidden(f[0])]
            transfer.contents_upload(self.api, posixpath.join(self.run_dir, "bundle"), plain)
        if by_kernel and self.lang.supports("file_transfer"):
            try:
                transfer.kernel_upload(self, self.remote_cwd, by_kernel)
            except OSError as exc:
                raise EnvironmentUnfitError(f"bundle upload to the remote kernel: {exc}") from None
        self.local_root, self.cwd = root, root
        return len(files)

    def fetch_artifacts(self, dest: Path, timeout: float = 60.0) -> list[str]:
        deadline = time.monotonic() + timeout
        if not self.info:  # never started: no cell could write anything
            return []
        if self.contents:
            remote = posixpath.join(self.run_dir, "artifacts")
            return transfer.contents_download(self.api, remote, dest, deadline)
        if self.remote_artifacts and self.alive():
            return transfer.kernel_download(self, self.remote_artifacts, dest, deadline)
        return []


def _quick_ack(ws: Any) -> None:
    """Acknowledge the server's next segment at once (Linux ``TCP_QUICKACK``, reset by the OS).

    Servers that leave Nagle's algorithm on (tornado does unless told) hold each small frame
    until the previous one is acknowledged; with delayed ACKs here that costs ~40 ms per cell.
    """
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None:
        with contextlib.suppress(OSError, AttributeError):
            ws.sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
