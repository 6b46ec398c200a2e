"""The report's renderer child (``Renderer``), started by a run whose report is refreshed.

By default the page is rendered in nbjob's own process, off the run's critical path all the
same (``nbjob.report_thread.InProcess``). A run whose report is refreshed
(``--report-interval``) starts the child at its first refresh
(``Renderer.start``): the child (``python -m nbjob.renderer``, at the lowest priority: only the
CPU nbjob and the kernel leave) compiles the templates, renders the cells of the notebook
stored at checkpoints ahead (``Renderer.prepare``, ``nbjob.report_cells``) and fresher pages now
and then. At the end the notebook, as stored (masked), is handed to it before the final write
(``Renderer.submit``), so the page is rendered while the results are stored and the kernel
shuts down, not after (issue 22); ``Renderer.page`` waits for it within the report's budget.

The protocol is one line each way: a request on the child's stdin (JSON: the notebook file to
read, the page file to write, the notebook's folder and title), an answer on its stdout
(``{"ok": true, "seconds": the render's CPU seconds}`` or ``{"error": "..."}``). The child
ignores the stop signals (nbjob ends it by its PID, ``Renderer.close``) and ends by itself when
its stdin closes (nbjob is gone).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from nbjob import imports, memory
from nbjob.stop import DEFAULT_SIGNALS, Budget

NICE = 19  # the child's niceness: the CPU the kernel and nbjob leave (it catches up at the end)
POLL_S = 0.05


class Renderer:
    """The renderer child of one run; its files go to ``folder`` (the notebooks and pages
    removed as they are read, the child's spool of cells' HTML when it ends)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None
        self.failed: str | None = None  # why there is no child (it could not start, it ended)
        self._answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self._page: Path | None = None  # the page being rendered (None: idle)
        self._preparing = 0  # notebooks handed to prepare, not answered yet
        self.prepared = 0  # notebooks handed to prepare (for the log)
        self._count = 0
        self._asked = 0.0
        self.renders = 0  # pages rendered (for the log)
        self.busy_s = 0.0  # seconds pages took, request to answer
        self.last_s = 0.0  # seconds the last page took to render (not waiting for the child)

    def start(self) -> bool:
        """Start the child (once); whether it is running."""
        if self.proc is not None or self.failed is not None:
            return self.proc is not None and self.failed is None
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nbjob.renderer"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=self.folder,
                env=env,
            )
        except OSError as exc:
            self.failed = f"the renderer did not start: {exc.strerror or exc}"
            return False
        assert self.proc.stdout is not None
        reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        reader.start()
        return True

    def _read(self, out: IO[bytes]) -> None:
        for line in out:
            try:
                self._answers.put(json.loads(line))
            except ValueError:
                continue
        self._answers.put({"error": "the renderer ended", "gone": True})

    @property
    def running(self) -> bool:
        """Started, and neither failed nor ended."""
        return self.proc is not None and self.failed is None and self.proc.poll() is None

    @property
    def idle(self) -> bool:
        """Running and rendering nothing (an answer that came is collected first)."""
        self._collect()
        return self._page is None and not self._preparing and self._taking

    @property
    def _taking(self) -> bool:
        return self.failed is None and self.proc is not None

    def submit(self, notebook: bytes, folder: Path | None, title: str, insert: str = "") -> bool:
        """Ask for the page of ``notebook`` (the stored JSON), after a preparation under way,
        ``insert`` before its ``</body>``; False when a page is being rendered or the child is
        not running."""
        self._collect()
        if self._page is not None or not self._taking:
            return False
        self._count += 1
        source = self.folder / f"report-{self._count}.ipynb"
        page = source.with_suffix(".html")
        request = {"notebook": str(source), "page": str(page), "title": title, "folder": None}
        if folder is not None:
            request["folder"] = str(folder)
        if insert:
            request["insert"] = insert
        if not self._send(source, notebook, request):
            return False
        self._page, self._asked = page, time.monotonic()
        return True

    def prepare(self, notebook: bytes, folder: Path | None, title: str) -> bool:
        """Hand ``notebook`` (the stored JSON, at a checkpoint) to the child to render its
        cells ahead of the page (``nbjob.report_cells``); False when busy or not running."""
        if not self.idle:
            return False
        self._count += 1
        source = self.folder / f"cells-{self._count}.ipynb"
        request = {"notebook": str(source), "page": None, "title": title, "folder": None}
        if folder is not None:
            request["folder"] = str(folder)
        if not self._send(source, notebook, request):
            return False
        self._preparing += 1
        self.prepared += 1
        return True

    def _send(self, source: Path, notebook: bytes, request: dict[str, Any]) -> bool:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            source.write_bytes(notebook)
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            self._gone(f"the renderer could not be asked: {exc.strerror or exc}")
            return False
        return True

    def ready_page_waiting(self) -> bool:
        """Whether the answer for the page asked for came (``ready`` takes it)."""
        return self._page is not None and not self._answers.empty()

    def ready(self) -> tuple[bytes | None, str | None] | None:
        """The page asked for, or why there is none, if its answer came; None while it renders
        (or when nothing was asked)."""
        if self._page is None:
            return None
        answer = self._answer(0.0)
        return None if answer is None else self._take(answer)

    def page(self, budget: Budget) -> tuple[bytes | None, str | None]:
        """The page asked for, waited for within ``budget``, or why there is none."""
        while self._page is not None:
            left = budget.left()
            if left <= 0:
                return None, "not finished in the time left"
            answer = self._answer(min(POLL_S, left))
            if answer is not None:
                return self._take(answer)
        return None, self.failed or "no page was asked for"

    def _answer(self, wait: float) -> dict[str, Any] | None:
        """The page's answer within ``wait`` s, the preparations' answers before it taken."""
        while True:
            try:
                answer = self._answers.get(timeout=wait) if wait else self._answers.get_nowait()
            except queue.Empty:
                return None
            if answer.get("gone"):
                self._preparing = 0
                if self._page is None:
                    self._gone(self._ended())
                    return None
                return answer
            if not self._preparing:
                return answer
            self._preparing -= 1  # a preparation's: nothing to take

    def _collect(self) -> None:
        """Preparations' answers taken; an answer that came for a page nobody waits for any
        more: dropped."""
        while self._preparing and not self._answers.empty():
            if self._page is None:
                self._answer(0.0)
            else:  # the page's comes after the preparations asked before it
                break
        if self._page is not None and not self._preparing and not self._answers.empty():
            self._take(self._answers.get_nowait())

    def _take(self, answer: dict[str, Any]) -> tuple[bytes | None, str | None]:
        page, self._page = self._page, None
        assert page is not None
        waited = time.monotonic() - self._asked
        self.last_s = float(answer.get("seconds", waited))  # the render's own time, if said
        self.busy_s += waited
        with contextlib.suppress(OSError):
            page.with_suffix(".ipynb").unlink()
        if answer.get("gone"):
            self._gone(self._ended())
        if "error" in answer:
            return None, str(answer["error"])
        try:
            data = page.read_bytes()
            page.unlink()
        except OSError as exc:
            return None, f"the page could not be read: {exc.strerror or exc}"
        self.renders += 1
        return data, None

    def _ended(self) -> str:
        code = self.proc.poll() if self.proc is not None else None
        return "the renderer ended" + (f" (exit code {code})" if code is not None else "")

    def _gone(self, why: str) -> None:
        self.failed = self.failed or why
        self._page = None

    def close(self) -> None:
        """End the child by its PID (it has nothing to save: killed at once) and remove its
        files."""
        proc, self.proc = self.proc, None
        self.failed = self.failed or "closed"
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


# -- the child ----------------------------------------------------------------------------------


def _render(request: dict[str, Any], pages: Any) -> None:
    """A page written, or (no ``page`` asked) the notebook's cells prepared for the next. The
    notebook file is read as a stream (``report_cells.split``), never whole nor mapped."""
    source = Path(request["notebook"])
    folder = Path(request["folder"]) if request.get("folder") else None
    title = request.get("title", "")
    if not request.get("page"):
        pages.prepare(source, folder, title)
        source.unlink()
        return
    page = Path(request["page"])
    tmp = page.with_suffix(".tmp")
    with tmp.open("wb") as out:
        pages.write(source, out, folder, title, request.get("insert", ""))
    tmp.replace(page)


def main() -> None:
    """The child: warm up, then one page per request until stdin closes."""
    for name in DEFAULT_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(NICE)
    imports.skip_optional()  # as nbjob.cli does
    memory.fix_threshold()
    import nbformat

    from nbjob.report_cells import CellPages

    pages = CellPages(Path.cwd())  # the spool in the renderer's folder (Renderer.start)
    with pages:  # its spool removed when stdin closes
        with contextlib.suppress(Exception):  # compiles the templates before they are needed
            v4 = nbformat.v4
            pages.page(
                v4.new_notebook(cells=[v4.new_code_cell("x = 1"), v4.new_markdown_cell("# x")])
            )
        for line in sys.stdin.buffer:
            _answer(line, pages)


def _answer(line: bytes, pages: Any) -> None:
    """The request on ``line`` rendered, its answer written."""
    started = time.process_time()
    try:
        _render(json.loads(line), pages)
        answer: dict[str, Any] = {"ok": True, "seconds": time.process_time() - started}
    except Exception as exc:  # the page fails, the renderer goes on
        answer = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
