"""The report's page without nbconvert (``nbjob.report_page``) is nbconvert's page, byte for byte.

Every notebook of the repository (the examples, the conformance notebooks) and notebooks built
here with every kind of cell and output the lab template renders are rendered twice: by
``report.exporter()`` (jinja2 with nbjob's filters) and by ``report_nbconvert.exporter()``
(nbconvert's HTMLExporter, as nbjob configures it). Then the cell pages of
``nbjob.report_cells`` both ways, and a page rendered in a fresh process that never imports
nbconvert.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import (
    new_code_cell,
    new_markdown_cell,
    new_notebook,
    new_output,
    new_raw_cell,
)
from nbjob import report, report_cells, report_nbconvert
from nbjob.report_page import PageExporter

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(
    p for p in (REPO / "examples").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
) + sorted((REPO / "tests" / "conformance" / "notebooks").glob("*.ipynb"))
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
    )
).decode()
SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4">'
    '<rect width="4" height="4"/></svg>'
)
TRACEBACK = [
    "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
    "\x1b[0;31mValueError\x1b[0m                                Traceback (most recent call last)",
    "Cell \x1b[0;32mIn[3], line 1\x1b[0m\n\x1b[0;32m----> 1\x1b[0m \x1b[38;5;28;01mraise\x1b[39;00m"
    " \x1b[38;5;167;01mValueError\x1b[39;00m("
    '\x1b[38;5;124m"\x1b[39m\x1b[38;5;124m<bad> & "\x1b[39m)',
    "\x1b[0;31mValueError\x1b[0m: <bad> & 'q'",
]
WIDGET = "application/vnd.jupyter.widget-view+json"
ODD = "{{%- extends 'index.html.j2' -%}}{{% block body_loop %}}{}{{% endblock body_loop %}}"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def both(nb: Any, folder: Path | None = None, title: str = "") -> tuple[str, str]:
    """The page of ``nb`` by nbjob's renderer and by nbconvert's exporter (the random ids the
    template gives widget and script outputs numbered in order)."""
    lean = report.exporter()
    assert isinstance(lean, PageExporter)
    ours = report.render(nb, folder, title, lean).decode()
    assert lean.fell_back is None, lean.fell_back
    theirs = report.render(nb, folder, title, report_nbconvert.exporter()).decode()
    return _numbered(ours), _numbered(theirs)


def _numbered(page: str) -> str:
    ids: dict[str, str] = {}
    return UUID.sub(lambda m: ids.setdefault(m.group(0), f"uuid-{len(ids)}"), page)


def code(source: str, *outputs: Any, **metadata: Any) -> Any:
    cell = new_code_cell(source, outputs=list(outputs), execution_count=1)
    cell.metadata.update(metadata)
    return cell


def rich(**data: Any) -> Any:
    return new_output("display_data", data=data)


def built_notebooks() -> dict[str, Any]:
    """Notebooks made of every kind of cell and output the lab template renders."""
    stream = new_output("stream", name="stdout", text="a <b> & \x1b[1;31mred\x1b[0m\r\nline\n")
    stderr = new_output("stream", name="stderr", text="warning: \x1b[33myellow\x1b[0m\n")
    result = new_output("execute_result", data={"text/plain": "'<x>'"}, execution_count=1)
    error = new_output("error", ename="ValueError", evalue="<bad>", traceback=TRACEBACK)
    outputs = [
        rich(**{"image/png": PNG, "text/plain": "<Figure>"}),
        rich(**{"image/jpeg": PNG, "text/plain": "jpeg"}),
        rich(**{"image/svg+xml": SVG, "text/plain": "svg"}),
        rich(**{"text/html": "<table><tr><td>1</td></tr></table>", "text/plain": "df"}),
        rich(**{"text/markdown": "**bold** $x^2$", "text/plain": "md"}),
        rich(**{"text/latex": "$$\\int_0^1 x\\,dx$$", "text/plain": "latex"}),
        rich(**{"application/json": {"a": 1}, "text/plain": "{'a': 1}"}),
        rich(**{"application/x-unknown": "?"}),
    ]
    widget = rich(**{WIDGET: {"model_id": "m1", "version_major": 2}, "text/plain": "w"})
    lost = rich(**{WIDGET: {"model_id": "gone", "version_major": 2}, "text/plain": "gone"})
    image_meta = new_output("display_data", data={"image/png": PNG}, metadata={})
    image_meta.metadata["image/png"] = {"width": 40, "height": 20}
    cells = [
        new_markdown_cell("# Title <i>x</i>\n\nSome *text* with $a<b$ and `code`.\n\n## Again"),
        new_markdown_cell(
            "```python\nx = 1\n```\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |"
        ),
        new_markdown_cell('<span style="color:red">red</span> and <div>block</div>'),
        code("print('<b>')", stream, stderr, result),
        code("raise ValueError('<bad>')", error),
        code("show()", *outputs, image_meta),
        code("%%bash\necho $HOME", new_output("stream", name="stdout", text="/root\n")),
        code("w", widget, lost),
        code("hidden = 1", result, tags=["parameters", "my-tag"]),
        code("x", result, jupyter={"source_hidden": True, "outputs_hidden": True}),
        code("", execution_count=None),
        new_raw_cell("<b>raw html</b>", metadata={"format": "text/html"}),
        new_raw_cell("raw text"),
        new_raw_cell("\\LaTeX", metadata={"raw_mimetype": "text/latex"}),
    ]
    cells[-5].execution_count = None
    state = {"state": {"m1": {"model_name": "IntSliderModel", "state": {"value": 3}}}}
    python = {"name": "python", "pygments_lexer": "ipython3", "version": "3.11"}
    notebooks = {
        "everything": new_notebook(cells=cells, metadata={"language_info": python}),
        "widgets": new_notebook(
            cells=cells[7:8],
            metadata={
                "language_info": python,
                "widgets": {"application/vnd.jupyter.widget-state+json": state},
            },
        ),
        "no language": new_notebook(cells=cells[3:6]),
        "bash": new_notebook(
            cells=[code("echo <x> | tr a b")], metadata={"language_info": {"name": "bash"}}
        ),
        "R": new_notebook(
            cells=[code("cat('<x>')\nx <- 1")],
            metadata={"language_info": {"name": "R", "pygments_lexer": "r"}, "language": "R"},
        ),
        "titled": new_notebook(cells=cells[:2], metadata={"title": "A <title> & more"}),
        "empty": new_notebook(),
    }
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i}"
    return notebooks


BUILT = built_notebooks()


@pytest.mark.parametrize("name", sorted(BUILT))
def test_built_notebooks_render_as_nbconvert_renders_them(name: str) -> None:
    ours, theirs = both(BUILT[name])
    assert ours == theirs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_repositorys_notebooks_render_as_nbconvert_renders_them(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    ours, theirs = both(nb, path.parent, path.stem)
    assert ours == theirs


def test_markdown_images_from_the_folder_and_attachments(tmp_path: Path) -> None:
    (tmp_path / "plot.png").write_bytes(base64.b64decode(PNG))
    cell = new_markdown_cell("![plot](plot.png) ![att](attachment:a.png) ![far](../far.png)")
    cell.attachments = {"a.png": {"image/png": PNG}}
    ours, theirs = both(new_notebook(cells=[cell]), tmp_path, "t")
    assert ours == theirs
    body = ours.partition("<main>")[2]
    assert body.count("data:image/png;base64,") == 2 and 'src="../far.png"' in body


def test_the_cell_pages_are_the_same_both_ways() -> None:
    """``nbjob.report_cells`` renders a page's frame and its cells with nbjob's renderer; the
    page is the page nbconvert renders whole."""
    nb = BUILT["everything"]
    with report_cells.CellPages() as pages:
        ours = pages.page(nb, None, "t").decode()
    theirs = report.render(nb, None, "t", report_nbconvert.exporter()).decode()
    assert ours == theirs


def test_templates_it_cannot_render_are_nbconverts_to_render(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A template using a filter nbjob's renderer does not have cannot be compiled: the
    exporter is nbconvert's. A page that fails as it renders (a filter raising): nbconvert's
    exporter renders that page."""
    unknown = {"odd.html.j2": ODD.format("{{ 'x' | wrap_text }}")}
    assert not isinstance(report.exporter(unknown, "odd.html.j2"), PageExporter)
    lean = report.exporter()
    assert isinstance(lean, PageExporter)

    def broken(text: str) -> str:
        raise RuntimeError("a filter's bug")

    monkeypatch.setitem(lean.environment.filters, "ansi2html", broken)
    nb = BUILT["everything"]
    page = report.render(nb, None, "t", lean).decode()
    assert lean.fell_back == "RuntimeError: a filter's bug"
    assert _numbered(page) == _numbered(report.render(nb, None, "t", lean.fallback).decode())
    assert 'class="ansi-red-intense-fg ansi-bold"' in page  # the page has its ANSI colours


def test_a_page_is_rendered_without_importing_nbconvert(tmp_path: Path) -> None:
    path = tmp_path / "nb.ipynb"
    nbformat.write(BUILT["everything"], path)
    script = (
        "import sys, nbformat; from nbjob import report\n"
        f"nb = nbformat.read({str(path)!r}, as_version=4)\n"
        "page = report.render(nb, None, 't')\n"
        "print(len(page), sorted(m for m in ('nbconvert', 'bs4', 'bleach', 'IPython')"
        " if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "executor")}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    size, _, imported = out.stdout.strip().partition(" ")
    assert int(size) > 10_000
    assert json.loads(imported.replace("'", '"')) == ["bleach"]  # the SVG output's clean_html
