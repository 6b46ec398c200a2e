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
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from nbjob import report

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

    def prepare(self, nb: Any, folder: Path | None = None) -> list[bytes]:
        """Render the cells of ``nb`` not kept yet; the keys of its cells, in order. Only the
        cells of ``nb`` stay kept (a changed cell's older HTML goes)."""
        keys = self._keys(nb, folder)
        missing = [i for i, key in enumerate(keys) if key not in self.kept]
        rendered = self._render(nb, missing, folder)
        fresh = dict(zip((keys[i] for i in missing), rendered, strict=True))
        self.kept = {key: self.kept[key] if key in self.kept else fresh[key] for key in keys}
        self.rendered += len(missing)
        return keys

    def page(self, nb: Any, folder: Path | None = None, title: str = "") -> bytes:
        """The page of ``nb``: its frame rendered, its cells' HTML kept or rendered now."""
        keys = self.prepare(nb, folder)
        before, after = self.frame(nb, folder, title)
        return "".join([before, *(self.kept[key] for key in keys), after]).encode("utf-8")

    def frame(self, nb: Any, folder: Path | None = None, title: str = "") -> tuple[str, str]:
        """The page of ``nb`` before and after its cells, kept while the notebook's metadata
        (its language, the widget state), folder and title stay the same."""
        meta = json.dumps([nb.get("metadata", {}), str(folder or ""), title], sort_keys=True)
        key = hashlib.blake2b(meta.encode(), digest_size=16).digest()
        if key != self._frame[0]:
            html = report.render(_without_cells(nb), folder, title, self.page_exporter)
            before, _, after = html.decode("utf-8").partition(CELLS_MARK)
            self._frame = (key, before, after)
        return self._frame[1], self._frame[2]

    def _render(self, nb: Any, indexes: list[int], folder: Path | None) -> list[str]:
        """The HTML of the cells at ``indexes``, rendered ``CHUNK`` cells a pass (nbconvert
        copies what it renders: the memory a pass takes stays small)."""
        html: list[str] = []
        for start in range(0, len(indexes), CHUNK):
            html += self._render_chunk(nb, indexes[start : start + CHUNK], folder)
        return html

    def _render_chunk(self, nb: Any, indexes: list[int], folder: Path | None) -> list[str]:
        part = _without_cells(nb)
        part.cells = [nb.cells[i] for i in indexes]
        html = report.render(part, folder, "", self.cells_exporter).decode("utf-8")
        cells, end, _ = html.partition(END_MARK)
        pieces = cells.split(CELL_MARK)
        if not end or len(pieces) != len(indexes) + 1 or pieces[0].strip():
            raise ValueError("the cell template rendered something other than the cells")
        return pieces[1:]

    @staticmethod
    def _keys(nb: Any, folder: Path | None) -> list[bytes]:
        """Each cell's key: the cell as stored, and what else its HTML depends on."""
        meta = nb.get("metadata", {})
        context = json.dumps([meta.get("language_info"), str(folder or "")], sort_keys=True)
        widgets: str | None = None
        keys = []
        for cell in nb.cells:
            text = json.dumps(cell, sort_keys=True)
            if WIDGET_VIEW in text:
                widgets = widgets or json.dumps(meta.get("widgets"), sort_keys=True)
                text += widgets
            keys.append(hashlib.blake2b((context + text).encode(), digest_size=16).digest())
        return keys


def _without_cells(nb: Any) -> Any:
    """A shallow copy of ``nb`` without its cells (nbconvert copies what it renders)."""
    frame = copy.copy(nb)
    frame["cells"] = []
    return frame
