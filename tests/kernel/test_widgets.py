"""Widget state and Output capture: message level (nbjob.widgets through the executor and
kernel/fake.py) and with a real kernel running ipywidgets (nested Output widgets, a deferred
clear, folded streams, as JupyterLab shows them)."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbjob import events
from nbjob.errors import DeadKernelError
from nbjob.execute import Executor
from nbjob.kernel.fake import FakeKernel, Step, cell, clear, reply, status, stream
from nbjob.widgets import MIME
from support import make_notebook, results, run_nbjob

VIEW = "application/vnd.jupyter.widget-view+json"
SLIDER = {"_model_name": "IntSliderModel", "_model_module": "@jupyter-widgets/controls",
          "_model_module_version": "2.0.0", "value": 0}  # fmt: skip
OUTPUT = {"_model_name": "OutputModel", "_model_module": "@jupyter-widgets/output",
          "_model_module_version": "1.0.0", "msg_id": "", "outputs": []}  # fmt: skip


def comm_open(comm_id: str, state: dict[str, Any], **extra: Any) -> Step:
    data = {"state": copy.deepcopy(state), "buffer_paths": extra.pop("paths", [])}
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


def captured(*steps: Step) -> dict[str, list[Any]]:
    """Run one cell of ``steps``; each Output model's outputs and the cell's, by comm id."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("w")]
    Executor(FakeKernel(lambda code: cell(*steps)), events.Bus()).run(nb)
    state = nb.metadata["widgets"][MIME]["state"]
    found = {comm: model["state"].get("outputs", []) for comm, model in state.items()}
    return {**found, "cell": list(nb.cells[0].outputs)}


def test_nested_output_widgets_the_one_entered_last_captures() -> None:
    got = captured(
        comm_open("outer", OUTPUT),
        comm_open("inner", OUTPUT),  # created last, entered first
        update("inner", {"msg_id": "fake-1"}),
        stream("in inner\n"),
        update("outer", {"msg_id": "fake-1"}),
        stream("in outer\n"),
        update("outer", {"msg_id": ""}),
        stream("inner again\n"),
        update("inner", {"msg_id": ""}),
        stream("cell\n"),
    )
    assert [o["text"] for o in got["outer"]] == ["in outer\n"]
    assert [o["text"] for o in got["inner"]] == ["in inner\ninner again\n"]
    assert [o["text"] for o in got["cell"]] == ["cell\n"]


def test_a_cell_sent_early_captures_in_order_with_its_outputs_held() -> None:
    """The next cell's messages that come before this cell's idle are held for it: its Output
    widget's ``msg_id`` updates are held with them, not applied ahead of the streams (the
    widget's outputs went to the cell when the updates ran first)."""
    first = [status("busy"), reply(count=1), Step("iopub", "status", {"execution_state": "idle"},
             pause=0.3)]  # fmt: skip
    second = cell(
        comm_open("o", OUTPUT),
        update("o", {"msg_id": "fake-2"}),
        stream("inside\n"),
        update("o", {"msg_id": ""}),
        stream("outside\n"),
        count=2,
    )
    kernel = FakeKernel(lambda code: first if code == "first" else second)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("first"), nbformat.v4.new_code_cell("second")]
    Executor(kernel, events.Bus()).run(nb)
    assert [o["text"] for o in nb.cells[1].outputs] == ["outside\n"]
    state = nb.metadata["widgets"][MIME]["state"]["o"]["state"]
    assert [o["text"] for o in state["outputs"]] == ["inside\n"]


def test_clear_wait_in_an_output_widget_waits_for_the_next_output() -> None:
    enter, leave = update("o", {"msg_id": "fake-1"}), update("o", {"msg_id": ""})
    kept = captured(comm_open("o", OUTPUT), enter, stream("old\n"), clear(wait=True), leave)
    assert [o["text"] for o in kept["o"]] == ["old\n"]  # nothing came after the clear
    replaced = captured(
        comm_open("o", OUTPUT), enter, stream("old\n"), clear(wait=True), stream("new\n"), leave
    )
    assert [o["text"] for o in replaced["o"]] == ["new\n"]
    now = captured(comm_open("o", OUTPUT), enter, stream("old\n"), clear(), leave)
    assert now["o"] == []


def test_output_widget_streams_fold_carriage_returns_and_backspaces() -> None:
    got = captured(
        comm_open("o", OUTPUT),
        update("o", {"msg_id": "fake-1"}),
        *[stream(f"\r{i:3d}%") for i in range(0, 101, 10)],
        stream("\nab\bc\n"),
        stream("err\n", "stderr"),
        stream("12345\rx"),
        update("o", {"msg_id": ""}),
    )
    assert [(o["name"], o["text"]) for o in got["o"]] == [
        ("stdout", "100%\nac\n"),
        ("stderr", "err\n"),
        ("stdout", "x2345"),
    ]


# -- a real kernel with ipywidgets ---------------------------------------------------------------

NESTED = """
import ipywidgets as w
outer, inner = w.Output(), w.Output()
display(outer, inner)
with inner:
    print("in inner")
    with outer:
        print("in outer")
    print("inner again")
print("cell")
"""
CLEAR_WAIT = """
import ipywidgets as w
kept, replaced = w.Output(), w.Output()
display(kept, replaced)
with kept:
    print("old")
    kept.clear_output(wait=True)
with replaced:
    print("old")
    replaced.clear_output(wait=True)
    print("new")
"""
FOLDED = """
import sys, ipywidgets as w
bar = w.Output()
display(bar)
with bar:
    for i in range(0, 101, 10):
        sys.stdout.write(f"\\r{i:3d}%")
        sys.stdout.flush()
    print("\\nspin|\\b/\\b-\\bdone")
"""


def test_output_widgets_with_a_real_kernel_as_jupyterlab_shows_them(tmp_path: Path) -> None:
    nb_path = make_notebook(tmp_path / "nb.ipynb", [NESTED, CLEAR_WAIT, FOLDED])
    proc = run_nbjob("run", nb_path, "--output", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    nb, _ = results(tmp_path / "out")
    state = nb.metadata["widgets"][MIME]["state"]

    views = [  # the widgets each cell displays, in order
        o.data[VIEW]["model_id"] for c in nb.cells for o in c.outputs if VIEW in o.get("data", {})
    ]
    outputs = [[o.get("text") for o in state[model]["state"]["outputs"]] for model in views]
    assert outputs == [
        ["in outer\n"],
        ["in inner\ninner again\n"],
        ["old\n"],
        ["new\n"],
        ["100%\nspindone\n"],
    ]
    cell_streams = [
        [o.get("text") for o in c.outputs if o.output_type == "stream"] for c in nb.cells
    ]
    assert cell_streams == [["cell\n"], [], []]
