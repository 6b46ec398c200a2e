"""The report rendered cell by cell (nbjob.report_cells): the same page as one render, with only
the new or changed cells rendered again."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import zlib
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output, new_raw_cell
from nbjob import banners, report
from nbjob.report_cells import CellPages, split
from nbjob.results import notebook_bytes

VIEW = "application/vnd.jupyter.widget-view+json"
STATE = "application/vnd.jupyter.widget-state+json"


UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


def same(page: bytes, nb: Any, folder: Path | None = None, title: str = "") -> bool:
    """``page`` is ``report.render``'s page of ``nb`` (a widget view's element gets a new
    random id at each render, in nbconvert too)."""
    return UUID.sub(b"<id>", page) == UUID.sub(b"<id>", report.render(nb, folder, title))


def png() -> str:
    raw = b"\x00\xff\x00\x00" * 2
    ihdr = (2).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
    return base64.b64encode(data + chunk(b"IEND", b"")).decode()


def widgets(value: int) -> dict[str, Any]:
    model = {"model_module": "@jupyter-widgets/controls", "model_module_version": "2.0.0"}
    state = {"m1": {**model, "model_name": "IntSliderModel", "state": {"value": value}}}
    return {STATE: {"state": state, "version_major": 2, "version_minor": 0}}


def rich(tmp_path: Path) -> Any:
    """Markdown with headings, maths, an image from the folder and inline HTML; code with ANSI
    streams, images, HTML, an error, a widget view, a %%bash cell; a raw cell; a banner."""
    (tmp_path / "diagram.png").write_bytes(base64.b64decode(png()))
    outputs = [
        new_output("stream", name="stdout", text='<b>no</b> & "q"\n\x1b[1mbold\x1b[0m\n'),
        new_output("display_data", data={"image/png": png(), "text/plain": "<Figure>"}),
        new_output("display_data", data={"text/html": '<p>t</p><img src="x.png">'}),
        new_output("error", ename="ValueError", evalue="bad <x>", traceback=["ValueError: <x>"]),
    ]
    view = {VIEW: {"model_id": "m1", "version_major": 2, "version_minor": 0}, "text/plain": "w"}
    nb = new_notebook(
        cells=[
            new_markdown_cell("# Title\n## Part $x^2$\n![d](diagram.png) <span style='c'>u</span>"),
            new_code_cell("print('<b>')\nx = 1  # <i>", outputs=outputs, execution_count=1),
            new_code_cell("slider", outputs=[new_output("display_data", data=view)]),
            new_code_cell("%%bash\necho hi", execution_count=3),
            new_raw_cell("raw <b>text</b>"),
            new_code_cell("1/0", execution_count=4),
        ]
    )
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    nb.metadata["widgets"] = widgets(7)
    banners.add(nb, 5, "cell 5 raised ZeroDivisionError")
    return nbformat.from_dict(nbformat.reads(nbformat.writes(nb), 4))  # as stored


def test_the_page_is_the_one_render_makes(tmp_path: Path) -> None:
    nb = rich(tmp_path)
    assert same(CellPages().page(nb, tmp_path, "rich"), nb, tmp_path, "rich")


def test_the_resources_section_goes_in_as_report_chart_puts_it(tmp_path: Path) -> None:
    """The renderer writes the final page with its resources section in (not added by nbjob
    to a copy of a page of many MB): the page report_chart.insert makes of the plain one."""
    from nbjob import report_chart

    nb, pages = rich(tmp_path), CellPages()
    section = '<section class="nbjob-resources">cpu <b>1 s</b></section>'
    out = io.BytesIO()
    pages.write(notebook_bytes(nb), out, tmp_path, "rich", section)
    plain = pages.page(nb, tmp_path, "rich")
    assert out.getvalue() == report_chart.insert(plain, section) != plain
    assert out.getvalue().index(section.encode()) < out.getvalue().rindex(b"</body>")


def test_prepared_cells_are_not_rendered_again_and_changed_ones_are(tmp_path: Path) -> None:
    nb, pages = rich(tmp_path), CellPages()
    early = copy.deepcopy(nb)
    early.cells = early.cells[:3]
    pages.prepare(notebook_bytes(early), tmp_path)
    assert pages.rendered == 3
    changed = next(c for c in nb.cells[:3] if c.cell_type == "code")
    changed.outputs.append(new_output("stream", name="stdout", text="later\n"))  # an update
    assert same(pages.page(nb, tmp_path, "rich"), nb, tmp_path, "rich")
    assert pages.rendered == 3 + 1 + len(nb.cells) - 3  # the changed one and the new ones


def test_a_new_widget_state_renders_the_widget_cells_again(tmp_path: Path) -> None:
    nb, pages = rich(tmp_path), CellPages()
    pages.prepare(notebook_bytes(nb), tmp_path)
    nb.metadata["widgets"] = widgets(9)
    assert same(pages.page(nb, tmp_path), nb, tmp_path)
    assert pages.rendered == len(nb.cells) + 1  # the widget view's cell only


@pytest.mark.parametrize("folder", [None, "other"])
def test_another_folder_renders_every_cell_again(tmp_path: Path, folder: str | None) -> None:
    nb, pages = rich(tmp_path), CellPages()
    pages.prepare(notebook_bytes(nb), tmp_path)
    where = None if folder is None else tmp_path / folder
    assert same(pages.page(nb, where), nb, where)
    assert pages.rendered == 2 * len(nb.cells)


def test_an_empty_notebook(tmp_path: Path) -> None:
    nb = new_notebook()
    assert same(CellPages().page(nb), nb)


def test_cells_render_in_chunks_to_the_same_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbjob import report_cells

    monkeypatch.setattr(report_cells, "CHUNK", 2)
    nb, pages = rich(tmp_path), CellPages()
    assert same(pages.page(nb, tmp_path), nb, tmp_path)
    assert pages.rendered == len(nb.cells)


def test_cells_are_found_in_the_stored_text_as_parsing_finds_them(tmp_path: Path) -> None:
    nb = rich(tmp_path)
    cells = split(notebook_bytes(nb))
    assert [nbformat.from_dict(json.loads(c)) for c in cells] == nb.cells
    assert [nbformat.from_dict(cells.parse(i)) for i in range(len(cells))] == nb.cells
    assert cells.frame.metadata == nb.metadata and cells.frame.cells == []
    empty = new_notebook()
    assert list(split(notebook_bytes(empty))) == []
    other = json.dumps(nb).encode()  # another layout: parsed whole
    assert [nbformat.from_dict(json.loads(c)) for c in split(other)] == nb.cells


@pytest.mark.parametrize("scan", [1, 5, 7, 64, 1 << 18])
def test_a_notebook_read_as_a_stream_is_split_as_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scan: int
) -> None:
    """Read ``scan`` bytes at a time: the marks between cells, the end of the cells and a
    widget view's name fall across two reads, and are found all the same."""
    from nbjob import report_cells

    nb = rich(tmp_path)
    stored = notebook_bytes(nb)
    whole = split(stored)
    monkeypatch.setattr(report_cells, "SCAN", scan)
    with io.BytesIO(stored) as file:
        cells = split(file)
        assert list(cells) == list(whole)
        assert (cells.hashes, cells.views) == (whole.hashes, whole.views)
        assert cells.views.count(1) == 1 and cells.frame == whole.frame


@pytest.mark.parametrize("layout", ["stored", "other"])
def test_a_notebook_file_gives_the_page_its_bytes_give(tmp_path: Path, layout: str) -> None:
    nb = rich(tmp_path)
    stored = notebook_bytes(nb) if layout == "stored" else json.dumps(nb).encode()
    path = tmp_path / "stored.ipynb"
    path.write_bytes(stored)
    with CellPages(tmp_path) as from_file, CellPages(tmp_path) as from_bytes:
        page, expected = io.BytesIO(), io.BytesIO()
        assert from_file.prepare(path, tmp_path) == from_bytes.prepare(stored, tmp_path)
        from_file.write(path, page, tmp_path, "rich")
        from_bytes.write(stored, expected, tmp_path, "rich")
    assert UUID.sub(b"<id>", page.getvalue()) == UUID.sub(b"<id>", expected.getvalue())
    assert same(page.getvalue(), nb, tmp_path, "rich")


def test_a_file_whose_cells_change_between_prepares(tmp_path: Path) -> None:
    """The file at a path rewritten (as the renderer's are) with a cell changed, one added, one
    removed: the cells new since are rendered, the page is the one of the last notebook."""
    nb, path = rich(tmp_path), tmp_path / "stored.ipynb"
    with CellPages(tmp_path) as pages:
        path.write_bytes(notebook_bytes(nb))
        pages.prepare(path, tmp_path)
        assert pages.rendered == len(nb.cells)
        next(c for c in nb.cells if c.get("outputs")).outputs[0].text = "changed\n"
        nb.cells.append(new_markdown_cell("*later*"))
        del nb.cells[-2]
        path.write_bytes(notebook_bytes(nb))
        pages.prepare(path, tmp_path)
        assert pages.rendered == len(nb.cells) + 2
        assert len(pages.kept) == len(nb.cells)
        page = io.BytesIO()
        pages.write(path, page, tmp_path, "rich")
    assert same(page.getvalue(), nb, tmp_path, "rich")


def spooled(pages: CellPages) -> list[str]:
    """The HTML kept, read back from the spool file itself."""
    data = pages.spool.path.read_bytes()
    spans = map(pages.spool.span, pages.kept.values())
    return [data[offset : offset + length].decode() for offset, length in spans]


def test_the_cells_html_is_kept_in_a_file_not_in_memory(tmp_path: Path) -> None:
    nb = rich(tmp_path)
    (tmp_path / "spool").mkdir()
    with CellPages(tmp_path / "spool") as pages:
        assert pages.spool.path.parent == tmp_path / "spool"
        keys = pages.prepare(notebook_bytes(nb), tmp_path)
        assert set(pages.kept) == set(keys) and len(keys) == len(nb.cells)
        assert all(isinstance(place, int) for place in pages.kept.values())  # no HTML
        html = spooled(pages)
        assert 'id="Title"' in "".join(html) and "ZeroDivisionError" in "".join(html)
        assert sum(map(len, html)) == pages.spool.path.stat().st_size
        assert same(pages.page(nb, tmp_path, "rich"), nb, tmp_path, "rich")


def test_a_changed_cell_after_its_html_was_spooled(tmp_path: Path) -> None:
    nb = rich(tmp_path)
    with CellPages(tmp_path) as pages:
        pages.prepare(notebook_bytes(nb), tmp_path)
        size = pages.spool.size
        title = next(c for c in nb.cells if c.source.startswith("# Title"))
        title.source = "# Another title"
        assert same(pages.page(nb, tmp_path, "rich"), nb, tmp_path, "rich")
        assert len(pages.kept) == len(nb.cells)  # the current cells only
        assert pages.spool.size > size  # the older HTML stays in the file, unused
        assert b'id="Title"' in pages.spool.path.read_bytes()
        assert 'id="Title"' not in "".join(spooled(pages))
        assert 'id="Another-title"' in "".join(spooled(pages))


def test_unused_html_is_dropped_from_the_spool_once_it_outweighs_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbjob import report_cells

    monkeypatch.setattr(report_cells, "COMPACT_MIN", 0)
    nb = rich(tmp_path)
    printing = next(c for c in nb.cells if c.get("outputs"))
    with CellPages(tmp_path) as pages:
        files = set()
        for n in range(8):
            printing.outputs[0].text = f"{n}\n" * 200  # a cell that goes on changing
            pages.prepare(notebook_bytes(nb), tmp_path)
            files.add(pages.spool.path)
            used = sum(pages.spool.lengths[place] for place in pages.kept.values())
            assert pages.spool.size <= 2 * used
            assert pages.spool.path.stat().st_size == pages.spool.size
        assert same(pages.page(nb, tmp_path, "rich"), nb, tmp_path, "rich")
        assert len(files) > 1  # moved to a new file, the older one removed:
        assert list(tmp_path.glob("cells-*")) == [pages.spool.path]


def test_close_removes_the_spool(tmp_path: Path) -> None:
    pages = CellPages(tmp_path)
    pages.page(rich(tmp_path), tmp_path)
    assert pages.spool.path.exists() and pages.kept
    pages.close()
    assert not pages.spool.path.exists() and not pages.kept
    pages.close()  # once more: nothing to do
    assert list(tmp_path.glob("cells-*")) == []
