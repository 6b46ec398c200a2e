"""Widget state and Output capture at message level (nbjob.widgets through the executor)."""

from __future__ import annotations

import base64
from typing import Any

import nbformat
import pytest
from nbjob import events
from nbjob.errors import DeadKernelError
from nbjob.execute import Executor
from nbjob.kernel.fake import FakeKernel, Step, cell, stream
from nbjob.widgets import MIME

SLIDER = {"_model_name": "IntSliderModel", "_model_module": "@jupyter-widgets/controls",
          "_model_module_version": "2.0.0", "value": 0}  # fmt: skip
OUTPUT = {"_model_name": "OutputModel", "_model_module": "@jupyter-widgets/output",
          "_model_module_version": "1.0.0", "msg_id": "", "outputs": []}  # fmt: skip


def comm_open(comm_id: str, state: dict[str, Any], **extra: Any) -> Step:
    data = {"state": state, "buffer_paths": extra.pop("paths", [])}
    content = {"comm_id": comm_id, "target_name": "jupyter.widget", "data": data}
    return Step("iopub", "comm_open", content, **extra)


def update(comm_id: str, state: dict[str, Any], method: str = "update", **extra: Any) -> Step:
    data = {"method": method, "state": state, "buffer_paths": extra.pop("paths", [])}
    return Step("iopub", "comm_msg", {"comm_id": comm_id, "data": data}, **extra)


def run(*steps: Step) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("w")]
    Executor(FakeKernel(lambda code: cell(*steps)), events.Bus()).run(nb)
    return nb


def test_state_from_open_and_updates_closed_models_dropped_buffers_kept() -> None:
    nb = run(
        comm_open("s", SLIDER),
        update("s", {"value": 7}),
        update("s", {"value": 9}, method="echo_update"),
        comm_open("gone", SLIDER),
        Step("iopub", "comm_close", {"comm_id": "gone"}),
        comm_open(
            "arr",
            {**SLIDER, "_model_name": "ArrayModel", "data": {"a": 1}},
            paths=[["data", "a"]],
            buffers=[b"\x00\x01"],
        ),
        comm_open("other", {"x": 1}),  # no _model_name: not a model to save
        Step("iopub", "comm_open", {"comm_id": "t", "target_name": "other", "data": {}}),
    )
    widgets = nb.metadata["widgets"][MIME]
    assert (widgets["version_major"], widgets["version_minor"]) == (2, 0)
    assert sorted(widgets["state"]) == ["arr", "s"]
    slider = widgets["state"]["s"]
    assert slider["model_name"] == "IntSliderModel" and slider["state"]["value"] == 9
    assert slider["model_module"] == "@jupyter-widgets/controls"
    (buffer,) = widgets["state"]["arr"]["buffers"]
    assert buffer == {"data": base64.b64encode(b"\x00\x01").decode(), "encoding": "base64",
                      "path": ["data", "a"]}  # fmt: skip
    nbformat.validate(nb)


def test_state_is_written_when_the_kernel_dies() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("w")]
    steps = [Step("iopub", "status", {"execution_state": "busy"}), comm_open("s", SLIDER),
             Step(die=True)]  # fmt: skip
    with pytest.raises(DeadKernelError):
        Executor(FakeKernel(lambda code: steps), events.Bus()).run(nb)
    assert list(nb.metadata["widgets"][MIME]["state"]) == ["s"]


def test_output_widget_captures_the_requests_outputs() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("w")]

    def script(code: str) -> list[Step]:
        capture = update("o", {"msg_id": "fake-1"})
        release = update("o", {"msg_id": ""})
        return cell(comm_open("o", OUTPUT), capture, stream("inside\n"), stream("more\n"),
                    release, stream("outside\n"))  # fmt: skip

    Executor(FakeKernel(script), events.Bus()).run(nb)
    assert [o["text"] for o in nb.cells[0].outputs] == ["outside\n"]
    state = nb.metadata["widgets"][MIME]["state"]["o"]["state"]
    assert state["outputs"] == [
        {"output_type": "stream", "name": "stdout", "text": "inside\nmore\n"}
    ]
