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
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any

MIME = "application/vnd.jupyter.widget-state+json"
TARGET = "jupyter.widget"
_UPDATES = ("update", "echo_update")


def _set_path(state: dict[str, Any], path: list[Any], value: Any) -> None:
    obj: Any = state
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


class WidgetState:
    """Widget models by comm id, from the comm messages of the run."""

    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {}
        self.buffers: dict[str, dict[str, dict[str, Any]]] = {}  # model → path → buffer
        self.changed = False

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
            self.changed = True

    def _merge(self, comm_id: str, data: dict[str, Any], msg: dict[str, Any]) -> None:
        state = self.models[comm_id]
        state.update(data.get("state") or {})
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

    def capturing(self, msg_id: str) -> dict[str, Any] | None:
        """The state of an Output widget capturing the request ``msg_id``'s outputs, if any."""
        for state in reversed(self.models.values()):
            if state.get("_model_name") == "OutputModel" and state.get("msg_id") == msg_id:
                return state
        return None

    def capture(self, state: dict[str, Any], output: dict[str, Any] | None) -> None:
        """Append an output to an Output widget (None: clear it)."""
        outputs = state.setdefault("outputs", [])
        if output is None:
            outputs.clear()
        elif (
            output.get("output_type") == "stream"
            and outputs
            and outputs[-1].get("output_type") == "stream"
            and outputs[-1].get("name") == output.get("name")
        ):
            outputs[-1] = {**outputs[-1], "text": outputs[-1]["text"] + output["text"]}
        else:
            outputs.append(output)
        self.changed = True

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
