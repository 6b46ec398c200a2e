"""Jupyter widget state, saved the nbformat way so JupyterLab, nbviewer and GitHub draw widgets.

The kernel side of every widget (``ipywidgets``, tqdm's notebook bar) is a comm: ``comm_open``
carries the model's full state, ``comm_msg`` with method ``update`` / ``echo_update`` changes
part of it, ``comm_close`` ends it (the model is dropped, as the frontend would). The notebook's
``metadata.widgets["application/vnd.jupyter.widget-state+json"]`` then holds
``{"state": {model_id: {model_name, model_module, model_module_version, state, buffers?}},
"version_major": 2, "version_minor": 0}`` (nbclient's format). Unlike nbclient, it is written
at every checkpoint and whatever ends the run, not only after the last cell succeeded.

``ipywidgets.Output`` capture as in JupyterLab: while an Output model's ``msg_id`` is the
running request's, that request's outputs go into the model's ``outputs``, not the cell.
JupyterLab registers a message hook when a model's ``msg_id`` is set and the hook registered
last runs first, so with nested widgets (``with inner: ... with outer: print()``) the widget
*entered* last captures; the order in which ``msg_id`` updates arrive is that order.
``clear_output(wait=True)`` in a widget clears it when the next output arrives, and the
widget's streams fold ``\\r`` and ``\\b`` as cells do (``outputs.LineFolder``).
"""

from __future__ import annotations

import base64
import contextlib
from dataclasses import dataclass, field
from typing import Any

from nbjob.outputs import LineFolder

MIME = "application/vnd.jupyter.widget-state+json"
TARGET = "jupyter.widget"
_UPDATES = ("update", "echo_update")


def _set_path(state: dict[str, Any], path: list[Any], value: Any) -> None:
    obj: Any = state
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


@dataclass
class _View:
    """What an Output widget's view holds beyond its state: a deferred clear, its last stream."""

    clear_pending: bool = False
    stream: dict[str, Any] | None = None  # the last stream output, folded by ``folder``
    folder: LineFolder = field(default_factory=LineFolder)
    done: str = ""  # the completed lines of ``stream``


class WidgetState:
    """Widget models by comm id, from the comm messages of the run."""

    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {}
        self.buffers: dict[str, dict[str, dict[str, Any]]] = {}  # model → path → buffer
        self.changed = False
        self._entered: list[str] = []  # Output models with a msg_id, in the order it was set
        self._views: dict[str, _View] = {}

    def handle(self, msg: dict[str, Any]) -> None:
        kind, content = msg["msg_type"], msg["content"]
        comm_id = content.get("comm_id", "")
        data = content.get("data") or {}
        if kind == "comm_open":
            if content.get("target_name") != TARGET:
                return
            self.models[comm_id] = {}
            self._merge(comm_id, data, msg)
        elif kind == "comm_msg" and comm_id in self.models:
            if data.get("method") in _UPDATES:
                self._merge(comm_id, data, msg)
        elif kind == "comm_close" and comm_id in self.models:
            del self.models[comm_id]
            self.buffers.pop(comm_id, None)
            self._views.pop(comm_id, None)
            if comm_id in self._entered:
                self._entered.remove(comm_id)
            self.changed = True

    def _merge(self, comm_id: str, data: dict[str, Any], msg: dict[str, Any]) -> None:
        state = self.models[comm_id]
        update = data.get("state") or {}
        state.update(update)
        if "msg_id" in update:
            self._entered_now(comm_id, state.get("msg_id") or "")
        if "outputs" in update and comm_id in self._views:
            self._views[comm_id].stream = None  # set by the kernel (append_stdout): start afresh
        paths = data.get("buffer_paths") or []
        for path, buffer in zip(paths, msg.get("buffers") or [], strict=False):
            raw = bytes(buffer)
            key = "/".join(map(str, path))
            self.buffers.setdefault(comm_id, {})[key] = {
                "data": base64.b64encode(raw).decode("ascii"),
                "encoding": "base64",
                "path": list(path),
            }
            with contextlib.suppress(KeyError, IndexError, TypeError):
                _set_path(state, list(path), None)  # the bytes live in "buffers"
        self.changed = True

    # -- Output widget capture -----------------------------------------------------------------

    def _entered_now(self, comm_id: str, msg_id: str) -> None:
        """An Output model's ``msg_id`` changed: set, it captures before the ones set earlier."""
        if comm_id in self._entered:
            self._entered.remove(comm_id)
        if msg_id:
            self._entered.append(comm_id)

    def _capturer(self, msg_id: str) -> str | None:
        for comm_id in reversed(self._entered):
            state = self.models[comm_id]
            if state.get("_model_name") == "OutputModel" and state.get("msg_id") == msg_id:
                return comm_id
        return None

    def capturing(self, msg_id: str) -> dict[str, Any] | None:
        """The state of the Output widget capturing the request ``msg_id``'s outputs, if any:
        of those whose ``msg_id`` it is, the one entered last."""
        comm_id = self._capturer(msg_id)
        return None if comm_id is None else self.models[comm_id]

    def _view(self, state: dict[str, Any]) -> _View:
        comm_id = next((c for c in reversed(self._entered) if self.models[c] is state), "")
        return self._views.setdefault(comm_id, _View())

    def clear(self, state: dict[str, Any], wait: bool = False) -> None:
        """``clear_output`` in an Output widget; ``wait``: when the next output arrives."""
        view = self._view(state)
        if wait:
            view.clear_pending = True
            return
        state["outputs"] = []
        view.clear_pending, view.stream = False, None
        self.changed = True

    def capture(self, state: dict[str, Any], output: dict[str, Any] | None) -> None:
        """Append an output to an Output widget (None: clear it now)."""
        view = self._view(state)
        if output is None or view.clear_pending:
            self.clear(state)
        if output is None:
            return
        outputs = state.setdefault("outputs", [])
        last: dict[str, Any] = outputs[-1] if outputs else {}
        same = last.get("output_type") == "stream" and last.get("name") == output.get("name")
        if output.get("output_type") != "stream":
            outputs.append(output)
        elif same and last is view.stream:
            self._fold(view, output["text"])
        elif same:  # a stream the kernel set (append_stdout): go on from its text
            view.stream, view.folder, view.done = last, LineFolder(), ""
            self._fold(view, last.get("text", "") + output["text"])
        else:
            outputs.append(output)
            view.stream, view.folder, view.done = output, LineFolder(), ""
            self._fold(view, output["text"])
        self.changed = True

    @staticmethod
    def _fold(view: _View, text: str) -> None:
        assert view.stream is not None
        view.done += "".join(view.folder.feed(text))
        view.stream["text"] = view.done + view.folder.line

    # -- the notebook --------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for comm_id, model in self.models.items():
            if not model.get("_model_name"):
                continue
            entry: dict[str, Any] = {
                "model_name": model["_model_name"],
                "model_module": model.get("_model_module", "@jupyter-widgets/base"),
                "model_module_version": model.get("_model_module_version", ""),
                "state": dict(model),
            }
            if comm_id in self.buffers:
                entry["buffers"] = list(self.buffers[comm_id].values())
            state[comm_id] = entry
        return {MIME: {"state": state, "version_major": 2, "version_minor": 0}}

    def write(self, nb: Any) -> None:
        """Into ``nb.metadata.widgets`` when something changed since the last write."""
        if not self.changed or nb is None:
            return
        self.changed = False
        if self.models or "widgets" in nb.metadata:
            nb.metadata["widgets"] = self.metadata()
