"""execute.Executor against scripted message sequences (nbjob.kernel.fake): fast and exact.

Orders a real kernel produces only now and then — the reply before or after 'idle', a lost
'idle', strays from other requests, display updates across cells, a hang until interrupted —
each with the notebook and cell results the executor must make of them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import nbformat
import pytest
from nbjob import events, execute
from nbjob.errors import CellExecutionError, CellTimeoutError, DeadKernelError, StoppedError
from nbjob.execute import Executor
from nbjob.kernel.fake import FakeKernel, Step, cell, clear, display, reply, status, stream
from nbjob.stop import StopToken


def Hooks() -> events.Bus:
    published: list[events.Event] = []
    bus = events.Bus([published.append])
    bus.published = published  # type: ignore[attr-defined]
    return bus


def notebook(*sources: str) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def run(kernel: FakeKernel, nb: Any, **options: Any) -> Executor:
    executor = Executor(kernel, Hooks(), **options)
    executor.run(nb)
    return executor


def test_reply_before_or_after_idle_both_end_the_cell_with_all_outputs() -> None:
    scripts = {
        "reply first": [status("busy"), stream("a"), reply(count=1), stream("b"), status("idle")],
        "idle first": [status("busy"), stream("a"), stream("b"), status("idle"), reply(count=1)],
    }
    for name, steps in scripts.items():
        nb = notebook(name)
        executor = run(FakeKernel(lambda code, steps=steps: steps), nb)
        assert nb.cells[0].outputs == [nbformat.v4.new_output("stream", name="stdout", text="ab")]
        assert executor.results[0].status == "completed" and nb.cells[0].execution_count == 1


def test_lost_idle_ends_the_cell_after_the_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute, "IDLE_AFTER_REPLY_S", 0.3)
    kernel = FakeKernel(lambda code: [status("busy"), stream("x"), reply(count=1)])
    nb = notebook("lost", "next")
    started = time.monotonic()
    executor = run(kernel, nb)
    assert 0.3 <= time.monotonic() - started < 3
    assert [r.status for r in executor.results.values()] == ["completed", "completed"]
    assert all("idle" in (r.warning or "") for r in executor.results.values())  # both lost it
    ended = [e for e in executor.bus.published if isinstance(e, events.CellEnded)]  # type: ignore[attr-defined]
    assert ended[0].state.warning == executor.results[0].warning


def test_output_still_arriving_after_the_reply_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute, "IDLE_AFTER_REPLY_S", 0.3)
    late = [
        Step("iopub", "stream", {"name": "stdout", "text": f"{i}\n"}, pause=0.1) for i in range(8)
    ]
    kernel = FakeKernel(lambda code: [status("busy"), reply(count=1), *late, status("idle")])
    nb = notebook("backlog")
    executor = run(kernel, nb)
    assert nb.cells[0].outputs[0]["text"] == "".join(f"{i}\n" for i in range(8))
    assert executor.results[0].warning is None


def test_strays_are_ignored_and_display_updates_reach_earlier_cells() -> None:
    def script(code: str) -> list[Any]:
        if code == "show":
            return cell(display({"text/plain": "0%"}, "bar"), count=1)
        stray = Step("iopub", "stream", {"name": "stdout", "text": "stray"}, parent="other")
        update = display({"text/plain": "100%"}, "bar", update=True)
        return cell(stray, update, stream("done"), count=2)

    nb = notebook("show", "update")
    run(FakeKernel(script), nb)
    assert nb.cells[0].outputs[0]["data"] == {"text/plain": "100%"}
    assert [o.get("text") for o in nb.cells[1].outputs] == ["done"]


def test_clear_output_wait_replaces_on_the_next_output() -> None:
    steps = cell(stream("old"), clear(wait=True), display({"text/plain": "new"}))
    nb = notebook("c")
    run(FakeKernel(lambda code: steps), nb)
    assert [o.output_type for o in nb.cells[0].outputs] == ["display_data"]


def test_a_hung_cell_is_interrupted_at_its_timeout() -> None:
    kernel = FakeKernel(lambda code: [status("busy"), stream("working"), Step(hang=True)])
    nb = notebook("hang", "after")
    executor = Executor(kernel, Hooks(), cell_timeout=0.5)
    with pytest.raises(CellTimeoutError):
        executor.run(nb)
    assert kernel.interrupts == 1
    assert [r.status for r in executor.results.values()] == ["timed_out", "pending"]
    kinds = [o.output_type for o in nb.cells[0].outputs]
    assert kinds == ["stream", "error"]  # what it printed, then the interrupt's traceback


def test_a_stop_request_interrupts_and_raises_stopped() -> None:
    kernel = FakeKernel(lambda code: [status("busy"), Step(hang=True)])
    token = StopToken()
    timer = threading.Timer(0.4, token.request, args=("stopped by test",))
    bus = Hooks()
    executor = Executor(kernel, bus, stop=token)
    timer.start()
    with pytest.raises(StoppedError):
        executor.run(notebook("hang"))
    assert kernel.interrupts == 1 and executor.results[0].status == "interrupted"
    ended = [e for e in bus.published if isinstance(e, events.CellEnded)]  # type: ignore[attr-defined]
    assert [(e.index, e.state.status) for e in ended] == [(0, "interrupted")]


def test_death_mid_cell_keeps_what_came_before() -> None:
    kernel = FakeKernel(lambda code: [status("busy"), stream("last words"), Step(die=True)])
    nb = notebook("die", "never")
    executor = Executor(kernel, Hooks())
    with pytest.raises(DeadKernelError) as died:
        executor.run(nb)
    assert died.value.details["cell_index"] == 0
    assert nb.cells[0].outputs[0]["text"] == "last words"
    assert [r.status for r in executor.results.values()] == ["kernel_died", "pending"]


def test_errors_fail_and_system_exit_zero_skips_the_rest() -> None:
    def script(code: str) -> list[Any]:
        error = {"ename": code, "evalue": "0" if code == "SystemExit" else "boom"}
        return [status("busy"), reply("error", **error), status("idle")]

    exited = run(FakeKernel(script), notebook("SystemExit", "never"))
    assert [r.status for r in exited.results.values()] == ["exited", "skipped"]
    with pytest.raises(CellExecutionError, match="ValueError: boom"):
        run(FakeKernel(script), notebook("ValueError", "never"))


def test_on_reply_comes_before_the_next_cell_is_sent() -> None:
    """What a cell used is read at its reply, before the next cell goes out early (it may run
    while this one's last outputs arrive): ``on_reply`` sees no request for the next cell yet,
    for a reply before 'idle' and one after it."""
    for steps in (
        [status("busy"), reply(count=1), stream("late"), status("idle")],
        [status("busy"), stream("a"), status("idle"), reply(count=1)],
    ):
        kernel = FakeKernel(lambda code, steps=steps: steps)
        seen: list[tuple[int, list[str]]] = []
        executor = Executor(
            kernel, Hooks(), on_reply=lambda i, k=kernel, s=seen: s.append((i, list(k.requests)))
        )
        executor.run(notebook("first", "second", "third"))
        assert seen == [
            (0, ["first"]),
            (1, ["first", "second"]),
            (2, ["first", "second", "third"]),
        ]
        assert [r.status for r in executor.results.values()] == ["completed"] * 3
