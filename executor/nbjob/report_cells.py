"""The report rendered cell by cell: each cell's HTML kept, so a page renders what changed.

nbconvert renders a page in one pass over every cell, so the report of a long notebook cost its
whole render at the end of the run (issue 22: ~0.3 ms a cell, seconds at 20,000 cells). Here a
page is the lab template's page with its cell loop left out (``CELLS_MARK`` where it goes) and
each cell's HTML, rendered by the same template's cell blocks (``CELLS_TEMPLATE``) and kept by
what it depends on: the cell as stored, the notebook's language and folder, and the widget state
when the cell shows a widget. The renderer child (``nbjob.renderer``), when refreshes started
one, prepares the cells of the notebook stored at checkpoints while the run goes on; the final
page then renders only the cells that are new or changed since. Without it, nbjob's process
renders a long notebook's final page here, a chunk at a time, into a file. The page is the one
``report.render`` makes, byte for byte (tested).

The notebook comes as nbjob stores it (``results.notebook_bytes``: cells first, one indent a
level; in the child, a file read as a stream, never whole nor mapped: mapped pages count in the
RSS), so each cell's text is found and hashed without parsing the notebook (``split``), and only
the cells to render are read again and parsed, a chunk at a time. Their HTML goes to a file
(``Spool``); what stays per cell is packed (places in arrays, keys 16 bytes each), so the
renderer's memory stays about the same however long the notebook.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from nbformat import NotebookNode

from nbjob import report
from nbjob.stored import notebook_bytes

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
PIECE = 1 << 18  # bytes copied from the spool at a time
SCAN = 1 << 18  # bytes of the notebook read at a time to find its cells
KEY = 16  # bytes of a cell's key (and of its text's hash)
COMPACT_MIN = 64 << 20  # bytes of HTML no cell uses any more the spool keeps at least

Source = bytes | Path  # a stored notebook: its bytes, or its file (read as a stream)
Span = tuple[int, int]  # where a text is in its file: offset, length


class CellPages:
    """Pages of one notebook as it grows; the HTML of its cells kept between pages, in a spool
    file in ``spool_dir`` (the system's temporary folder without one), removed by ``close``."""

    def __init__(self, spool_dir: Path | None = None) -> None:
        self.page_exporter = report.exporter(TEMPLATES, PAGE_TEMPLATE)
        self.cells_exporter = report.exporter(TEMPLATES, CELLS_TEMPLATE)
        self.spool = Spool(spool_dir)
        self.kept: dict[bytes, int] = {}  # a cell's key -> its HTML's place's number in the spool
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
        self, stored: Source, folder: Path | None = None, title: str | None = None
    ) -> list[bytes]:
        """Render the cells of the ``stored`` notebook not kept yet (and, with a ``title``, its
        frame); the keys of its cells, in order. Only its cells stay kept (a changed cell's
        older HTML goes from ``kept``; the spool file may hold it a while, ``Spool``)."""
        frame, keys = self._prepare(stored, folder)
        if title is not None:
            self.frame(frame, folder, title)
        return keys

    def write(
        self,
        stored: Source,
        out: IO[bytes],
        folder: Path | None = None,
        title: str = "",
        insert: str = "",
    ) -> None:
        """The page of the ``stored`` notebook, written to ``out`` a piece at a time: its frame,
        its cells' HTML kept or rendered now; ``insert`` before the page's ``</body>`` (the
        resources section: ``nbjob.report_chart``)."""
        frame, keys = self._prepare(stored, folder)
        before, after = self.frame(frame, folder, title)
        end = after.rfind("</body>") if insert else -1
        out.write(before.encode())
        self.spool.copy((self.kept[key] for key in keys), out)
        out.write((after if end < 0 else after[:end] + insert + after[end:]).encode())

    def _prepare(self, stored: Source, folder: Path | None) -> tuple[Any, list[bytes]]:
        """The cells not kept rendered; the notebook's frame and its cells' keys."""
        with stored.open("rb") if isinstance(stored, Path) else io.BytesIO(stored) as file:
            cells = split(file)
            keys = _keys(cells, folder)
            missing = array("q", (i for i, key in enumerate(keys) if key not in self.kept))
            for start in range(0, len(missing), CHUNK):
                chunk = missing[start : start + CHUNK]
                html = self._render_chunk(cells.frame, [cells.parse(i) for i in chunk], folder)
                for i, piece in zip(chunk, html, strict=True):
                    self.kept[keys[i]] = self.spool.add(piece.encode())
        self._forget(keys)
        self.kept = self.spool.compact(self.kept)
        self.spool.flush()  # the file holds what ``kept`` says
        self.rendered += len(missing)
        return cells.frame, keys

    def _forget(self, keys: list[bytes]) -> None:
        """``kept`` without the cells not in ``keys`` (changed since; in place: a dictionary
        made anew would be a second one of every cell a while)."""
        used = bytearray(len(self.spool))
        for key in keys:
            used[self.kept[key]] = 1
        if len(self.kept) > used.count(1):
            for key in [key for key, place in self.kept.items() if not used[place]]:
                del self.kept[key]

    def page(self, nb: Any, folder: Path | None = None, title: str = "") -> bytes:
        """The page of ``nb`` (a notebook node), as ``write`` writes it."""
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
    """Cells' HTML appended to one file, read back by its place's number (``add``; the places
    in arrays); the file (in ``folder``, the system's temporary folder without one) is removed
    when closed, and with the folder (the renderer's, ``Renderer.close``) if its process is
    killed. The HTML of a cell that changed stays in the file, used by no cell (disk is cheap),
    until there is more of it than of the HTML used and ``COMPACT_MIN``: then the used HTML
    moves to a new file."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self.file: IO[bytes] = tempfile.NamedTemporaryFile(  # noqa: SIM115  # closed by close
            prefix="cells-", suffix=".html", dir=folder
        )
        self.size = 0
        self.offsets, self.lengths = array("q"), array("q")  # each piece's place in the file

    def __len__(self) -> int:
        return len(self.offsets)

    def span(self, place: int) -> Span:
        return self.offsets[place], self.lengths[place]

    @property
    def path(self) -> Path:
        return Path(self.file.name)

    def add(self, html: bytes) -> int:
        """Append ``html``; its place's number."""
        self.file.write(html)
        self.offsets.append(self.size)
        self.lengths.append(len(html))
        self.size += len(html)
        return len(self.offsets) - 1

    def flush(self) -> None:
        self.file.flush()

    def read(self, places: Iterable[int]) -> Iterator[bytes]:
        """The HTML at ``places``, in order, ``PIECE`` bytes at most at a time (the HTML of the
        cells rendered together is read together)."""
        self.file.flush()
        fd = self.file.fileno()
        for offset, length in _runs(map(self.span, places)):
            end = offset + length
            while offset < end:
                piece = os.pread(fd, min(PIECE, end - offset), offset)
                if not piece:
                    raise OSError(f"the spool {self.path} ends before its HTML")
                yield piece
                offset += len(piece)

    def copy(self, places: Iterable[int], out: IO[bytes]) -> None:
        """The HTML at ``places`` written to ``out``, in order."""
        for piece in self.read(places):
            out.write(piece)

    def compact(self, kept: dict[bytes, int]) -> dict[bytes, int]:
        """``kept`` as is, or, when the HTML no cell uses outweighs the rest (and
        ``COMPACT_MIN``), moved to a new file: the places it has there."""
        used = sum(self.lengths[place] for place in kept.values())
        if self.size - used <= max(used, COMPACT_MIN):
            return kept
        fresh = Spool(self.folder)
        try:
            by_place = sorted(kept.items(), key=lambda item: self.offsets[item[1]])
            moved = {key: fresh.add(b"".join(self.read([place]))) for key, place in by_place}
        except BaseException:
            fresh.close()
            raise
        self.file.close()
        self.file, self.size = fresh.file, fresh.size
        self.offsets, self.lengths = fresh.offsets, fresh.lengths
        return moved

    def close(self) -> None:
        self.file.close()


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
    """The cells of a stored notebook: where each one's JSON text starts and ends in ``file``
    (read again only for the cells parsed), the hash of each one's text (``KEY`` bytes each)
    and whether it shows a widget view (1 or 0); the notebook without its cells (parsed)."""

    file: IO[bytes]
    frame: Any = None
    starts: array[int] = field(default_factory=lambda: array("q"))
    ends: array[int] = field(default_factory=lambda: array("q"))
    hashes: bytearray = field(default_factory=bytearray)
    views: bytearray = field(default_factory=bytearray)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> bytes:
        self.file.seek(self.starts[i])
        return self.file.read(self.ends[i] - self.starts[i])

    def __iter__(self) -> Iterator[bytes]:
        return (self[i] for i in range(len(self)))

    def parse(self, i: int) -> Any:
        return json.loads(self[i], object_hook=NotebookNode)

    def add(self, start: int, end: int, text: _Hashing) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.hashes += text.hash.digest()
        self.views.append(text.view)


class _Hashing:
    """A cell's text hashed as it is read, a piece at a time; whether it shows a widget view."""

    def __init__(self) -> None:
        self.hash = hashlib.blake2b(digest_size=KEY)
        self.view = False
        self._tail = b""  # the end of the text so far: a view's name across two pieces

    def feed(self, data: bytes, start: int, stop: int) -> None:
        self.hash.update(memoryview(data)[start:stop])
        if not self.view:
            near = self._tail + data[start : min(stop, start + len(_VIEW))]
            self.view = _VIEW in near or data.find(_VIEW, start, stop) >= 0
            self._tail = (self._tail + data[max(start, stop - len(_VIEW)) : stop])[-len(_VIEW) :]


_HEAD = b'{\n "cells": [\n'
_EMPTY = b'{\n "cells": [],\n'
_CELLS_END = b"\n ],\n"
_BETWEEN = b"\n  },\n"  # a cell's last line, then the next cell's first: "  {"
_CELL_END = len(b"\n  }")
_VIEW = WIDGET_VIEW.encode()


def split(stored: bytes | IO[bytes]) -> Cells:
    """Where each cell's JSON text is, and the notebook without its cells (parsed), of a
    notebook as nbjob stores it, read from the start as a stream (``SCAN`` bytes at a time);
    any other layout is parsed whole."""
    file = io.BytesIO(stored) if isinstance(stored, bytes) else stored
    data = file.read(max(SCAN, len(_EMPTY)))  # the head whole
    cells = Cells(file)
    if data.startswith(_EMPTY):
        cells.frame = _frame(b"{" + data[len(_EMPTY) :] + file.read())
        return cells
    if data.startswith(_HEAD) and _scan(file, data, cells):
        return cells
    return _parsed(file)


def _scan(file: IO[bytes], data: bytes, cells: Cells) -> bool:
    """``cells`` found in ``file`` (``data``: its start, read) and their frame parsed; False
    if the cells' list has no end."""
    base, at = 0, len(_HEAD)  # ``data`` is at ``base`` in the file; read up to ``at``
    start, text = at, _Hashing()  # the cell being read
    while True:
        end = data.find(_CELLS_END, at)
        while (cut := data.find(_BETWEEN, at, len(data) if end < 0 else end)) >= 0:
            text.feed(data, at, cut + _CELL_END)
            cells.add(start, base + cut + _CELL_END, text)
            at = cut + len(_BETWEEN)
            start, text = base + at, _Hashing()
        if end >= 0:
            text.feed(data, at, end)
            cells.add(start, base + end, text)
            cells.frame = _frame(b"{" + data[end + len(_CELLS_END) :] + file.read())
            return True
        more = file.read(SCAN)
        if not more:
            return False
        keep = max(at, len(data) - len(_BETWEEN) + 1)  # a mark may go on in ``more``
        text.feed(data, at, keep)
        base, data, at = base + keep, data[keep:] + more, 0


def _parsed(file: IO[bytes]) -> Cells:
    """A notebook in another layout: parsed whole, each cell's text as nbjob stores it alone."""
    file.seek(0)
    nb = json.load(file, object_hook=NotebookNode)
    texts = [notebook_bytes(c) for c in nb.pop("cells", [])]
    nb["cells"] = []
    cells, at = Cells(io.BytesIO(b"".join(texts)), nb), 0
    for piece in texts:
        (text := _Hashing()).feed(piece, 0, len(piece))
        cells.add(at, at + len(piece), text)
        at += len(piece)
    return cells


def _frame(text: bytes) -> Any:
    """The notebook without its cells, from its JSON text after the cells."""
    frame = json.loads(text, object_hook=NotebookNode)
    frame["cells"] = []
    return frame


def _keys(cells: Cells, folder: Path | None) -> list[bytes]:
    """Each cell's key: the hash of its text as stored, and what else its HTML depends on."""
    metadata = cells.frame.metadata
    context = json.dumps([metadata.get("language_info"), str(folder or "")], sort_keys=True)
    widgets = json.dumps(metadata.get("widgets"), sort_keys=True).encode()
    keys = []
    for i in range(len(cells)):
        digest = hashlib.blake2b(context.encode(), digest_size=KEY)
        digest.update(cells.hashes[i * KEY : (i + 1) * KEY])
        if cells.views[i]:
            digest.update(widgets)
        keys.append(digest.digest())
    return keys
