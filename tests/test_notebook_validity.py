"""The executed notebook as JupyterLab and nbclient write it (issue 16; issue 15 finding 11).

Always valid: inputs from nbformat 3 to 4.5 come out as 4.5 with an id on every cell, the
injected parameters and the error banners included (every notebook a ``run_nbjob`` writes is
also validated by ``support``). Execution timing as nbclient records it, pager output kept,
``--allow-errors``, and failed cells named as the user sees them (``In [n]``).
"""

from __future__ import annotations

import copy
import json
import pickle
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbjob import events, pack, prepare
from nbjob.errors import CellExecutionError
from nbjob.execute import Executor
from nbjob.kernel.fake import FakeKernel, Step, reply, status, stream
from nbjob.outputs import pager_outputs, timestamp
from support import PYTHON3, make_notebook, notebook, results, run_nbjob, texts
from support.results import output_folder, validate_written

pytestmark = pytest.mark.timeout(180)

TIMING_KEYS = [
    "iopub.status.busy",
    "iopub.execute_input",
    "shell.execute_reply",
    "iopub.status.idle",
]
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
BANNER_TAG = "nbjob-error-banner"


class _Log:
    """Collects what ``read_notebook`` logs (the fast tests read notebooks in-process)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    warning = info


# -- inputs of every nbformat version -----------------------------------------------------------


def _v4(path: Path, minor: int) -> Path:
    """A 4.``minor`` notebook: a parameters cell, a heading, a print, a failing cell."""
    make_notebook(
        path,
        [
            ("code", "x = 1", ["parameters"]),
            ("markdown", "# Title"),
            "print('x is', x)",
            "raise ValueError('at the end')",
        ],
    )
    raw = json.loads(path.read_text())
    raw["nbformat_minor"] = minor
    if minor < 5:
        for cell in raw["cells"]:
            del cell["id"]
    path.write_text(json.dumps(raw))
    return path


def _v3(path: Path) -> Path:
    """The same notebook as nbformat 3 (worksheets, ``input``, a heading cell)."""
    v3 = nbformat.v3
    cells = [
        v3.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        v3.new_heading_cell("Title", level=1),
        v3.new_code_cell("print('x is', x)"),
        v3.new_code_cell("raise ValueError('at the end')"),
    ]
    nb = v3.new_notebook(worksheets=[v3.new_worksheet(cells=cells)])
    nb.metadata["kernelspec"] = dict(PYTHON3)
    path.write_text(nbformat.writes(nb, version=3))
    return path


VERSIONS = ["3.0", "4.0", "4.1", "4.2", "4.3", "4.4", "4.5"]


def _input(tmp_path: Path, version: str) -> Path:
    path = tmp_path / "nb.ipynb"
    return _v3(path) if version == "3.0" else _v4(path, int(version.split(".")[1]))


@pytest.mark.parametrize("version", VERSIONS)
def test_every_version_is_read_as_a_valid_4_5_notebook(tmp_path: Path, version: str) -> None:
    log = _Log()
    nb = prepare.read_notebook(_input(tmp_path, version), log)
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    assert [c.cell_type for c in nb.cells] == ["code", "markdown", "code", "code"]
    assert nb.cells[0].source == "x = 1" and nb.cells[1].source == "# Title"
    ids = [c.id for c in nb.cells]
    assert len(set(ids)) == 4 and all(re.match(r"^[a-zA-Z0-9-_]{1,64}$", i) for i in ids)
    assert [e for e, _ in log.events if e == "notebook_invalid"] == []


def test_a_4_5_notebook_reads_as_nbformat_reads_it(tmp_path: Path) -> None:
    """nbjob parses a 4.x notebook once, into notebook nodes; what it gets is what
    nbformat's reader gives: sources and output texts stored as lists of lines joined,
    the metadata nbformat calls transient dropped, every key an attribute."""
    path = _v4(tmp_path / "nb.ipynb", 5)
    raw = json.loads(path.read_text())
    raw["cells"][0]["source"] = ["x = 1\n", "y = 2"]
    raw["cells"][0]["outputs"] = [
        {"output_type": "stream", "name": "stdout", "text": ["a\n", "b\n"]},
        {
            "output_type": "display_data",
            "data": {"text/plain": ["1\n", "2"]},
            "metadata": {},
        },
    ]
    raw["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    raw["metadata"]["signature"] = "sha256:0"
    raw["cells"][0]["metadata"]["trusted"] = True
    path.write_text(json.dumps(raw))
    nb = prepare.read_notebook(path, _Log())
    assert nb == nbformat.read(path, as_version=4)
    cell = nb.cells[0]
    assert cell.source == "x = 1\ny = 2" and cell.outputs[0].text == "a\nb\n"
    assert cell.outputs[1].data["text/plain"] == "1\n2"
    assert "signature" not in nb.metadata and "trusted" not in cell.metadata
    assert nb.metadata.kernelspec.name == "python3"
    assert isinstance(cell, nbformat.NotebookNode) and isinstance(cell.metadata, dict)
    cell.execution_count = 7  # a key set as an attribute, as on nbformat's nodes
    assert cell["execution_count"] == 7 and copy.deepcopy(nb) == nb
    assert pickle.loads(pickle.dumps(nb)) == nb


def test_a_hand_written_notebook_without_metadata_is_read_with_empty_metadata(
    tmp_path: Path,
) -> None:
    path = _v4(tmp_path / "nb.ipynb", 5)
    raw = json.loads(path.read_text())
    del raw["metadata"], raw["cells"][1]["metadata"]
    path.write_text(json.dumps(raw))
    nb = prepare.read_notebook(path, _Log())
    nbformat.validate(nb)
    assert nb.metadata == {} and nb.cells[1].metadata == {}


def test_a_4_5_notebook_keeps_its_ids_and_bad_ones_are_repaired(tmp_path: Path) -> None:
    path = _v4(tmp_path / "nb.ipynb", 5)
    raw = json.loads(path.read_text())
    raw["cells"][1]["id"] = raw["cells"][0]["id"]  # a duplicate (a copy-paste in an editor)
    raw["cells"][2]["id"] = "not a valid id!"
    path.write_text(json.dumps(raw))
    log = _Log()
    nb = prepare.read_notebook(path, log)
    nbformat.validate(nb)
    assert nb.cells[0].id == raw["cells"][0]["id"] and nb.cells[3].id == raw["cells"][3]["id"]
    assert len({c.id for c in nb.cells}) == 4
    upgraded = [f for e, f in log.events if e == "notebook_upgraded"]
    assert upgraded and upgraded[0]["from_minor"] == 5 and upgraded[0]["ids_repaired"] >= 1


def test_what_the_schema_refuses_is_dropped_on_reading(tmp_path: Path) -> None:
    """Metadata of the wrong type and keys a cell may not have (a hand-edited or
    tool-written notebook): the executed notebook would be invalid, so they go."""
    path = _v4(tmp_path / "nb.ipynb", 5)
    raw = json.loads(path.read_text())
    raw["cells"][0]["metadata"]["collapsed"] = "yes"
    raw["cells"][1]["outputs"] = []  # a markdown cell with outputs
    raw["cells"][1]["execution_count"] = 3
    path.write_text(json.dumps(raw))
    log = _Log()
    nb = prepare.read_notebook(path, log)
    nbformat.validate(nb)
    assert nb.cells[0].metadata == {"tags": ["parameters"]}  # "collapsed" went
    assert sorted(nb.cells[1]) == ["cell_type", "id", "metadata", "source"]
    repaired = dict(log.events)["notebook_repaired"]
    assert repaired["dropped_keys"] == ["cells[].execution_count", "cells[].outputs"]
    assert "notebook_invalid" not in dict(log.events)


@pytest.mark.parametrize("version", ["3.0", "4.0", "4.4", "4.5"])
def test_a_run_writes_a_valid_notebook_with_parameters_and_banners(
    tmp_path: Path, version: str
) -> None:
    """Parameters injected and banners added to inputs of each format: still valid."""
    out = tmp_path / "out"
    result = run_nbjob("run", _input(tmp_path, version), "--output", out, "-p", "x", "2")
    assert result.returncode == 1, result.stderr
    nb, record = results(out)  # validated, as every notebook run_nbjob's nbjob writes
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    assert len({c.id for c in nb.cells}) == len(nb.cells) == 7  # + parameters + 2 banners
    assert "x is 2" in "".join(texts(c) for c in nb.cells if c.cell_type == "code")
    banners = [c for c in nb.cells if BANNER_TAG in c.metadata.get("tags", [])]
    assert len(banners) == 2
    assert record["reason"] == "In [4] (cell 4) raised ValueError: at the end"
    assert record["errors"] == [
        {"index": 4, "execution_count": 4, "ename": "ValueError", "evalue": "at the end"}
    ]


# -- timing ------------------------------------------------------------------------------------


def test_timestamp_is_the_kernel_date_in_utc_as_nbclient_writes_it() -> None:
    paris = timezone(timedelta(hours=2))
    date = datetime(2026, 5, 1, 14, 0, 0, 123456, tzinfo=paris)
    assert timestamp({"header": {"date": date}}) == "2026-05-01T12:00:00.123456Z"
    assert timestamp({"header": {"date": "2026-05-01T12:00:00.5Z"}}) == (
        "2026-05-01T12:00:00.500000Z"
    )
    assert STAMP.match(timestamp({"header": {}}))  # no date: now, same form


def test_execution_timing_comes_from_the_kernel(tmp_path: Path) -> None:
    nb_path = notebook(tmp_path / "nb.ipynb", "import time\ntime.sleep(0.3)\nprint('done')")
    before = datetime.now(timezone.utc) - timedelta(seconds=2)
    result = run_nbjob("run", nb_path, "--output", tmp_path / "out")
    after = datetime.now(timezone.utc) + timedelta(seconds=2)
    assert result.returncode == 0, result.stderr
    nb, _ = results(tmp_path / "out")
    execution = nb.cells[0].metadata["execution"]
    assert sorted(execution) == sorted(TIMING_KEYS)
    assert all(STAMP.match(v) for v in execution.values()), execution
    dates = {k: datetime.strptime(v, "%Y-%m-%dT%H:%M:%S.%fZ") for k, v in execution.items()}
    busy, start = dates["iopub.status.busy"], dates["iopub.execute_input"]
    assert busy <= start <= dates["shell.execute_reply"] <= dates["iopub.status.idle"]
    assert dates["shell.execute_reply"] - start >= timedelta(seconds=0.3)
    naive = (before.replace(tzinfo=None), after.replace(tzinfo=None))
    assert naive[0] <= busy and dates["iopub.status.idle"] <= naive[1]


# -- the pager ---------------------------------------------------------------------------------


def test_pager_payloads_become_display_outputs() -> None:
    content = {
        "payload": [
            {"source": "page", "data": {"text/plain": "Docstring", "text/html": "<b>D</b>"}},
            {"source": "set_next_input", "text": "x = 1"},
            {"source": "page", "data": {"text/plain": "", "image/png": "xx"}},
        ]
    }
    outputs = pager_outputs(content)
    assert [dict(o) for o in outputs] == [
        {
            "output_type": "display_data",
            "data": {"text/plain": "Docstring", "text/html": "<b>D</b>"},
            "metadata": {},
        }
    ]


def test_pager_output_is_kept_in_its_cell(tmp_path: Path) -> None:
    nb_path = notebook(
        tmp_path / "nb.ipynb", "len?", "import collections\ncollections.Counter??", "%pdoc len"
    )
    result = run_nbjob("run", nb_path, "--output", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    nb, _ = results(tmp_path / "out")
    for cell, expected in zip(
        nb.cells,
        ["Return the number of items", "collections.Counter(", "Return the number"],
        strict=True,
    ):
        pages = [o for o in cell.outputs if o.output_type == "display_data"]
        assert len(pages) == 1, cell.outputs
        assert expected in pages[0].data["text/plain"]


# -- --allow-errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["flag", "env"])
def test_allow_errors_runs_every_cell_and_names_the_ones_that_raised(
    tmp_path: Path, how: str
) -> None:
    nb_path = make_notebook(
        tmp_path / "nb.ipynb",
        [
            "print('first')",
            "raise ValueError('one')",
            ("markdown", "Some text"),
            "assert 1 == 2",
            "print('last')",
        ],
    )
    out = tmp_path / "out"
    flags, env = (["--allow-errors"], {}) if how == "flag" else ([], {"NBJOB_ALLOW_ERRORS": "1"})
    result = run_nbjob("run", nb_path, "--output", out, *flags, env=env)
    assert result.returncode == 0, result.stderr
    nb, record = results(out)
    assert (record["status"], record["exit_code"], record["failed_cell"]) == ("succeeded", 0, None)
    assert record["errors"] == [
        {"index": 1, "execution_count": 2, "ename": "ValueError", "evalue": "one"},
        {"index": 3, "execution_count": 3, "ename": "AssertionError", "evalue": ""},
    ]
    assert [c["status"] for c in record["cells"]] == ["completed", "failed", "failed", "completed"]
    assert texts(nb.cells[4]) == "last\n"
    errors = [o for o in nb.cells[1].outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "ValueError"
    assert not [c for c in nb.cells if BANNER_TAG in c.metadata.get("tags", [])]


# -- banners in the user's words ---------------------------------------------------------------


def test_the_banner_names_the_cell_as_shown_and_drops_an_empty_message(tmp_path: Path) -> None:
    nb_path = make_notebook(
        tmp_path / "nb.ipynb",
        [("markdown", "# Title"), "x = 1", ("markdown", "Check"), "assert x == 2"],
    )
    out = tmp_path / "out"
    result = run_nbjob("run", nb_path, "--output", out)
    assert result.returncode == 1, result.stderr
    nb, record = results(out)
    assert record["reason"] == "In [2] (cell 3) raised AssertionError"
    assert record["failed_cell"] == {"index": 3, "ename": "AssertionError", "evalue": ""}
    banners = [c.source for c in nb.cells if BANNER_TAG in c.metadata.get("tags", [])]
    assert "This run did not finish: In [2] (cell 3) raised AssertionError. " in banners[0]
    assert "nbjob stopped here: In [2] (cell 3) raised AssertionError</span>" in banners[1]
    assert nb.cells[4].metadata.get("tags") == [BANNER_TAG]  # right before the failed cell


def test_a_banner_on_a_run_read_back_validates(tmp_path: Path) -> None:
    """A notebook nbjob wrote (banners and all) is read again as a valid input: the banners go."""
    nb_path = make_notebook(tmp_path / "nb.ipynb", ["raise KeyError('k')"])
    out = tmp_path / "out"
    assert run_nbjob("run", nb_path, "--output", out).returncode == 1
    again = prepare.read_notebook(out / "nb.ipynb", _Log())
    nbformat.validate(again)
    assert [c.cell_type for c in again.cells] == ["code"]


# -- the suite-wide check ----------------------------------------------------------------------


def test_the_suite_checks_every_notebook_a_run_writes(tmp_path: Path) -> None:
    """``run_nbjob`` validates its output folder: found from the flags, the variable or the
    default; an object store is not looked at; a notebook missing ids fails the test."""
    found = output_folder(["run", "nb.ipynb", "--output", "out"], {}, tmp_path)
    assert found == tmp_path / "out"
    assert output_folder(["run", "nb.ipynb"], {"NBJOB_OUTPUT": "env-out"}, tmp_path) == (
        tmp_path / "env-out"
    )
    assert output_folder(["run", "nb.ipynb"], {}, tmp_path) == tmp_path / "nbjob-output"
    assert output_folder(["run", "nb.ipynb", "-o", "s3://b/p"], {}, tmp_path) is None
    assert output_folder(["pack", "nb.ipynb", "-o", "nb.zip"], {}, tmp_path) is None
    written = _v4(tmp_path / "out" / "ranks" / "1" / "nb.ipynb", 5)
    validate_written(found)  # valid: nothing to say
    raw = json.loads(written.read_text())
    raw["nbformat_minor"] = 4  # ids in a 4.4 notebook: what nbjob used to write
    written.write_text(json.dumps(raw))
    with pytest.raises(AssertionError, match="nbjob wrote an invalid notebook"):
        validate_written(found)


# -- the executor, on scripted messages --------------------------------------------------------


def _script(code: str) -> list[Step]:
    """Each cell as a kernel answers it: ``bad`` raises, ``page`` sends a pager payload."""
    start = [status("busy"), Step("iopub", "execute_input", {"execution_count": 1})]
    if code == "bad":
        error = {"ename": "ValueError", "evalue": "x", "traceback": ["ValueError: x"]}
        return [*start, Step("iopub", "error", error), reply("error", **error), status("idle")]
    if code == "page":
        page = {"source": "page", "data": {"text/plain": "Docstring:\nhelp"}, "start": 0}
        return [*start, stream("before\n"), reply(payload=[page]), status("idle")]
    return [*start, stream(f"{code}\n"), reply(), status("idle")]


def _scripted(*sources: str, **options: Any) -> tuple[Executor, Any]:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    executor = Executor(FakeKernel(_script), events.Bus([]), **options)
    executor.run(nb)
    return executor, nb


def test_allow_errors_keeps_running_after_a_failed_cell() -> None:
    executor, nb = _scripted("one", "bad", "two", "bad", "three", allow_errors=True)
    statuses = [executor.results[i].status for i in range(5)]
    assert statuses == ["completed", "failed", "completed", "failed", "completed"]
    assert executor.results[3].error == {"ename": "ValueError", "evalue": "x"}
    assert [o.output_type for o in nb.cells[1].outputs] == ["error"]
    assert nb.cells[4].outputs[0].text == "three\n"
    with pytest.raises(CellExecutionError, match=r"^In \[1\] \(cell 1\) raised ValueError: x$"):
        _scripted("one", "bad", "two")


def test_a_pager_payload_follows_the_cells_other_outputs() -> None:
    _, nb = _scripted("page")
    assert [o.output_type for o in nb.cells[0].outputs] == ["stream", "display_data"]
    assert nb.cells[0].outputs[1].data == {"text/plain": "Docstring:\nhelp"}
    assert sorted(nb.cells[0].metadata["execution"]) == sorted(TIMING_KEYS)


def test_an_nbformat_3_notebook_can_be_packed(tmp_path: Path) -> None:
    path = _v3(tmp_path / "nb.ipynb")
    assert pack.collect(path, None, None) == {"nb.ipynb": path}


@pytest.mark.parametrize("cells", [0, 1, 3])
def test_a_notebook_is_stored_as_nbformat_writes_it(cells: int) -> None:
    """Made a cell at a time, the stored text is the notebook's JSON in one piece, byte for
    byte: keys sorted, one space a level, text that is not ASCII kept, a "cells" key deeper
    down left alone; nbformat reads it back as it was."""
    from nbformat import v4
    from nbjob.results import notebook_bytes

    nb = v4.new_notebook(metadata={"a": {"cells": []}, "zz": "pässwörd ✓", "cells_x": 1})
    sources = ["x = 1\nprint('é')", "# Título\n\n- *a*", '{"cells": []}']
    outputs = [v4.new_output("stream", name="stdout", text='é\n"q"\n')]
    nb.cells = [
        v4.new_code_cell(sources[0], outputs=outputs, execution_count=1),
        v4.new_markdown_cell(sources[1]),
        v4.new_raw_cell(sources[2], metadata={"cells": [1, {"b": []}]}),
    ][:cells]
    written = json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    assert notebook_bytes(nb) == written.encode()
    assert nbformat.reads(notebook_bytes(nb).decode(), 4) == nb
