"""The HTML report: the executed notebook as a page to look at, written once at a run's end.

nbconvert's lab template renders it, as its ``HTMLExporter`` would, without nbconvert being
imported (``nbjob.report_page``; nbconvert's exporter, ``nbjob.report_nbconvert``, the fallback):
output images are data URLs, markdown images from the notebook's folder are embedded (nothing
outside it), the widget state is in the page, nbjob's red error banners show; the secrets nbjob
knows are masked in it as in the stored notebook (``nbjob.mask``). The page of the final
notebook is rendered on a thread of nbjob (``nbjob.report_thread.InProcess``), or by the renderer
child when refreshes started one (``ask``), while the results are stored and the kernel shuts
down. ``write`` stores the page after the notebook and run.json are stored and never at their
cost: within the time left (a stop's grace, the final-write bound), else skipped with a warning;
a render or upload failure is a warning in the log and in run.json, never another exit code.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from nbjob import logs, report_chart
from nbjob.layout import RESOURCES
from nbjob.renderer import Renderer
from nbjob.report_thread import InProcess
from nbjob.stop import Budget, timebox

if TYPE_CHECKING:  # not imported in the renderer child, which needs neither
    from nbjob.record import RunRecord
    from nbjob.results import Results

MIN_S = 1.0  # less time left than this: no report (a warning in the log and run.json)
MAX_S = 120.0  # the most rendering and storing a report may take when nothing is pressing
RECORD_S = 1.0  # of the time kept after the report, what rewriting run.json may take
TURNED_OFF = "turned off (--no-report)"
CHUNKED_CELLS = 100  # a notebook of fewer cells renders in one pass (its page in ~0.1 s)
CONTENT_TYPE = "text/html; charset=utf-8"

T = TypeVar("T")


def name_for(notebook_name: str) -> str:
    """``train.ipynb`` -> ``train.html`` (stored next to the notebook)."""
    return PurePosixPath(notebook_name).stem + ".html"


def render(nb: Any, folder: Path | None = None, title: str = "", exporter: Any = None) -> bytes:
    """The notebook as one self-contained HTML page (JupyterLab's look), titled ``title`` (the
    notebook's name, as ``jupyter nbconvert`` titles it)."""
    metadata = {"name": title} if title else {}
    if folder is not None:
        metadata["path"] = str(folder)
    resources = {"metadata": metadata} if metadata else {}
    body, _ = (exporter or _exporter()).from_notebook_node(nb, resources=resources)
    return body.encode("utf-8")


# What nbconvert's HTMLExporter adds to the rendered page (by parsing it whole with
# BeautifulSoup and writing it out again: half of the time a 1000-cell page takes): keyboard
# focus on cell inputs and outputs, a text for images without one. The template writes those
# tags in one form: ``<div class="... jp-OutputArea-output ...">``, ``<img src=...>``.
_FOCUSABLE = re.compile(
    r'(<div class="[^"]*(?<![\w-])(?:jp-Cell-inputWrapper|jp-OutputArea-output)(?![\w-])[^"]*")'
)
_IMG_WITHOUT_ALT = re.compile(r"<img(?=[\s/>])(?![^>]*\salt=)", re.IGNORECASE)
NO_ALT = "No description has been provided for this image"  # nbconvert's words


def accessible(html: str) -> str:
    """``tabindex="0"`` on cell inputs and outputs, an ``alt`` on images without one."""
    html = _FOCUSABLE.sub(r'\1 tabindex="0"', html)
    return _IMG_WITHOUT_ALT.sub(f'<img alt="{NO_ALT}"', html)


class Highlighted(str):
    """Code highlighted by pygments: every character of the source escaped, only pygments'
    own ``<div>``/``<pre>``/``<span class>`` tags (nothing for ``clean_html`` to remove)."""


def exporter(templates: dict[str, str] | None = None, template_file: str | None = None) -> Any:
    """The lab template's pages without importing nbconvert (``nbjob.report_page``), the same
    pages as ``report_nbconvert.exporter``'s; that one when the templates installed cannot be
    compiled here. ``templates``: more templates by name, ``template_file`` the one rendered."""
    from jinja2 import TemplateError

    from nbjob.report_page import PageExporter

    try:
        return PageExporter(templates, template_file)
    except (TemplateError, OSError, ValueError):
        from nbjob import report_nbconvert

        return report_nbconvert.exporter(templates, template_file)


_FORMATTERS: dict[str, Any] = {}  # pygments' HtmlFormatter, by language
_LEXERS: dict[str, Any] = {}  # pygments' lexer, by language


def highlight(source: str, language: str, metadata: Any = None) -> str:
    """nbconvert's ``Highlight2HTML`` markup of ``source``, its formatter and lexer reused."""
    from pygments import highlight as pygmentize

    formatter = _FORMATTERS.get(language)
    if formatter is None:
        from html import escape

        from pygments.formatters import HtmlFormatter

        formatter = HtmlFormatter(cssclass=escape(f" highlight hl-{language}"))
        _FORMATTERS[language] = formatter
    if language.startswith("ipython") and metadata and "magics_language" in metadata:
        language = metadata["magics_language"]  # a %%bash cell, say, as nbconvert does
    lexer = _LEXERS.get(language) or _LEXERS.setdefault(language, _lexer(language))
    return str(pygmentize(source or " ", lexer, formatter))


def _lexer(language: str) -> Any:
    """The lexer nbconvert's ``_pygments_highlight`` picks for ``language``."""
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    if language in ("ipython2", "ipython3"):
        try:  # IPython 9's lexers (IPython.lib.lexers names them), without IPython's ~9 MiB
            import ipython_pygments_lexers as lexers
        except ModuleNotFoundError:
            try:
                from IPython.lib import lexers
            except ModuleNotFoundError:
                lexers = None
        if lexers is None:
            language = "python" if language == "ipython2" else "python3"
        else:
            return lexers.IPythonLexer() if language == "ipython2" else lexers.IPython3Lexer()
    try:
        return get_lexer_by_name(language)
    except ClassNotFound:
        from pygments.lexers.special import TextLexer

        return TextLexer()


_exporter = exporter


def note_page(reason: str) -> bytes:
    """A one-line page for a run without a report (replaces an earlier attempt's report)."""
    text = reason.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>nbjob: no report</title>'
        f"</head><body><p>No report for this run: {text}.</p></body></html>\n"
    ).encode()


def title_for(results: Results) -> str:
    return PurePosixPath(results.notebook_name or "").stem


def prepare(renderer: Renderer, notebook: bytes, results: Results, folder: Path | None) -> bool:
    """A checkpoint's notebook (as stored) handed to the renderer child, when it runs, to render
    its cells ahead of the final page (``nbjob.report_cells``); whether it took it. The first
    refresh of the report (``--report-interval``) starts the child."""
    if not notebook or not renderer.running or not renderer.idle:
        return False
    return renderer.prepare(notebook, folder, title_for(results))


def by_chunks(nb: Any) -> bool:
    """Whether the page of ``nb`` is rendered from its stored JSON a chunk of cells at a time
    (``nbjob.report_cells``): a notebook of fewer cells renders in one pass, in ~0.1 s."""
    return len(nb.cells) >= CHUNKED_CELLS


def ask(
    renderer: Renderer,
    results: Results,
    stored: Callable[[], bytes | None],
    folder: Path | None,
    record: RunRecord,
) -> bool:
    """Hand the final notebook (as stored: ``stored()``, serialized when needed) to the
    renderer, before the final write, with the resources section for its page (``record``'s
    figures: the sampler has stopped); whether it took it (not when it could not start, or a
    refresh is still rendering: ``write`` waits)."""
    if not results.notebook_name or not renderer.running:
        return False
    notebook = stored()
    if notebook is None:
        return False
    return renderer.submit(notebook, folder, title_for(results), chart(results, record))


def chart(results: Results, record: RunRecord) -> str:
    """The final page's resources section (``nbjob.report_chart``; empty: nothing sampled)."""
    return report_chart.html(results.extras.get(RESOURCES, bytes)(), record.cell_resources)


def write(
    results: Results,
    nb: Any,
    record: RunRecord,
    budget: Budget,
    *,
    folder: Path | None = None,
    enabled: bool = True,
    stored: bool = True,
    renderer: Renderer | None = None,
    asked: bool = False,
    refreshed: int = 0,
    local: InProcess | None = None,
) -> None:
    """Render and store the report; record its name, or why there is none, in run.json.

    ``budget``: the time the report may take (``MAX_S`` at most for the page); ``stored``:
    whether the notebook and run.json were stored (else no report, and no write);
    ``renderer``: the child that renders the page (``asked``: the final notebook was handed to
    it already); without one, the page is rendered in this process (``local``, when it was
    submitted there ahead); ``refreshed``: the pages
    stored during the run (``--report-interval``): without a final page the last is replaced by
    a note.
    """
    if not enabled or not stored:
        if enabled:
            record.report_missing("the results were not stored")
        elif record.earlier_attempts:  # an earlier attempt's report must not pass for this one's
            _boxed(lambda: put_page(results, note_page(TURNED_OFF)), budget)
        return
    page_budget = budget.share(1.0, calm=MAX_S)
    why = _why_not(results, nb, budget) or _render_and_put(
        results, nb, record, page_budget, folder, renderer, asked, refreshed, local
    )
    log = logs.get_logger()
    if why is not None:
        record.report_missing(why)
        log.warning("report_not_written", reason=why)
        if (record.earlier_attempts or refreshed) and results.notebook_name:
            note = note_page(why)
            _boxed(lambda: put_page(results, note), budget)
    _, why = _boxed(
        lambda: results.store_record(record.to_json(to_store=True)), budget.less(-RECORD_S)
    )
    if why is not None:
        log.warning("record_not_rewritten", reason=why)


def _why_not(results: Results, nb: Any, budget: Budget) -> str | None:
    if nb is None or not results.notebook_name:
        return "no notebook was read"
    left = budget.left()
    if left < MIN_S:
        return f"no time left for it ({max(0.0, left):.1f} s)"
    return None


def _render_and_put(
    results: Results,
    nb: Any,
    record: RunRecord,
    budget: Budget,
    folder: Path | None,
    renderer: Renderer | None,
    asked: bool,
    refreshed: int,
    local: InProcess | None,
) -> str | None:
    """Why the report is not stored, or None when it is (and is in the record)."""
    started = time.monotonic()
    page, why, by = _page(results, nb, record, budget, folder, renderer, asked, local)
    if page is None:
        return why
    # The renderer's page has its resources section (``ask``), and so has a page rendered
    # here by chunks, into a file (``InProcess.submit``).
    if by != "renderer" and isinstance(page, bytes):
        page = report_chart.insert(page, chart(results, record))
    _, why = _boxed(lambda: put_page(results, page), budget)  # only a whole page goes up
    if why is None:
        name = name_for(results.notebook_name or "")
        record.report_written(name)
        seconds = round(time.monotonic() - started, 3)
        log = logs.get_logger()
        log.info(
            "report",
            name=name,
            bytes=page.stat().st_size if isinstance(page, Path) else len(page),
            seconds=seconds,
            rendered_by=by,
            **({"refreshed": refreshed} if refreshed else {}),
            **({"prepared": renderer.prepared} if renderer and renderer.prepared else {}),
        )
    return why


def _page(
    results: Results,
    nb: Any,
    record: RunRecord,
    budget: Budget,
    folder: Path | None,
    renderer: Renderer | None,
    asked: bool,
    local: InProcess | None = None,
) -> tuple[bytes | Path | None, str | None, str]:
    """The page, from the renderer (the notebook handed to it now if not yet: a refresh that
    was rendering is waited for, its page dropped), else rendered here; or why there is none;
    and which process rendered it (``renderer`` or ``nbjob``)."""
    if renderer is not None and not asked and renderer.running:
        renderer.page(budget)  # a refresh under way, if any
        asked = ask(renderer, results, lambda: results.stored_notebook(nb), folder, record)
    if renderer is not None and asked:
        page, why = renderer.page(budget)
        return page, None if why is None else logs.redact(why)[:300], "renderer"
    if local is not None and local.asked:
        made, why = local.page(budget)
        return made, None if why is None else logs.redact(why)[:300], "nbjob"
    title = title_for(results)
    page, why = _boxed(lambda: render(results.masked(nb), folder, title), budget)  # masked
    return page, why, "nbjob"


def put_page(results: Results, page: bytes | Path) -> None:
    """Store a page (its bytes, or its file) as the run's report (the final one, or a fresher
    one during the run)."""
    url = results.url(name_for(results.notebook_name or ""))
    if isinstance(page, Path):
        results.storage.put_file(url, page, CONTENT_TYPE)
    else:
        results.storage.put_bytes(url, page, CONTENT_TYPE)


def _boxed(work: Callable[[], T], budget: Budget) -> tuple[T | None, str | None]:
    """``work()`` within ``budget``: its value, or why there is none."""
    if budget.left() <= 0:
        return None, "no time left"
    done = timebox(work, budget, "the report")
    if done.late:
        return None, "not finished in the time left"
    if done.error is not None:
        return None, f"{type(done.error).__name__}: {logs.redact(str(done.error))[:300]}"
    return done.value, None
