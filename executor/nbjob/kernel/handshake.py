"""The handshake with a launched local kernel: wait until it answers with IOPub subscribed
(``wait_ready``), on an IOPub endpoint without a send limit when it is IPython
(``unbounded_iopub``), so IOPub keeps pace however fast the kernel publishes (see
``kernel.local``)."""

from __future__ import annotations

import time
from queue import Empty
from typing import TYPE_CHECKING, Any

from nbjob.errors import EnvironmentUnfitError

if TYPE_CHECKING:
    from nbjob.kernel.local import LocalKernel

# Evaluated in an IPython kernel before nbjob subscribes to its IOPub (unbounded_iopub):
# in the IOPub thread, lift the send limit and bind one more endpoint, whose listener copies
# the new limit (libzmq copies a socket's options into each listener when it binds).
KERNEL_IOPUB_UNBOUNDED = """
def _nbjob_unbounded(endpoint):
    import threading, zmq
    from ipykernel.kernelapp import IPKernelApp
    thread = IPKernelApp.instance().iopub_thread
    done, box = threading.Event(), []
    def bind():
        try:
            thread.socket.setsockopt(zmq.SNDHWM, 0)
            if endpoint.startswith("tcp://"):
                box.append(thread.socket.bind_to_random_port(endpoint))
            else:
                thread.socket.bind(endpoint)
                box.append(0)
        finally:
            done.set()
    thread.schedule(bind)
    done.wait(5)
    return box[0] if box else -1
"""
IPC_IOPUB_PORT = 4242  # the extra endpoint's number when the kernel talks over Unix sockets


def shell_reply(kernel: LocalKernel, msg_id: str, end: float) -> dict[str, Any] | None:
    """The content of the shell reply to ``msg_id``, if it comes before ``end`` and the
    kernel lives."""
    while time.monotonic() < end and kernel.alive():
        try:
            msg = kernel.client.shell_channel.get_msg(timeout=0.2)
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            return dict(msg["content"])
    return None


def unbounded_iopub(kernel: LocalKernel) -> None:
    """Subscribe to an IPython kernel's IOPub on an endpoint without a send limit.

    ipykernel's IOPub socket drops messages for a subscriber 1,000 behind and has no
    option for it; the limit is copied into each endpoint when it is bound. So, before
    nbjob subscribes, the kernel's IOPub thread lifts the limit and binds one more
    endpoint (same transport, loopback or this run's private socket folder), and the
    client subscribes there. Other kernels, or any failure: the usual endpoint.
    """
    end = time.monotonic() + kernel.startup_timeout
    info = shell_reply(kernel, kernel.client.kernel_info(), end)
    if info is None or info.get("implementation") != "ipython":
        return
    if kernel.client.transport == "ipc":
        endpoint = f"ipc://{kernel.client.ip}-{IPC_IOPUB_PORT}"
    else:
        endpoint = f"tcp://{kernel.client.ip}"
    call = f"(_nbjob_unbounded({endpoint!r}), globals().pop('_nbjob_unbounded'))[0]"
    msg_id = kernel.client.execute(
        KERNEL_IOPUB_UNBOUNDED,
        silent=True,
        store_history=False,
        allow_stdin=False,
        user_expressions={"port": call},
    )
    reply = shell_reply(kernel, msg_id, min(end, time.monotonic() + 10)) or {}
    result = reply.get("user_expressions", {}).get("port", {})
    try:
        port = int(result.get("data", {}).get("text/plain", "-1"))
    except ValueError:
        return
    if port >= 0:
        kernel.client.iopub_port = port or IPC_IOPUB_PORT


def wait_ready(kernel: LocalKernel) -> dict[str, Any]:
    """The kernel_info reply, once IOPub is subscribed too.

    A SUB socket joins late: what the kernel publishes before the subscription is in place
    is lost, and a cell whose 'idle' is lost would never end. So the kernel is ready when
    it has answered kernel_info and any IOPub message has arrived (``iopub_welcome``, or the
    status of a kernel_info request); without one the request is sent again. Unlike
    ``wait_for_ready`` this adds no fixed wait once the kernel answers.
    """
    shell, iopub = kernel.client.shell_channel, kernel.client.iopub_channel
    end = time.monotonic() + kernel.startup_timeout
    reply: dict[str, Any] | None = None
    subscribed = False
    while time.monotonic() < end:
        kernel.client.kernel_info()
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
        if not kernel.alive():
            raise kernel.died("while starting")
    raise EnvironmentUnfitError(
        f"kernel {kernel.name!r} did not answer within {kernel.startup_timeout:g} s"
    )
