"""The report's renderer child (``nbjob.renderer``): the page it renders is the page nbjob
renders itself, it ends by its PID, a renderer that died is a reason (never a hang), a run that
refreshes its report (``--report-interval``) has it render the final page too, and a shorter run
renders in-process."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import nbformat
from nbjob import report, results
from nbjob.record import RunRecord
from nbjob.renderer import Renderer
from nbjob.stop import Budget
from support import make_notebook, pid_exists, read_json, run_nbjob, start_nbjob, wait_until


def _notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    out = nbformat.v4.new_output("stream", name="stdout", text="hello <world>\n")
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title\n\nsome *text*"),
        nbformat.v4.new_code_cell("print('hello <world>')", outputs=[out], execution_count=1),
    ]
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    return nb


def test_the_child_renders_the_page_nbjob_renders_and_ends_by_its_pid(tmp_path: Path) -> None:
    nb = _notebook()
    renderer = Renderer(tmp_path / "r")
    try:
        assert renderer.start()
        assert renderer.submit(results.notebook_bytes(nb), tmp_path, "my notebook")
        assert not renderer.submit(results.notebook_bytes(nb), tmp_path, "busy")  # one at a time
        page, why = renderer.page(Budget.within(120))
        assert why is None and page is not None
        assert page == report.render(nb, tmp_path, "my notebook")
        assert "hello &lt;world&gt;" in page.decode()
        # a second page from the same child (its exporter reused)
        nb.cells[1].outputs[0].text = "second\n"
        assert renderer.submit(results.notebook_bytes(nb), None, "again")
        again, why = renderer.page(Budget.within(120))
        assert why is None and again is not None and b"second" in again
        pid = renderer.proc.pid if renderer.proc else 0
    finally:
        renderer.close()
    assert pid and not pid_exists(pid)
    assert not (tmp_path / "r").exists()  # its files are removed with it


def test_the_final_page_is_asked_for_once_a_refresh_under_way_is_done(tmp_path: Path) -> None:
    """At the end a refresh may still be rendering (the final notebook was not taken): the
    report waits for it, then hands the final notebook over and gets its page."""
    from types import SimpleNamespace

    nb = _notebook()
    stored = SimpleNamespace(
        notebook_name="my notebook.ipynb", stored_notebook=results.notebook_bytes, extras={}
    )
    record = RunRecord.start("run-1", "b.zip", "out", "local", {})
    renderer = Renderer(tmp_path / "r")
    try:
        assert renderer.start()
        earlier = _notebook()
        earlier.cells[1].outputs[0].text = "earlier\n"
        assert renderer.submit(results.notebook_bytes(earlier), None, "refresh")  # under way
        args = (stored, nb, record, Budget.within(120), tmp_path, renderer, False)
        page, why, by = report._page(*args)  # type: ignore[arg-type]
    finally:
        renderer.close()
    assert why is None and by == "renderer" and page == report.render(nb, tmp_path, "my notebook")


def test_the_child_keeps_the_cells_html_in_its_folder_until_its_stdin_closes(
    tmp_path: Path,
) -> None:
    nb = _notebook()
    folder = tmp_path / "r"
    renderer = Renderer(folder)
    try:
        assert renderer.start() and renderer.proc is not None and renderer.proc.stdin
        assert renderer.prepare(results.notebook_bytes(nb), tmp_path, "t")
        nb.cells[1].outputs[0].text = "changed <x>\n"  # rendered again after a checkpoint
        assert renderer.submit(results.notebook_bytes(nb), tmp_path, "t")
        page, why = renderer.page(Budget.within(120))
        assert why is None and page == report.render(nb, tmp_path, "t")
        [spool] = folder.glob("cells-*.html")
        assert b"hello &lt;world&gt;" in spool.read_bytes()  # the older HTML, unused
        assert not list(folder.glob("*.ipynb"))  # the notebooks handed to it removed
        renderer.proc.stdin.close()  # nbjob gone: the child ends, its spool removed
        assert renderer.proc.wait(timeout=60) == 0
        assert not spool.exists()
    finally:
        renderer.close()


def test_a_renderer_that_died_is_a_reason_not_a_hang(tmp_path: Path) -> None:
    renderer = Renderer(tmp_path / "r")
    try:
        assert renderer.start() and renderer.proc is not None
        os.kill(renderer.proc.pid, signal.SIGKILL)
        renderer.proc.wait()
        started = time.monotonic()
        asked = renderer.submit(results.notebook_bytes(_notebook()), None, "t")
        page, why = renderer.page(Budget.within(60))
        assert page is None and why is not None and "renderer" in why
        assert asked or why.startswith("the renderer could not be asked")
        assert time.monotonic() - started < 30  # answered, not waited out
        assert not renderer.start()  # not started again: nbjob renders the page itself
    finally:
        renderer.close()


def test_a_page_that_fails_is_a_reason_and_the_child_goes_on(tmp_path: Path) -> None:
    renderer = Renderer(tmp_path / "r")
    try:
        assert renderer.submit(b"{not json", None, "t") is False  # not started yet
        assert renderer.start()
        assert renderer.submit(b"{not json", None, "t")
        page, why = renderer.page(Budget.within(120))
        assert page is None and why is not None and why.startswith("JSONDecodeError")
        assert renderer.submit(results.notebook_bytes(_notebook()), None, "t")
        page, why = renderer.page(Budget.within(120))
        assert why is None and page is not None
    finally:
        renderer.close()


def test_a_run_shorter_than_the_report_interval_renders_in_process(tmp_path: Path) -> None:
    """No child for a run that never refreshes its report: its one page costs less here than a
    second Python process importing nbconvert beside the kernel (bench/run.py (a), (c))."""
    nb = make_notebook(tmp_path / "nb.ipynb", ["print('from the kernel')"])
    out = tmp_path / "out"
    result = run_nbjob("run", nb, "--output", out)
    assert result.returncode == 0, result.stderr
    assert "from the kernel" in (out / "nb.html").read_text()
    assert read_json(out / "run.json")["report"]["name"] == "nb.html"
    events = [json.loads(line) for line in (out / "executor.log").read_text().splitlines()]
    [written] = [e for e in events if e["event"] == "report"]
    assert written["rendered_by"] == "nbjob"


WAIT_FOR_GO = """\
import os, time
deadline = time.monotonic() + 120
while not os.path.exists({go!r}) and time.monotonic() < deadline:
    time.sleep(0.05)
print('last', 'cell', 'done')
"""


def test_the_report_stays_fresh_while_the_run_goes(tmp_path: Path) -> None:
    go = tmp_path / "go"
    cells = ["print('first', 'cell', 'done')", WAIT_FOR_GO.format(go=str(go))]
    nb = make_notebook(tmp_path / "nb.ipynb", cells)
    out = tmp_path / "out"
    proc = start_nbjob("run", nb, "--output", out, "--report-interval", "1")
    try:
        page = out / "nb.html"
        assert wait_until(lambda: page.exists() and "first cell done" in page.read_text(), 90)
        assert proc.running()  # a page while the second cell still runs
        assert "last cell done" not in page.read_text()
    finally:
        go.touch()
    result = proc.wait()
    assert result.returncode == 0, result.stderr
    assert "last cell done" in page.read_text()  # the final page is the whole run's
    assert read_json(out / "run.json")["report"]["name"] == "nb.html"
    [written] = [e for e in result.events if e["event"] == "report"]
    assert written["rendered_by"] == "renderer" and written["refreshed"] >= 1, written
