"""One running cell's IOPub messages turned into nbformat outputs, as JupyterLab shows them.

``RunningCell`` is what ``execute.Executor`` keeps for the cell it waits on: its outputs
(``nbjob.outputs``), whether its ``idle`` came, and ``handle`` for each IOPub message whose
parent is the cell's request. Streams, displays, results, errors and clears become outputs (or
go to the ``ipywidgets.Output`` capturing the request, ``nbjob.widgets``); ``status`` and
``execute_input`` give the cell's dates and execution count, as nbclient records them;
``update_display_data`` changes an earlier output wherever it is; scrapbook ``glue`` outputs are
also published as ``CellMetric``. Comm messages are the executor's to route (they change widgets
from any request).
"""

from __future__ import annotations

from typing import Any

import nbformat

from nbjob import events
from nbjob.errors import cell_name
from nbjob.outputs import CellOutputs, Displays, timestamp
from nbjob.widgets import WidgetState

SCRAP_MIME = "application/scrapbook.scrap."  # json+json, text+json, ...
_CAPTURED = ("stream", "display_data", "execute_result", "error", "clear_output")
_STATUS_KEYS = {s: f"iopub.status.{s}" for s in ("busy", "idle")}  # not a new key every cell


class RunningCell:
    """One running cell: its outputs, whether its idle came, and its IOPub messages handled."""

    def __init__(
        self,
        index: int,
        cell: Any,
        max_bytes: int,
        displays: Displays,
        widgets: WidgetState,
        bus: events.Bus,
    ) -> None:
        self.index = index
        self.cell = cell
        self.out = CellOutputs(cell.outputs, max_bytes, displays)
        self.idle = False
        self.idle_lost = False  # the next cell's IOPub came first: this one's idle never will
        self._displays = displays
        self._widgets = widgets
        self._bus = bus

    @property
    def truncated(self) -> bool:
        return self.out.truncated

    @property
    def name(self) -> str:
        """How messages name the cell (``In [3] (cell 5)``)."""
        return cell_name(self.index, self.cell.execution_count)

    def handle(self, msg: dict[str, Any]) -> None:
        """One IOPub message of the cell's request."""
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":  # the log keeps every stream, the cell's or a widget's
            name, text = content.get("name", "stdout"), content.get("text", "")
            self._bus.publish(events.CellOutput(self.index, name, text))
        if kind in _CAPTURED and self._captured(msg):
            return
        if kind == "status":
            execution_state = content.get("execution_state")
            key = _STATUS_KEYS.get(execution_state)
            if key is not None:
                self.cell.metadata["execution"][key] = timestamp(msg)
            self.idle = self.idle or execution_state == "idle"
        elif kind == "execute_input":
            self.cell.metadata["execution"]["iopub.execute_input"] = timestamp(msg)
            self.cell.execution_count = content.get("execution_count")
        elif kind == "stream":
            self.out.stream(name, text)
        elif kind in ("display_data", "execute_result", "error"):
            self._metrics(content.get("data") or {})
            display_id = (content.get("transient") or {}).get("display_id")
            self.out.add(nbformat.v4.output_from_msg(msg), display_id)
        elif kind == "update_display_data":
            self._displays.update(content)
        elif kind == "clear_output":
            self.out.clear(bool(content.get("wait")))

    def _metrics(self, data: dict[str, Any]) -> None:
        """scrapbook ``glue`` outputs: ``{"name", "data", "encoder"}`` under a scrap mimetype."""
        for mime, scrap in data.items():
            if mime.startswith(SCRAP_MIME) and isinstance(scrap, dict) and "name" in scrap:
                self._bus.publish(
                    events.CellMetric(
                        self.index, str(scrap["name"]), scrap.get("data"), scrap.get("encoder", "")
                    )
                )

    def _captured(self, msg: dict[str, Any]) -> bool:
        """An ``ipywidgets.Output`` is capturing this request: the output goes to the widget."""
        target = self._widgets.capturing(msg["parent_header"].get("msg_id", ""))
        if target is None:
            return False
        kind, content = msg["msg_type"], msg["content"]
        if kind == "clear_output":
            self._widgets.clear(target, wait=bool(content.get("wait")))
            return True
        if kind == "stream":
            name, text = content.get("name", "stdout"), content.get("text", "")
            output = nbformat.v4.new_output("stream", name=name, text=text)
        else:
            output = nbformat.v4.output_from_msg(msg)
        self._widgets.capture(target, dict(output))
        return True
