"""Send cells to the kernel one at a time and turn its messages into nbformat outputs.

With ``nbjob.iopub`` (a running cell's IOPub messages as outputs), the only module that
interprets the Jupyter messaging protocol. One loop takes the session's shell and IOPub messages
(``KernelSession.next_message``) with a short timeout, so a stop request, a time limit or a dead
kernel is noticed within ``POLL_S`` seconds whatever the cell is doing. A cell is done only when
both its ``execute_reply`` and its ``status: idle`` have arrived (their order is not guaranteed).

The next cell's request goes out as soon as the cell's ``execute_reply`` says it is done and the
run goes on (``Executor._send_next``): the kernel has finished executing it, so nothing changes in
what runs or in what order, but the kernel starts the next cell while nbjob still takes the
cell's idle and does its bookkeeping (events, record, checkpoint), instead of waiting for it.
A cell that failed (unless errors are allowed), exited, or came with a stop or a deadline sends
nothing early. Messages of the cell sent early that come before the cell's idle are held and
handed to it when it starts (``_Early``), its comm messages among them, so that an Output
widget's ``msg_id`` is set and cleared in order with the outputs it captures. A stop or a
deadline winds down the cell that has not replied yet (the one sent early, if any); a cell that
replied is done and ends as such.

Progress goes out as events (``nbjob.events``) on a bus: every cell that starts publishes
``CellStarted`` and, however it ends (completed, failed, timed out, stopped, kernel died),
``CellEnded``, which carries the cell's one ``CellState`` (``Executor.results`` holds each
cell's latest). ``CellsListed`` is the job's to publish, once (``job.py``). The listeners (log,
record, checkpointer) live elsewhere; the one call back into the run is ``on_reply(index)``,
made when a cell replies and before the next is sent early (what the cell used is read there,
``nbjob.resources``, while nothing else runs). A stop is the ``StopToken`` (``nbjob.stop``),
checked on every poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import nbformat

from nbjob import events
from nbjob.errors import (
    CellExecutionError,
    CellTimeoutError,
    RunTimeoutError,
    StoppedError,
)
from nbjob.events import CellState, CellStatus
from nbjob.iopub import RunningCell
from nbjob.kernel import KernelSession
from nbjob.logs import now_iso
from nbjob.outputs import Displays, pager_outputs, timestamp
from nbjob.stop import StopToken
from nbjob.widgets import WidgetState

DRAIN = 200  # messages taken at most between two checks of stop flag and deadlines
POLL_S = 0.25  # longest wait between checks of stop flag, deadlines and kernel liveness
ALIVE_CHECK_S = 0.5  # kernel liveness is also checked this often while messages flow
IDLE_AFTER_REPLY_S = 3.0  # a reply, then this long without any message: the cell ends
NO_IDLE_WARNING = (
    "the kernel's 'idle' status for this cell never arrived; its output may be incomplete"
)
INTERRUPT_WAIT_S = 5.0  # after an interrupt, how long the cell may take to wind down
EXIT_VALUES = ("", "0", "None", "False")  # SystemExit codes that mean success
SKIP_TAG = "skip-execution"
RAISES_TAG = "raises-exception"


@dataclass
class _Early:
    """The next cell, sent when this one replied: its request's msg_id and the messages that
    came for it before it started (``Executor.run_cell`` takes them in order)."""

    index: int
    msg_id: str
    held: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class Executor:
    """Runs a notebook's code cells in order on a started ``KernelSession``."""

    def __init__(
        self,
        kernel: KernelSession,
        bus: events.Bus,
        *,
        cell_timeout: float | None = None,
        run_deadline: float | None = None,
        max_output_bytes: int = 1_000_000,
        stop: StopToken | None = None,
        stop_wait: float = INTERRUPT_WAIT_S,
        allow_errors: bool = False,
        on_reply: Callable[[int], None] | None = None,
    ) -> None:
        self.kernel = kernel
        self.bus = bus
        self.cell_timeout = cell_timeout
        self.run_deadline = run_deadline  # time.monotonic() value
        self.max_output_bytes = max_output_bytes
        self.stop = stop or StopToken()
        self.stop_wait = stop_wait  # after a stop request, how long the cell may wind down
        self.allow_errors = allow_errors  # a failed cell stays failed; the next cells still run
        # A cell's reply came, before the next cell is sent early: what the cell used is read
        # here (nbjob.resources), while no other cell runs.
        self.on_reply = on_reply
        self.results: dict[int, CellState] = {}  # each code cell's state, by index
        self.displays = Displays()
        self.widgets = WidgetState()
        self.nb: Any = None
        self._early: _Early | None = None  # the next cell, already sent

    # -- the notebook --------------------------------------------------------------------------

    def code_cells(self, nb: Any) -> list[int]:
        return code_cells(nb)

    def run(self, nb: Any) -> bool:
        """Run every code cell; True when a cell ended the run early with SystemExit(0)."""
        self.nb = nb
        info = self.kernel.info.get("language_info")
        if info:  # as JupyterLab and nbclient write it: the kernel's, not the saved notebook's
            nb.metadata["language_info"] = nbformat.from_dict(info)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
        indexes = self.code_cells(nb)
        self.results = {i: CellState(i) for i in indexes}
        for n, i in enumerate(indexes):
            if self._early is None:  # a cell sent early is running: a stop winds it down
                self.stop.check(f"before cell {i}")
            following = indexes[n + 1] if n + 1 < len(indexes) else None
            if self.run_cell(i, nb.cells[i], following).status == CellStatus.EXITED:
                for j in indexes:
                    if self.results[j].status == CellStatus.PENDING:
                        self._update(j, status=CellStatus.SKIPPED)
                        self.bus.publish(events.CellSkipped(j))
                return True
        return False

    # -- one cell ------------------------------------------------------------------------------

    def run_cell(self, index: int, cell: Any, following: int | None = None) -> CellState:
        """Run one cell (``following``: the code cell after it, sent early when this one
        replied); its final state, published as ``CellEnded`` however it ended."""
        state = RunningCell(
            index, cell, self.max_output_bytes, self.displays, self.widgets, self.bus
        )
        started_at, t0 = now_iso(), time.monotonic()
        self._update(index, status=CellStatus.RUNNING, started_at=started_at)
        # The kernel's dates, as nbclient records them: a plain dict (a NotebookNode costs
        # ~170 bytes more per cell, kept for the whole run).
        dict.__setitem__(cell.metadata, "execution", {})
        self.bus.publish(events.CellStarted(index, started_at))
        early, self._early = self._early, None
        if early is not None and early.index == index:
            msg_id, held = early.msg_id, early.held
        else:
            msg_id, held = self.kernel.execute(cell.source, store_history=True), []
        cell_deadline = t0 + self.cell_timeout if self.cell_timeout else None
        try:
            reply = self._wait(msg_id, state, cell_deadline, following, held)
        except BaseException:  # timed out, stopped, kernel died (or a bug): the cell still ends
            if self.results[index].status == CellStatus.RUNNING:
                self._update(index, status=CellStatus.FAILED)
            self._end(state, t0)
            raise
        content = reply["content"]
        cell.metadata["execution"]["shell.execute_reply"] = timestamp(reply)
        if content.get("execution_count") is not None:
            cell.execution_count = content["execution_count"]
        for output in pager_outputs(content):
            state.out.add(output)
        status, error = _outcome(cell, content)
        self._update(index, status=status, error=error)
        result = self._end(state, t0)
        if status == CellStatus.FAILED and not self.allow_errors:
            assert error is not None
            ename, evalue = error["ename"], error["evalue"]
            raise CellExecutionError(
                f"{state.name} raised {ename}" + (f": {evalue}" if evalue.strip() else ""),
                cell_index=index,
                ename=ename,
                evalue=evalue,
            )
        return result

    def _update(self, index: int, **changes: Any) -> CellState:
        """The cell's state, with ``changes``."""
        new = self.results[index] = replace(self.results.get(index) or CellState(index), **changes)
        return new

    def _end(self, state: RunningCell, t0: float) -> CellState:
        """The cell is over: its outputs finished, its end in the notebook and on the bus."""
        state.out.finish()
        self.widgets.write(self.nb)
        result = self._update(
            state.index,
            ended_at=now_iso(),
            duration_s=round(time.monotonic() - t0, 4),
            output_truncated=state.truncated,
            execution_count=state.cell.execution_count,
        )
        self.bus.publish(events.CellEnded(result))
        return result

    def _wait(
        self,
        msg_id: str,
        state: RunningCell,
        deadline: float | None,
        following: int | None = None,
        held: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> dict[str, Any]:
        """Collect messages (first those ``held`` for it) until reply and idle; enforce stop,
        deadlines and liveness; send the ``following`` cell once the reply allows."""
        index = state.index
        reply: dict[str, Any] | None = None
        for channel, message in held or ():
            reply = self._route(msg_id, state, channel, message) or reply
        if reply is not None:
            self._replied(state, reply, following)
        last_alive = quiet_since = time.monotonic()
        stopping_since: float | None = None  # a stop came after the reply: its idle, briefly
        while reply is None or not state.idle:
            now = time.monotonic()
            if self.stop.requested and reply is not None and stopping_since is None:
                stopping_since = now
            late = stopping_since is not None and now - stopping_since > self.stop_wait
            if reply is not None and (now - quiet_since > IDLE_AFTER_REPLY_S or state.idle_lost):
                late = True
            if late:
                self._update(index, warning=NO_IDLE_WARNING)  # never a silent success
                break
            if self.stop.requested and reply is None:  # one that replied is done: it ends
                self._wind_down(msg_id, state, CellStatus.INTERRUPTED, self.stop_wait)
                raise StoppedError(
                    f"{self.stop.reason or 'stopped'} while {state.name} was running",
                    cell_index=index,
                )
            limit = None if reply is not None else _earliest(deadline, self.run_deadline)
            if limit is not None and now >= limit:
                self._wind_down(msg_id, state, CellStatus.TIMED_OUT, INTERRUPT_WAIT_S)
                if deadline is not None and limit == deadline:
                    raise CellTimeoutError(
                        f"{state.name} ran longer than {self.cell_timeout:g} s (--cell-timeout)",
                        cell_index=index,
                    )
                raise RunTimeoutError(
                    f"the run took longer than its time limit (--timeout); "
                    f"{state.name} was running",
                    cell_index=index,
                )
            wait = POLL_S if limit is None else max(0.0, min(POLL_S, limit - now))
            got, msg = self._recv(msg_id, state, wait)
            if msg is not None:
                reply = msg
                self._replied(state, reply, following)
            if got:  # a backlog of output still arriving is not a lost 'idle'
                quiet_since = time.monotonic()
            if not got or time.monotonic() - last_alive >= ALIVE_CHECK_S:
                last_alive = time.monotonic()
                if not self.kernel.alive() and reply is not None and self._early is not None:
                    # it replied, the next cell was sent: that one met the kernel's death
                    self._update(index, warning=NO_IDLE_WARNING)
                    break
                if not self.kernel.alive():
                    self._drain_iopub(msg_id, state)
                    self._update(index, status=CellStatus.KERNEL_DIED)
                    raise self.kernel.died(f"while running {state.name}", cell_index=index)
            state.out.sync()  # a checkpoint may follow
            self.widgets.write(self.nb)
            self.bus.publish(events.TICK)
        assert reply is not None  # the loop only ends with a reply
        return reply

    def _replied(self, state: RunningCell, reply: dict[str, Any], following: int | None) -> None:
        """The cell replied: ``on_reply``, then the ``following`` cell may be sent."""
        if self.on_reply is not None:
            self.on_reply(state.index)
        self._send_next(state, reply, following)

    def _send_next(self, state: RunningCell, reply: dict[str, Any], following: int | None) -> None:
        """The ``following`` cell's request, now that this one replied, if the run goes on
        after it (no stop, no deadline passed, not failed or exited)."""
        if following is None or self._early is not None or self.stop.requested:
            return
        if self.run_deadline is not None and time.monotonic() >= self.run_deadline:
            return
        status, _ = _outcome(state.cell, reply["content"])
        if status == CellStatus.COMPLETED or (status == CellStatus.FAILED and self.allow_errors):
            source = self.nb.cells[following].source
            self._early = _Early(following, self.kernel.execute(source, store_history=True))

    def _wind_down(
        self,
        msg_id: str,
        state: RunningCell,
        status: CellStatus,
        wait: float,
    ) -> None:
        """Interrupt the running cell and keep what it prints for up to ``wait`` seconds."""
        self._update(state.index, status=status)
        self.kernel.interrupt()
        end = time.monotonic() + wait
        replied = False
        while time.monotonic() < end and not (replied and state.idle) and self.kernel.alive():
            _, msg = self._recv(msg_id, state, POLL_S)
            replied = replied or msg is not None

    # -- messages ------------------------------------------------------------------------------

    def _recv(
        self, msg_id: str, state: RunningCell, wait: float
    ) -> tuple[int, dict[str, Any] | None]:
        """Take up to DRAIN messages, the first within ``wait`` s; IOPub ones are handled.

        Returns how many came and the cell's execute_reply when it was among them.
        """
        reply = None
        for count in range(DRAIN):
            got = self.kernel.next_message(wait if count == 0 else 0.0)
            if got is None:
                return count, reply
            reply = self._route(msg_id, state, *got) or reply
        return DRAIN, reply

    def _route(
        self, msg_id: str, state: RunningCell, channel: str, msg: dict[str, Any]
    ) -> dict[str, Any] | None:
        """One message: the cell's IOPub handled, the next cell's held; the cell's
        execute_reply returned."""
        parent = msg["parent_header"].get("msg_id")
        early = self._early
        if early is not None and parent == early.msg_id:
            early.held.append((channel, msg))  # comms too: an Output widget's capture is ordered
            state.idle_lost = state.idle_lost or (channel == "iopub" and not state.idle)
            return None
        if channel == "iopub" and msg["msg_type"].startswith("comm_"):
            self.widgets.handle(msg)  # widgets change from any request (threads, callbacks)
            return None
        if parent != msg_id:
            return None  # strays: a silent set-up request's status, an earlier cell's idle
        if channel == "iopub":
            state.handle(msg)
            return None
        return msg if msg.get("msg_type") == "execute_reply" else None

    def _drain_iopub(self, msg_id: str, state: RunningCell) -> None:
        """Keep what is already waiting (a dying kernel's last output)."""
        self._recv(msg_id, state, 0.0)


def code_cells(nb: Any) -> list[int]:
    """Indexes of the cells that run: code, not empty, not tagged skip-execution."""
    return [
        i for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and c.source.strip()
        and SKIP_TAG not in c.get("metadata", {}).get("tags", [])
    ]  # fmt: skip


def _outcome(cell: Any, content: dict[str, Any]) -> tuple[CellStatus, dict[str, Any] | None]:
    """A replied cell's status and error: SystemExit(0) exits, a ``raises-exception`` cell
    completes whatever it raised."""
    if content["status"] == "ok":
        return CellStatus.COMPLETED, None
    ename, evalue = content.get("ename", "Error"), str(content.get("evalue", ""))
    error = {"ename": ename, "evalue": evalue}
    if ename == "SystemExit" and evalue.strip() in EXIT_VALUES:
        return CellStatus.EXITED, error
    if RAISES_TAG in cell.metadata.get("tags", []):
        return CellStatus.COMPLETED, error
    return CellStatus.FAILED, error


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)
