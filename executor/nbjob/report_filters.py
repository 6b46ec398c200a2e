"""The jinja2 filters nbconvert's lab and base templates use, without importing nbconvert.

The HTML report renders nbconvert's own template files with a plain jinja2 environment: these
are the filters it registers for them (``FILTERS``, by the templates' names), each giving what
nbconvert's gives, character for character (tests/test_report_filters.py compares them). Not
here: ``markdown2html`` and ``highlight_code`` (``nbjob.report.highlight``), and
``filter_data_type``, which needs the notebook: ``DataTypes(nb.metadata)``, one a notebook.
``import nbconvert`` alone costs about 25 MiB of memory; nothing here imports more than the
standard library and markupsafe (jinja2's), but ``clean_html``, which imports bleach the first
time it cleans something (an SVG output, a raw cell).
"""

# Adapted from nbconvert 7.17.2 (nbconvert/filters/ansi.py, metadata.py, strings.py,
# widgetsdatatypefilter.py, exporters/templateexporter.py and html.py).
# Copyright (c) IPython Development Team. Distributed under the terms of the Modified BSD License.

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import markupsafe

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

# HTMLExporter's NbConvertBase.display_data_priority: the first of these an output has is shown.
DISPLAY_DATA_PRIORITY = (
    WIDGET_VIEW,
    "application/javascript",
    "text/html",
    "text/markdown",
    "image/svg+xml",
    "text/vnd.mermaid",
    "text/latex",
    "image/png",
    "image/jpeg",
    "text/plain",
)


def escape_html(s: Any) -> str:
    """Text in HTML, quotes too (an attribute's value)."""
    return html.escape(str(s))


def escape_html_keep_quotes(s: Any) -> str:
    """Text in HTML, quotes kept (the page's title)."""
    return html.escape(str(s), quote=False)


def escape_html_script(s: str) -> str:
    """JSON in a ``<script>``: every ``/`` escaped, so that no ``</script>`` ends it early."""
    return s.replace("/", "\\/")


def get_metadata(output: Mapping[str, Any], key: str, mimetype: str | None = None) -> Any:
    """An output's metadata ``key``: the ``mimetype``'s own first, else the output's, else None."""
    md = output.get("metadata") or {}
    if mimetype and mimetype in md:
        value = md[mimetype].get(key)
        if value is not None:
            return value
    return md.get(key)


def posix_path(path: str) -> str:
    """``path\\to\\file`` -> ``path/to/file`` on Windows; any path unchanged elsewhere."""
    if os.path.sep != "/":
        return path.replace(os.path.sep, "/")
    return path


_FILES_URL = re.compile(r'(src|href)\=([\'"]?)/?files/')
_MARKDOWN_URL = re.compile(r"(!?)\[(?P<caption>.*?)\]\(/?files/(?P<location>.*?)\)")


def strip_files_prefix(text: str) -> str:
    """``src="files/a.png"`` -> ``src="a.png"`` (the classic notebook's URLs of its folder's
    files), in HTML attributes and in markdown links and images."""
    text = _FILES_URL.sub(r"\1=\2", text)
    return _MARKDOWN_URL.sub(r"\1[\2](\3)", text)


def text_base64(text: str) -> str:
    """The text's UTF-8 bytes in base64 (an SVG output as a data URL)."""
    return base64.b64encode(text.encode()).decode()


# ANSI escape sequences (colours) of stream and error outputs as <span>s with JupyterLab's classes.

_ANSI = re.compile("\x1b\\[(.*?)([@-~])")
_ANSI_COLORS = (
    "ansi-black",
    "ansi-red",
    "ansi-green",
    "ansi-yellow",
    "ansi-blue",
    "ansi-magenta",
    "ansi-cyan",
    "ansi-white",
    "ansi-black-intense",
    "ansi-red-intense",
    "ansi-green-intense",
    "ansi-yellow-intense",
    "ansi-blue-intense",
    "ansi-magenta-intense",
    "ansi-cyan-intense",
    "ansi-white-intense",
)
Color = int | tuple[int, int, int] | None  # one of the 16 above, an RGB colour, the default


def ansi2html(text: Any) -> str:
    """The text HTML-escaped, its SGR sequences (``\\x1b[1;31m``) as ``<span class=...>`` or
    ``style=`` around each run of text, every other escape sequence (``\\x1b[K``) removed."""
    text = str(markupsafe.escape(text))
    fg: Color = None
    bg: Color = None
    bold = underline = inverse = False
    numbers: list[int] = []
    out: list[str] = []
    while text:
        m = _ANSI.search(text)
        if m:
            if m.group(2) == "m":  # SGR: colours and styles; any other sequence is dropped
                numbers = _codes(m.group(1))
            chunk, text = text[: m.start()], text[m.end() :]
        else:
            chunk, text = text, ""
        if chunk:
            shown = fg + 8 if bold and isinstance(fg, int) and fg in range(8) else fg
            start, end = _span(shown, bg, bold, underline, inverse)
            out += [start, chunk, end]
        while numbers:
            n = numbers.pop(0)
            if n == 0:  # reset everything
                fg = bg = None
                bold = underline = inverse = False
            elif n in (1, 5):  # bold, blinking (shown bold)
                bold = True
            elif n == 4:
                underline = True
            elif n == 7:
                inverse = True
            elif n in (21, 22):
                bold = False
            elif n == 24:
                underline = False
            elif n == 27:
                inverse = False
            elif 30 <= n <= 37:
                fg = n - 30
            elif n == 38:
                try:
                    fg = _extended_color(numbers)
                except ValueError:
                    numbers.clear()
            elif n == 39:
                fg = None
            elif 40 <= n <= 47:
                bg = n - 40
            elif n == 48:
                try:
                    bg = _extended_color(numbers)
                except ValueError:
                    numbers.clear()
            elif n == 49:
                bg = None
            elif 90 <= n <= 97:
                fg = n - 90 + 8
            elif 100 <= n <= 107:
                bg = n - 100 + 8
    return "".join(out)


def _codes(parameters: str) -> list[int]:
    """``"1;31"`` -> ``[1, 31]`` (an empty code is code 0); ``[]`` if one is no number."""
    try:
        return [int(n) if n else 0 for n in parameters.split(";")]
    except ValueError:
        return []


def _span(fg: Color, bg: Color, bold: bool, underline: bool, inverse: bool) -> tuple[str, str]:
    """The start and end tags around text of these colours and styles ("" for the default)."""
    if (fg, bg, bold, underline, inverse) == (None, None, False, False, False):
        return "", ""
    classes = []
    styles = []
    if inverse:
        fg, bg = bg, fg
    if isinstance(fg, int):
        classes.append(_ANSI_COLORS[fg] + "-fg")
    elif fg:
        styles.append("color: rgb({},{},{})".format(*fg))
    elif inverse:
        classes.append("ansi-default-inverse-fg")
    if isinstance(bg, int):
        classes.append(_ANSI_COLORS[bg] + "-bg")
    elif bg:
        styles.append("background-color: rgb({},{},{})".format(*bg))
    elif inverse:
        classes.append("ansi-default-inverse-bg")
    if bold:
        classes.append("ansi-bold")
    if underline:
        classes.append("ansi-underline")
    start = "<span"
    if classes:
        start += ' class="' + " ".join(classes) + '"'
    if styles:
        start += ' style="' + "; ".join(styles) + '"'
    return start + ">", "</span>"


def _extended_color(numbers: list[int]) -> Color:
    """The colour of ``38;5;n`` (256 colours) or ``38;2;r;g;b`` (24-bit), its numbers taken
    from ``numbers``. ValueError for an invalid one, ``38`` alone too (nbconvert's IndexError
    there fails the whole page: here the text shows in the colour it had)."""
    if not numbers:
        raise ValueError()
    n = numbers.pop(0)
    if n == 2 and len(numbers) >= 3:
        r, g, b = numbers.pop(0), numbers.pop(0), numbers.pop(0)
        if not all(0 <= c <= 255 for c in (r, g, b)):
            raise ValueError()
    elif n == 5 and len(numbers) >= 1:
        idx = numbers.pop(0)
        if idx < 0:
            raise ValueError()
        if idx < 16:  # the 16 terminal colours
            return idx
        if idx < 232:  # the 6x6x6 colour cube
            r, g, b = (idx - 16) // 36, ((idx - 16) % 36) // 6, (idx - 16) % 6
            r, g, b = (55 + c * 40 if c > 0 else 0 for c in (r, g, b))
        elif idx < 256:  # the greys
            r = g = b = (idx - 232) * 10 + 8
        else:
            raise ValueError()
    else:
        raise ValueError()
    return r, g, b


def clean_html(element: Any) -> str:
    """HTML (str or UTF-8 bytes) as bleach leaves it with nbconvert's tags and attributes and
    CSS properties: no ``<script>``, no ``on...`` handlers. bleach (and tinycss2) is imported
    here, on first use: only SVG outputs and raw cells go through this."""
    import bleach

    element = element.decode() if isinstance(element, bytes) else str(element)
    kwargs: dict[str, Any] = {}
    try:  # bleach >= 5 with tinycss2 (bleach[css], as nbconvert requires)
        from bleach.css_sanitizer import ALLOWED_CSS_PROPERTIES, CSSSanitizer
    except ImportError:  # as nbconvert: no CSS sanitizer, style attributes removed
        pass
    else:
        kwargs["css_sanitizer"] = CSSSanitizer(allowed_css_properties=ALLOWED_CSS_PROPERTIES)
    return str(
        bleach.clean(
            element,
            tags=[*bleach.ALLOWED_TAGS, "div", "pre", "code", "span", "table", "tr", "td"],
            attributes={**bleach.ALLOWED_ATTRIBUTES, "*": ["class", "id"]},
            **kwargs,
        )
    )


class DataTypes:
    """The templates' ``filter_data_type``: ``[mimetype]``, the output's ``data`` type shown
    (the first in ``priority`` it has), ``[]`` for none. A widget view counts only with its
    model in the notebook's widget state (``metadata.widgets``), as in nbconvert's
    ``WidgetsDataTypeFilter``, which also warns of an output with none (nbjob would silence
    it: a scrapbook scrap, say, rightly shows nothing)."""

    def __init__(
        self, notebook_metadata: Mapping[str, Any], priority: Sequence[str] = DISPLAY_DATA_PRIORITY
    ) -> None:
        self.metadata = notebook_metadata
        self.priority = tuple(priority)

    def __call__(self, output: Mapping[str, Any]) -> list[str]:
        widgets = self.metadata.get("widgets")
        # as nbconvert, read at each call: widgets without a state is a KeyError there too
        state = widgets[WIDGET_STATE]["state"] if widgets is not None else {}
        for mimetype in self.priority:
            if mimetype in output:
                if mimetype == WIDGET_VIEW and output[WIDGET_VIEW]["model_id"] not in state:
                    continue
                return [mimetype]
        return []


FILTERS: dict[str, Callable[..., Any]] = {
    "ansi2html": ansi2html,
    "clean_html": clean_html,
    "escape_html": escape_html,
    "escape_html_keep_quotes": escape_html_keep_quotes,
    "escape_html_script": escape_html_script,
    "get_metadata": get_metadata,
    "json_dumps": json.dumps,
    "posix_path": posix_path,
    "strip_files_prefix": strip_files_prefix,
    "text_base64": text_base64,
}
