"""The report rendered cell by cell: each cell's HTML kept, so a page renders what changed.

nbconvert renders a page in one pass over every cell, so the report of a long notebook cost its
whole render at the end of the run (issue 22: ~0.3 ms a cell, seconds at 20,000 cells). Here a
page is the lab template's page with its cell loop left out (``CELLS_MARK`` where it goes) and
each cell's HTML, rendered by the same template's cell blocks (``CELLS_TEMPLATE``) and kept by
what it depends on: the cell as stored, the notebook's language and folder, and the widget state
when the cell shows a widget. The renderer child (``nbjob.renderer``) prepares the cells of the
notebook stored at checkpoints while the run goes on; the final page then renders only the cells
that are new or changed since. The page is the one ``report.render`` makes, byte for byte
(tested).

The notebook comes as nbjob stores it (``results.notebook_bytes``: cells first, one indent a
level), so each cell's text is found without parsing the notebook (``split``), its key is the
hash of that text, and only the cells to render are parsed: the child's memory grows with the
HTML it keeps, not with a parsed copy of a long notebook.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import IO, Any

from nbformat import NotebookNode

from nbjob import report
from nbjob.results import notebook_bytes

PAGE_TEMPLATE = "nbjob-page.html.j2"
CELLS_TEMPLATE = "nbjob-cells.html.j2"
CELLS_MARK = "<!--nbjob:cells-->"
CELL_MARK = "<!--nbjob:cell-->"
END_MARK = "<!--nbjob:end-->"
TEMPLATES = {
    PAGE_TEMPLATE: (
        "{%- extends 'index.html.j2' -%}\n"
        "{%- block body_loop -%}" + CELLS_MARK + "{%- endblock body_loop -%}\n"
    ),
    CELLS_TEMPLATE: (
        "{%- extends 'base.html.j2' -%}\n"
        "{%- block any_cell scoped -%}" + CELL_MARK + "{{ super() }}{%- endblock any_cell -%}\n"
        "{%- block body_footer -%}" + END_MARK + "{%- endblock body_footer -%}\n"
    ),
}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CHUNK = 200  # cells rendered in one pass


class CellPages:
    """Pages of one notebook as it grows; the HTML of its cells kept between pages."""

    def __init__(self) -> None:
        self.page_exporter = report.exporter(TEMPLATES, PAGE_TEMPLATE)
        self.cells_exporter = report.exporter(TEMPLATES, CELLS_TEMPLATE)
        self.kept: dict[bytes, str] = {}  # a cell's key -> its HTML
        self._frame: tuple[bytes, str, str] = (b"", "", "")  # key, the page around the cells
        self.rendered = 0  # cells rendered (not found kept), for the tests and the log

    def prepare(
        self, stored: bytes, folder: Path | None = None, title: str | None = None
    ) -> list[bytes]:
        """Render the cells of the ``stored`` notebook not kept yet (and, with a ``title``, its
        frame); the keys of its cells, in order. Only its cells stay kept (a changed cell's
        older HTML goes)."""
        cells, frame = split(stored)
        keys = self._prepare(cells, frame, folder)
        if title is not None:
            self.frame(frame, folder, title)
        return keys

    def write(
        self, stored: bytes, out: IO[bytes], folder: Path | None = None, title: str = ""
    ) -> None:
        """The page of the ``stored`` notebook, written to ``out`` a piece at a time: its frame,
        its cells' HTML kept or rendered now."""
        cells, frame = split(stored)
        keys = self._prepare(cells, frame, folder)
        before, after = self.frame(frame, folder, title)
        out.write(before.encode())
        for key in keys:
            out.write(self.kept[key].encode())
        out.write(after.encode())

    def _prepare(self, cells: list[bytes], frame: Any, folder: Path | None) -> list[bytes]:
        keys = _keys(cells, frame.metadata, folder)
        missing = [i for i, key in enumerate(keys) if key not in self.kept]
        to_render = [json.loads(cells[i], object_hook=NotebookNode) for i in missing]
        rendered = self._render(frame, to_render, folder)
        fresh = dict(zip((keys[i] for i in missing), rendered, strict=True))
        self.kept = {key: self.kept[key] if key in self.kept else fresh[key] for key in keys}
        self.rendered += len(missing)
        return keys

    def page(self, nb: Any, folder: Path | None = None, title: str = "") -> bytes:
        """The page of ``nb`` (a notebook node), as ``write`` writes it."""
        import io

        out = io.BytesIO()
        self.write(notebook_bytes(nb), out, folder, title)
        return out.getvalue()

    def frame(self, nb: Any, folder: Path | None = None, title: str = "") -> tuple[str, str]:
        """The page of ``nb`` (its cells left out) before and after its cells, kept while the
        notebook's metadata (its language, the widget state), folder and title stay the same."""
        meta = json.dumps([nb.get("metadata", {}), str(folder or ""), title], sort_keys=True)
        key = hashlib.blake2b(meta.encode(), digest_size=16).digest()
        if key != self._frame[0]:
            html = report.render(nb, folder, title, self.page_exporter)
            before, _, after = html.decode("utf-8").partition(CELLS_MARK)
            self._frame = (key, before, after)
        return self._frame[1], self._frame[2]

    def _render(self, frame: Any, cells: list[Any], folder: Path | None) -> list[str]:
        """The HTML of ``cells``, rendered ``CHUNK`` cells a pass (nbconvert copies what it
        renders: the memory a pass takes stays small)."""
        html: list[str] = []
        for start in range(0, len(cells), CHUNK):
            html += self._render_chunk(frame, cells[start : start + CHUNK], folder)
        return html

    def _render_chunk(self, frame: Any, cells: list[Any], folder: Path | None) -> list[str]:
        part = NotebookNode(frame)
        part.cells = cells
        html = report.render(part, folder, "", self.cells_exporter).decode("utf-8")
        body, end, _ = html.partition(END_MARK)
        pieces = body.split(CELL_MARK)
        if not end or len(pieces) != len(cells) + 1 or pieces[0].strip():
            raise ValueError("the cell template rendered something other than the cells")
        return pieces[1:]


_HEAD = b'{\n "cells": [\n'
_EMPTY = b'{\n "cells": [],\n'
_CELLS_END = b"\n ],\n"
_BETWEEN = b"\n  },\n"  # a cell's last line, then the next cell's first: "  {"


def split(stored: bytes) -> tuple[list[bytes], Any]:
    """Each cell's JSON text, and the notebook without its cells (parsed), of a notebook as
    nbjob stores it; any other layout is parsed whole."""
    if stored.startswith(_EMPTY):
        return [], _frame(b"{" + stored[len(_EMPTY) :])
    end = stored.find(_CELLS_END)
    if not stored.startswith(_HEAD) or end < 0:
        nb = json.loads(stored, object_hook=NotebookNode)
        cells = [notebook_bytes(c) for c in nb.pop("cells", [])]
        nb["cells"] = []
        return cells, nb
    parts = stored[len(_HEAD) : end].split(_BETWEEN)
    cells = [part + b"\n  }" for part in parts[:-1]] + parts[-1:]
    return cells, _frame(b"{" + stored[end + len(_CELLS_END) :])


def _frame(text: bytes) -> Any:
    """The notebook without its cells, from its JSON text after the cells."""
    frame = json.loads(text, object_hook=NotebookNode)
    frame["cells"] = []
    return frame


def _keys(cells: list[bytes], metadata: Any, folder: Path | None) -> list[bytes]:
    """Each cell's key: its text as stored, and what else its HTML depends on."""
    context = json.dumps([metadata.get("language_info"), str(folder or "")], sort_keys=True)
    widgets = json.dumps(metadata.get("widgets"), sort_keys=True).encode()
    view = WIDGET_VIEW.encode()
    keys = []
    for text in cells:
        digest = hashlib.blake2b(context.encode(), digest_size=16)
        digest.update(text)
        if view in text:
            digest.update(widgets)
        keys.append(digest.digest())
    return keys
