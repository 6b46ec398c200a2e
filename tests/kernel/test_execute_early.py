"""The next cell's request goes out when a cell replies (execute.Executor._send_next).

Scripted kernels (nbjob.kernel.fake) make each order exact: what the kernel was sent when, and
what the notebook and the cell states say. The real-kernel runs (tests/kernel, test_fidelity and
the e2e suites) check that nothing else changes.
"""

from __future__ import annotations

import threading
from typing import Any

import nbformat
import pytest
from nbjob import events, execute
from nbjob.errors import CellExecutionError, StoppedError
from nbjob.execute import Executor
from nbjob.kernel.fake import FakeKernel, Step, reply, status, stream
from nbjob.stop import StopToken


def notebook(*sources: str) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def ok(count: int, *middle: Step, idle_pause: float = 0.0) -> list[Step]:
    idle = status("idle")
    idle.pause = idle_pause
    return [status("busy"), *middle, reply(count=count), idle]


def failed(count: int) -> list[Step]:
    error = {"ename": "ValueError", "evalue": "boom", "traceback": []}
    return [status("busy"), Step("iopub", "error", error), reply("error", **error), status("idle")]


def test_the_next_cell_is_sent_when_the_cell_replies_not_when_it_is_idle() -> None:
    kernel = FakeKernel(lambda code: ok(int(code), stream(code), idle_pause=0.2))
    sent_at_end: dict[int, int] = {}

    def listener(event: events.Event) -> None:
        if isinstance(event, events.CellEnded):
            sent_at_end[event.index] = len(kernel.requests)

    nb = notebook("1", "2", "3")
    executor = Executor(kernel, events.Bus([listener]))
    executor.run(nb)
    assert sent_at_end == {0: 2, 1: 3, 2: 3}  # each cell's end: the next one was sent already
    assert [c.outputs[0]["text"] for c in nb.cells] == ["1", "2", "3"]
    assert [r.status for r in executor.results.values()] == ["completed"] * 3


def test_a_failed_cell_sends_nothing_early() -> None:
    kernel = FakeKernel(lambda code: failed(2) if code == "fail" else ok(1))
    nb = notebook("first", "fail", "never")
    with pytest.raises(CellExecutionError):
        Executor(kernel, events.Bus()).run(nb)
    assert kernel.requests == ["first", "fail"]  # the kernel never saw the third cell
    assert nb.cells[2].execution_count is None and nb.cells[2].outputs == []


def test_an_allowed_error_sends_the_next_cell_early() -> None:
    kernel = FakeKernel(lambda code: failed(1) if code == "fail" else ok(2, idle_pause=0.2))
    sent: list[int] = []
    bus = events.Bus(
        [lambda e: sent.append(len(kernel.requests)) if isinstance(e, events.CellEnded) else None]
    )
    executor = Executor(kernel, bus, allow_errors=True)
    executor.run(notebook("fail", "next"))
    assert sent == [2, 2]
    assert [r.status for r in executor.results.values()] == ["failed", "completed"]


def test_system_exit_sends_nothing_early() -> None:
    def script(code: str) -> list[Step]:
        if code == "exit":
            error = {"ename": "SystemExit", "evalue": "0", "traceback": []}
            return [status("busy"), reply("error", **error), status("idle")]
        return ok(1)

    kernel = FakeKernel(script)
    assert Executor(kernel, events.Bus()).run(notebook("exit", "never")) is True
    assert kernel.requests == ["exit"]


def test_messages_of_the_next_cell_before_the_idle_are_kept_for_it() -> None:
    """The cell's idle lost: the next cell's IOPub (ordered after it) says so at once, and
    what the next cell printed meanwhile is in its outputs."""
    scripts = {"lost": [status("busy"), reply(count=1)], "next": ok(2, stream("kept"))}
    kernel = FakeKernel(lambda code: scripts[code])
    nb = notebook("lost", "next")
    executor = Executor(kernel, events.Bus())
    executor.run(nb)
    assert executor.results[0].warning == execute.NO_IDLE_WARNING
    assert nb.cells[1].outputs[0]["text"] == "kept"
    assert [r.status for r in executor.results.values()] == ["completed", "completed"]


def test_a_stop_after_the_reply_winds_down_the_cell_sent_early_not_the_replied_one() -> None:
    def script(code: str) -> list[Step]:
        return ok(1, idle_pause=0.4) if code == "done" else [status("busy"), Step(hang=True)]

    kernel = FakeKernel(script)
    token = StopToken()
    threading.Timer(0.2, token.request, args=("stopped by test",)).start()  # within the pause
    bus_events: list[events.Event] = []
    executor = Executor(kernel, events.Bus([bus_events.append]), stop=token)
    with pytest.raises(StoppedError) as stopped:
        executor.run(notebook("done", "hang", "never"))
    assert stopped.value.details["cell_index"] == 1
    assert kernel.requests == ["done", "hang"] and kernel.interrupts == 1
    assert [r.status for r in executor.results.values()] == ["completed", "interrupted", "pending"]
    ended = [(e.index, e.state.status) for e in bus_events if isinstance(e, events.CellEnded)]
    assert ended == [(0, "completed"), (1, "interrupted")]


def test_a_death_after_the_reply_is_the_next_cells() -> None:
    def script(code: str) -> list[Step]:
        if code == "done":
            return [status("busy"), reply(count=1)]  # its idle never comes: the kernel dies
        return [Step(pause=0.1, die=True)]

    kernel = FakeKernel(script)
    executor = Executor(kernel, events.Bus())
    with pytest.raises(Exception) as died:
        executor.run(notebook("done", "dies"))
    assert died.value.details["cell_index"] == 1  # type: ignore[attr-defined]
    assert [r.status for r in executor.results.values()] == ["completed", "kernel_died"]


def test_a_stop_after_the_reply_waits_for_the_idle_only_briefly() -> None:
    """A replied cell whose idle never comes, printing on (a thread of its own): a stop ends
    it after the stop's wind-down time, not whenever the output stops."""
    chatter = [stream(".") for _ in range(400)]
    for step in chatter:
        step.pause = 0.01  # 4 s of output in all
    kernel = FakeKernel(lambda code: [status("busy"), reply(count=1), *chatter])
    token = StopToken()
    threading.Timer(0.2, token.request, args=("stopped by test",)).start()
    nb = notebook("chatty")
    executor = Executor(kernel, events.Bus(), stop=token, stop_wait=0.5)
    executor.run(nb)
    assert executor.results[0].status == "completed"
    assert executor.results[0].warning == execute.NO_IDLE_WARNING
    assert 0 < len(nb.cells[0].outputs[0]["text"]) < 200  # ended well before the output did
