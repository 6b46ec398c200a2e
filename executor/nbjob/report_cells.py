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
level; in the child, the notebook file mapped in memory), so each cell's text is found without
parsing or copying the notebook (``split``: where each cell starts and ends), its key is the hash
of that text, and only the cells to render are parsed, a chunk at a time. Their HTML goes to a
file (``Spool``: only each cell's place in it stays in memory), so the child's memory stays about
the same however long the notebook.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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
CHUNK = 200  # cells parsed and rendered in one pass
PIECE = 1 << 20  # bytes copied from the spool at a time
COMPACT_MIN = 64 << 20  # bytes of HTML no cell uses any more the spool keeps at least

Text = bytes | mmap.mmap  # a stored notebook: its bytes, or its file mapped in memory
Span = tuple[int, int]  # where a cell's HTML is in the spool: offset, length


class CellPages:
    """Pages of one notebook as it grows; the HTML of its cells kept between pages, in a spool
    file in ``spool_dir`` (the system's temporary folder without one), removed by ``close``."""

    def __init__(self, spool_dir: Path | None = None) -> None:
        self.page_exporter = report.exporter(TEMPLATES, PAGE_TEMPLATE)
        self.cells_exporter = report.exporter(TEMPLATES, CELLS_TEMPLATE)
        self.spool = Spool(spool_dir)
        self.kept: dict[bytes, Span] = {}  # a cell's key -> its HTML's place in the spool
        self._frame: tuple[bytes, str, str] = (b"", "", "")  # key, the page around the cells
        self.rendered = 0  # cells rendered (not found kept), for the tests and the log

    def __enter__(self) -> CellPages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the spool (the HTML kept goes with it)."""
        self.spool.close()
        self.kept = {}

    def prepare(
        self, stored: Text, folder: Path | None = None, title: str | None = None
    ) -> list[bytes]:
        """Render the cells of the ``stored`` notebook not kept yet (and, with a ``title``, its
        frame); the keys of its cells, in order. Only its cells stay kept (a changed cell's
        older HTML goes from ``kept``; the spool file may hold it a while, ``Spool``)."""
        cells = split(stored)
        keys = self._prepare(cells, folder)
        if title is not None:
            self.frame(cells.frame, folder, title)
        return keys

    def write(
        self,
        stored: Text,
        out: IO[bytes],
        folder: Path | None = None,
        title: str = "",
        insert: str = "",
    ) -> None:
        """The page of the ``stored`` notebook, written to ``out`` a piece at a time: its frame,
        its cells' HTML kept or rendered now; ``insert`` before the page's ``</body>`` (the
        resources section: ``nbjob.report_chart``)."""
        cells = split(stored)
        keys = self._prepare(cells, folder)
        before, after = self.frame(cells.frame, folder, title)
        end = after.rfind("</body>") if insert else -1
        out.write(before.encode())
        self.spool.copy((self.kept[key] for key in keys), out)
        out.write((after if end < 0 else after[:end] + insert + after[end:]).encode())

    def _prepare(self, cells: Cells, folder: Path | None) -> list[bytes]:
        keys = _keys(cells, folder)
        missing = [i for i, key in enumerate(keys) if key not in self.kept]
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start : start + CHUNK]
            html = self._render_chunk(cells.frame, [cells.parse(i) for i in chunk], folder)
            for i, piece in zip(chunk, html, strict=True):
                self.kept[keys[i]] = self.spool.add(piece.encode())
        self.kept = self.spool.compact({key: self.kept[key] for key in keys})
        self.spool.flush()  # the file holds what ``kept`` says
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

    def _render_chunk(self, frame: Any, cells: list[Any], folder: Path | None) -> list[str]:
        """The HTML of ``cells``, ``CHUNK`` of them at most (nbconvert copies what it renders:
        the memory a pass takes stays small)."""
        part = NotebookNode(frame)
        part.cells = cells
        html = report.render(part, folder, "", self.cells_exporter).decode("utf-8")
        body, end, _ = html.partition(END_MARK)
        pieces = body.split(CELL_MARK)
        if not end or len(pieces) != len(cells) + 1 or pieces[0].strip():
            raise ValueError("the cell template rendered something other than the cells")
        return pieces[1:]


class Spool:
    """Cells' HTML appended to one file, read back by its place (``Span``); the file (in
    ``folder``, the system's temporary folder without one) is removed when closed, and with
    the folder (the renderer's, ``Renderer.close``) if its process is killed. The HTML of a
    cell that changed stays in the file, used by no cell (disk is cheap), until there is more
    of it than of the HTML used and ``COMPACT_MIN``: then the used HTML moves to a new file."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self.file: IO[bytes] = tempfile.NamedTemporaryFile(  # noqa: SIM115  # closed by close
            prefix="cells-", suffix=".html", dir=folder
        )
        self.size = 0

    @property
    def path(self) -> Path:
        return Path(self.file.name)

    def add(self, html: bytes) -> Span:
        """Append ``html``; its place."""
        self.file.write(html)
        span = (self.size, len(html))
        self.size += len(html)
        return span

    def flush(self) -> None:
        self.file.flush()

    def read(self, spans: Iterable[Span]) -> Iterator[bytes]:
        """The HTML at ``spans``, in order, ``PIECE`` bytes at most at a time (the HTML of the
        cells rendered together is read together)."""
        self.file.flush()
        fd = self.file.fileno()
        for offset, length in _runs(spans):
            end = offset + length
            while offset < end:
                piece = os.pread(fd, min(PIECE, end - offset), offset)
                if not piece:
                    raise OSError(f"the spool {self.path} ends before its HTML")
                yield piece
                offset += len(piece)

    def copy(self, spans: Iterable[Span], out: IO[bytes]) -> None:
        """The HTML at ``spans`` written to ``out``, in order."""
        for piece in self.read(spans):
            out.write(piece)

    def compact(self, kept: dict[bytes, Span]) -> dict[bytes, Span]:
        """``kept`` as is, or, when the HTML no cell uses outweighs the rest (and
        ``COMPACT_MIN``), moved to a new file: the places it has there."""
        used = sum(length for _, length in kept.values())
        if self.size - used <= max(used, COMPACT_MIN):
            return kept
        fresh = Spool(self.folder)
        try:
            moved = {k: fresh.add(b"".join(self.read([s]))) for k, s in _by_place(kept)}
        except BaseException:
            fresh.close()
            raise
        self.file.close()
        self.file, self.size = fresh.file, fresh.size
        return moved

    def close(self) -> None:
        self.file.close()


def _by_place(kept: dict[bytes, Span]) -> list[tuple[bytes, Span]]:
    return sorted(kept.items(), key=lambda item: item[1])


def _runs(spans: Iterable[Span]) -> Iterator[Span]:
    """``spans``, those that follow each other in the file joined (one read for them)."""
    start = end = 0
    for offset, length in spans:
        if offset != end:
            if end > start:
                yield start, end - start
            start = offset
        end = offset + length
    if end > start:
        yield start, end - start


@dataclass
class Cells:
    """The cells of a stored notebook: where each one's JSON text starts and ends in ``text``;
    the notebook without its cells (parsed)."""

    text: Text
    starts: array[int]
    ends: array[int]
    frame: Any

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> bytes:
        return self.text[self.starts[i] : self.ends[i]]

    def __iter__(self) -> Iterator[bytes]:
        return (self[i] for i in range(len(self)))

    def parse(self, i: int) -> Any:
        return json.loads(self[i], object_hook=NotebookNode)


_HEAD = b'{\n "cells": [\n'
_EMPTY = b'{\n "cells": [],\n'
_CELLS_END = b"\n ],\n"
_BETWEEN = b"\n  },\n"  # a cell's last line, then the next cell's first: "  {"
_CELL_END = len(b"\n  }")


def split(stored: Text) -> Cells:
    """Where each cell's JSON text is, and the notebook without its cells (parsed), of a
    notebook as nbjob stores it (nothing copied but the text after the cells); any other
    layout is parsed whole."""
    if stored[: len(_EMPTY)] == _EMPTY:
        return Cells(stored, array("q"), array("q"), _frame(b"{" + stored[len(_EMPTY) :]))
    end = stored.find(_CELLS_END)
    if stored[: len(_HEAD)] != _HEAD or end < 0:
        return _parsed(stored)
    starts, ends = array("q"), array("q")
    start = len(_HEAD)
    while (cut := stored.find(_BETWEEN, start, end)) >= 0:
        starts.append(start)
        ends.append(cut + _CELL_END)
        start = cut + len(_BETWEEN)
    starts.append(start)
    ends.append(end)
    return Cells(stored, starts, ends, _frame(b"{" + stored[end + len(_CELLS_END) :]))


def _parsed(stored: Text) -> Cells:
    """A notebook in another layout: parsed whole, each cell's text as nbjob stores it alone."""
    nb = json.loads(stored[:], object_hook=NotebookNode)
    texts = [notebook_bytes(c) for c in nb.pop("cells", [])]
    nb["cells"] = []
    starts, ends, at = array("q"), array("q"), 0
    for text in texts:
        starts.append(at)
        at += len(text)
        ends.append(at)
    return Cells(b"".join(texts), starts, ends, nb)


def _frame(text: bytes) -> Any:
    """The notebook without its cells, from its JSON text after the cells."""
    frame = json.loads(text, object_hook=NotebookNode)
    frame["cells"] = []
    return frame


def _keys(cells: Cells, folder: Path | None) -> list[bytes]:
    """Each cell's key: its text as stored, and what else its HTML depends on."""
    metadata = cells.frame.metadata
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
