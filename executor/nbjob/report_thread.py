"""The report rendered in nbjob's own process (``InProcess``), the default.

Off the run's critical path all the same: the renderer imported and its templates compiled on
a thread while the kernel starts, the final page rendered on a thread while the results are
stored and the kernel shuts down; a notebook of many cells a chunk of cells at a time, into a
file (``report.by_chunks``). The pages are nbconvert's lab template rendered by
``nbjob.report_page``, without importing nbconvert: in-process they cost a few MiB, less than a
second Python process would. A run whose report is refreshed renders in a child process
instead (``nbjob.renderer``).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from nbjob.stop import Budget, Worker

WARM_SWITCH_S = 0.0005  # the GIL switch interval while nbconvert is imported on a thread


class InProcess:
    """The report rendered in nbjob's own process, off the run's critical path all the same:
    the renderer imported and its templates compiled on a thread while the kernel starts
    (``warm``), the final page rendered on a thread while the results are stored and the kernel
    shuts down (``submit``, then ``page``). A notebook of many cells is rendered from its stored
    JSON a chunk of cells at a time (``nbjob.report_cells``), its cells' HTML spooled to a file
    in ``folder``, so the page costs about the same memory however long the notebook."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._warm: threading.Thread | None = None
        self._exporter: Any = None
        self._render: Worker[bytes | Path] | None = None

    def warm(self, metadata: dict[str, Any] | None = None) -> None:
        """Import and compile on a thread (once); ``submit`` waits for it. ``metadata``: the
        notebook's (its kernelspec and language), so that the warm-up's page loads the same
        lexer and highlighting the final page uses."""
        if self._warm is None:
            target = functools.partial(self._warm_up, metadata or {})
            self._warm = threading.Thread(target=target, name="report warm-up", daemon=True)
            self._warm.start()

    def _warm_up(self, metadata: dict[str, Any]) -> None:
        """Meanwhile the main thread ends the start and waits on the kernel's sockets; it gets
        the GIL back within ``WARM_SWITCH_S`` of a message instead of Python's 5 ms switch
        interval, which a start's dozen messages (the handshake, the first cells) would pay."""

        from nbjob import report

        previous = sys.getswitchinterval()
        sys.setswitchinterval(min(previous, WARM_SWITCH_S))
        try:
            with contextlib.suppress(Exception):  # a failure shows when the page is rendered
                self._exporter = report.exporter()
                report.render(_warm_notebook(metadata), None, "", self._exporter)
        finally:
            sys.setswitchinterval(previous)

    @property
    def asked(self) -> bool:
        return self._render is not None

    def submit(
        self,
        nb: Any,
        folder: Path | None,
        title: str,
        stored: bytes | None = None,
        insert: str = "",
    ) -> None:
        """Render ``nb`` (as stored: masked; not changed from now on) on a thread; from
        ``stored`` (its stored JSON) a chunk of cells at a time when given, into a file in
        ``folder`` (its page never whole in memory), ``insert`` (the resources section) put
        before its ``</body>`` as it is written."""
        from nbjob import report

        def render() -> bytes | Path:
            if self._warm is not None:
                self._warm.join()
            if stored is None:
                return report.render(nb, folder, title, self._exporter)
            return self._by_chunks(stored, folder, title, insert)

        self._render = Worker(render, "the report")

    def _by_chunks(self, stored: bytes, folder: Path | None, title: str, insert: str) -> Path:
        from nbjob.report_cells import CellPages

        spool = self.folder or Path(tempfile.gettempdir())
        spool.mkdir(parents=True, exist_ok=True)
        page = spool / "page.html"
        with CellPages(spool) as pages, page.open("wb") as out:
            pages.write(stored, out, folder, title, insert)
        return page

    def page(self, budget: Budget) -> tuple[bytes | Path | None, str | None]:
        """The page submitted (its bytes, or its file), waited for within ``budget``, or why
        there is none."""
        if self._render is None:
            return None, "no page was asked for"
        done = self._render.within(budget)
        if done.late:
            return None, "not finished in the time left"
        if done.error is not None:
            return None, f"{type(done.error).__name__}: {str(done.error)[:300]}"
        return done.value, None


def _warm_notebook(metadata: dict[str, Any]) -> Any:
    """A markdown cell and a code cell with an output, in the run notebook's language: what
    the warm-up renders, so the final page finds its lexer and filters loaded."""
    from nbformat import v4

    keep = {k: metadata[k] for k in ("kernelspec", "language_info") if k in metadata}
    output = v4.new_output("stream", name="stdout", text="1\n")
    cells = [v4.new_markdown_cell("*x*"), v4.new_code_cell("x = 1", outputs=[output])]
    return v4.new_notebook(cells=cells, metadata=keep)
