"""A scripted KernelSession for fast, message-level tests of the executor.

``FakeKernel(script)`` answers each ``execute`` with the messages ``script(code)`` returns, in
that order, stamped with the request's msg_id: replies and IOPub messages in any order, pauses,
lost messages, strays from other requests, a hang until interrupted, a death. Not registered
as a kind: nbjob never runs cells on it.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nbjob.errors import DeadKernelError
from nbjob.kernel.base import Channel, KernelSession, Message


@dataclass
class Step:
    """One scripted event: a message, a pause, a hang or a death."""

    channel: Channel | None = None  # None: not a message
    msg_type: str = ""
    content: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None  # another request's msg_id (a stray); None: this request
    pause: float = 0.0  # seconds before this step
    hang: bool = False  # send nothing more until interrupted
    die: bool = False  # the kernel dies here
    buffers: list[bytes] = field(default_factory=list)  # binary buffers (widgets)


def status(state: str) -> Step:
    return Step("iopub", "status", {"execution_state": state})


def stream(text: str, name: str = "stdout") -> Step:
    return Step("iopub", "stream", {"name": name, "text": text})


def display(data: dict[str, Any], display_id: str | None = None, update: bool = False) -> Step:
    transient = {"display_id": display_id} if display_id else {}
    kind = "update_display_data" if update else "display_data"
    return Step("iopub", kind, {"data": data, "metadata": {}, "transient": transient})


def clear(wait: bool = False) -> Step:
    return Step("iopub", "clear_output", {"wait": wait})


def reply(status_: str = "ok", count: int = 1, **content: Any) -> Step:
    return Step("shell", "execute_reply", {"status": status_, "execution_count": count, **content})


def cell(*middle: Step, count: int = 1) -> list[Step]:
    """The usual order: busy, execute_input, ``middle``, reply, idle."""
    start = [status("busy"), Step("iopub", "execute_input", {"execution_count": count})]
    return [*start, *middle, reply(count=count), status("idle")]


class FakeKernel(KernelSession):
    """Replays ``script(code)`` for each execute; records requests and interrupts."""

    kind = "fake"

    def __init__(self, script: Callable[[str], list[Step]] | None = None) -> None:
        super().__init__("fake", Path("."), 1.0)
        self.script = script or (lambda code: cell())
        self.info = {"language_info": {"name": "python"}, "implementation": "fake"}
        self.requests: list[str] = []  # the code of each execute
        self.interrupts = 0
        self._alive = True
        self._ids = itertools.count(1)
        self._queue: deque[tuple[Step, str]] = deque()
        self._due = 0.0  # when the next step may be delivered
        self._hung: str | None = None  # msg_id of a request waiting for an interrupt

    def kernelspecs(self) -> dict[str, dict[str, Any]]:
        return {"fake": {"language": "python", "display_name": "Fake"}}

    def start(self) -> None:
        pass

    def execute(
        self,
        code: str,
        *,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: dict[str, str] | None = None,
    ) -> str:
        msg_id = f"fake-{next(self._ids)}"
        self.requests.append(code)
        steps = cell() if silent else self.script(code)
        self._queue.extend((replace(step), msg_id) for step in steps)  # copies: pauses run down
        return msg_id

    def next_message(self, timeout: float) -> Message | None:
        end = time.monotonic() + timeout
        while self._alive and self._queue and self._hung is None:
            step, msg_id = self._queue[0]
            if step.pause:  # the pause starts when the step reaches the head
                self._due, step.pause = time.monotonic() + step.pause, 0.0
            if self._due > end:
                break
            self._sleep_until(self._due)
            self._queue.popleft()
            if step.hang:
                self._hung = msg_id
            elif step.die:
                self._alive = False
            elif step.channel is not None:
                return step.channel, self._message(step, msg_id)
        self._sleep_until(end)
        return None

    @staticmethod
    def _sleep_until(when: float) -> None:
        time.sleep(max(0.0, when - time.monotonic()))

    @staticmethod
    def _message(step: Step, msg_id: str) -> dict[str, Any]:
        return {
            "header": {"msg_id": f"{msg_id}-{step.msg_type}", "msg_type": step.msg_type},
            "parent_header": {"msg_id": step.parent or msg_id},
            "msg_type": step.msg_type,
            "metadata": {},
            "content": dict(step.content),
            "buffers": list(step.buffers),
        }

    def interrupt(self) -> None:
        self.interrupts += 1
        if self._hung is not None:  # the hung cell ends with KeyboardInterrupt
            error: dict[str, Any] = {"ename": "KeyboardInterrupt", "evalue": "", "traceback": []}
            steps = [Step("iopub", "error", error), reply("error", **error), status("idle")]
            self._queue.extendleft((s, self._hung) for s in reversed(steps))
            self._hung = None

    def alive(self) -> bool:
        return self._alive

    def died(self, when: str, cell_index: int | None = None) -> DeadKernelError:
        return DeadKernelError(f"the fake kernel died {when}", cell_index=cell_index)

    def shutdown(self, grace: float = 3.0) -> None:
        self._alive = False
