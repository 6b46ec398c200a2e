"""A markdown cell as the report's HTML, byte for byte what nbconvert's ``markdown2html`` makes
of it (nbconvert 7.17.2 with mistune 3, nbjob's inline HTML fix included; tested), without
importing nbconvert: ``import nbconvert`` alone costs tens of MiB in the process that renders.

mistune parses the markdown with nbconvert's math rules (``$..$``, ``$$..$$``, ``\\(..\\)``,
``\\[..\\]``, ``\\begin{env}..\\end{env}`` are kept for MathJax, not read as markdown), pygments
highlights fenced code of a known language, headings get nbconvert's ids and ``¶`` anchors, and
images are embedded as data URLs: a cell's attachments, and files from the notebook's folder
(nothing outside it, as nbconvert 7.17). nbconvert runs raw HTML blocks, and inline HTML with an
image, through BeautifulSoup, which writes them out again its own way (attributes sorted, ``<br>``
as ``<br/>``, a run of blanks between tags as one blank). bs4 costs ~6 MiB, so a block without an
image is written here as bs4 would write it (``nbjob.report_soup``: HTML without entities, scripts,
styles or declarations); only images and the rest import bs4.

One mistune parser serves every call (building it costs more than a small cell's render); a lock
keeps two threads from rendering with it at once, since each call sets its renderer's attachments
and folder.
"""

# Adapted from nbconvert 7.17.2 (nbconvert/filters/markdown_mistune.py and strings.py),
# Copyright (c) IPython Development Team, distributed under the terms of the Modified BSD License.

from __future__ import annotations

import base64
import mimetypes
import os
import threading
from collections.abc import Iterable, Mapping
from html import escape
from re import Match
from typing import Any, ClassVar
from urllib.parse import quote
from xml.etree.ElementTree import Element

from defusedxml import ElementTree
from mistune import (
    BlockParser,
    BlockState,
    HTMLRenderer,
    InlineParser,
    InlineState,
    Markdown,
    import_plugin,
)

from nbjob import report_soup

ANCHOR_LINK_TEXT = "¶"  # nbconvert's default (no XML, so the anchor's text, not an element)
MERMAID = ('<div class="jp-Mermaid"><pre class="mermaid">\n', "\n</pre></div>")  # around its code
PLUGINS = ("strikethrough", "table", "url", "task_lists", "def_list")  # nbconvert's, in order


class InvalidNotebook(Exception):
    """An image refers to an attachment the cell does not have (nbconvert's error)."""


def markdown2html(
    source: str,
    *,
    attachments: Mapping[str, Any] | None = None,
    path: str = "",
    embed_images: bool = True,
) -> str:
    """``source`` as HTML: ``attachments`` the cell's (mime type -> base64 by name), ``path``
    the notebook's folder (images in it embedded with ``embed_images``)."""
    global _parser
    with _lock:
        if _parser is None:
            _parser = _build()
        markdown, renderer = _parser
        renderer.attachments = attachments or {}
        renderer.path = path
        renderer.embed_images = embed_images
        return str(markdown(source))


def _dotall(pattern: str) -> str:
    """``pattern`` with ``.`` matching newlines too (LaTeX environments span lines)."""
    return f"(?s:{pattern})"


_ATX = "atx_heading" if "atx_heading" in BlockParser.SPECIFICATION else "axt_heading"  # 3.0: axt


class _MathBlockParser(BlockParser):
    """Multi-line math as one paragraph, for ``_MathInlineParser``, so that no other block rule
    splits it; headings need no space after the ``#``s."""

    SPECIFICATION = {
        **BlockParser.SPECIFICATION,
        _ATX: rf"^ {{0,3}}(?P<{_ATX[:3]}_1>#{{1,6}})(?!#+)(?P<{_ATX[:3]}_2>[ \t]*(.*?)?)$",
        "multiline_math": _dotall(
            r"(?<!\\)[$]{2}.*?(?<!\\)[$]{2}"  # $$ \sqrt{2} $$
            r"|\\\\\[.*?\\\\\]"  # \\[ \sqrt{2} \\]
            r"|\\begin\{(?P<math_env_name>[a-z]*\*?)\}.*?\\end\{(?P=math_env_name)\}"
        ),
    }
    DEFAULT_RULES: ClassVar[Iterable[str]] = ("multiline_math", *BlockParser.DEFAULT_RULES)  # type: ignore[assignment]

    def parse_multiline_math(self, m: Match[str], state: BlockState) -> int:
        state.add_paragraph(m[0])
        return m.end()


class _MathInlineParser(InlineParser):
    """LaTeX math as math tokens, its delimiters stripped (and the environment's name kept)."""

    SPECIFICATION = {
        **InlineParser.SPECIFICATION,
        "block_math_tex": _dotall(r"(?<!\\)\$\$(?P<math_block_tex>.*?)(?<!\\)\$\$"),
        "block_math_latex": _dotall(r"(?<!\\)\\\\\[(?P<math_block_latex>.*?)(?<!\\)\\\\\]"),
        "inline_math_tex": _dotall(r"(?<![$\\])\$(?P<math_inline_tex>.+?)(?<![$\\])\$"),
        "inline_math_latex": _dotall(r"(?<!\\)\\\\\((?P<math_inline_latex>.*?)(?<!\\)\\\\\)"),
        "latex_environment": _dotall(
            r"\\begin\{(?P<math_env_name>[a-z]*\*?)\}"
            r"(?P<math_env_body>.*?)"
            r"\\end\{(?P=math_env_name)\}"
        ),
    }
    DEFAULT_RULES: ClassVar[Iterable[str]] = (  # type: ignore[assignment]
        "block_math_tex",
        "block_math_latex",
        "inline_math_tex",
        "inline_math_latex",
        "latex_environment",
        *InlineParser.DEFAULT_RULES,
    )

    def _math(self, kind: str, group: str, m: Match[str], state: InlineState) -> int:
        state.append_token({"type": kind, "raw": m.group(group)})
        return m.end()

    def parse_block_math_tex(self, m: Match[str], state: InlineState) -> int:
        return self._math("block_math", "math_block_tex", m, state)

    def parse_block_math_latex(self, m: Match[str], state: InlineState) -> int:
        return self._math("block_math", "math_block_latex", m, state)

    def parse_inline_math_tex(self, m: Match[str], state: InlineState) -> int:
        return self._math("inline_math", "math_inline_tex", m, state)

    def parse_inline_math_latex(self, m: Match[str], state: InlineState) -> int:
        return self._math("inline_math", "math_inline_latex", m, state)

    def parse_latex_environment(self, m: Match[str], state: InlineState) -> int:
        attrs = {"name": m.group("math_env_name"), "body": m.group("math_env_body")}
        state.append_token({"type": "latex_environment", "attrs": attrs})
        return m.end()


class _Renderer(HTMLRenderer):
    """nbconvert's ``IPythonRenderer`` (``escape=False``, harmful protocols allowed) with nbjob's
    inline HTML: only a tag with an image goes through bs4 (jupyter/nbconvert#2020)."""

    def __init__(self) -> None:
        super().__init__(escape=False, allow_harmful_protocols=True)
        self.attachments: Mapping[str, Any] = {}
        self.path = ""
        self.embed_images = True

    def block_code(self, code: str, info: str | None = None) -> str:
        if info and info.startswith("mermaid"):
            return f"{MERMAID[0]}{code.strip()}{MERMAID[1]}"
        if info and info.strip():
            lang = info.strip().split(maxsplit=1)[0]
            html = _highlighted(code, lang)
            if html is not None:
                return html
            code = f"{lang}\n{code}"  # nbconvert's: an unknown language's name goes in the code
        return super().block_code(code, info=info)

    def block_html(self, html: str) -> str:
        if self.embed_images:
            html = self._html_embed_images(html)
        return super().block_html(html)

    def inline_html(self, html: str) -> str:
        if self.embed_images and "<img" in html.lower():
            html = self._html_embed_images(html)
        return super().inline_html(html)

    def heading(self, text: str, level: int, **attrs: Any) -> str:
        return _add_anchor(super().heading(text, level, **attrs))

    def escape_html(self, text: str) -> str:
        return escape(text, quote=False)

    def block_math(self, body: str) -> str:
        return f"$${self.escape_html(body)}$$"

    def latex_environment(self, name: str, body: str) -> str:
        name, body = self.escape_html(name), self.escape_html(body)
        return f"\\begin{{{name}}}{body}\\end{{{name}}}"

    def inline_math(self, body: str) -> str:
        return f"${self.escape_html(body)}$"

    def image(self, text: str, url: str, title: str | None = None) -> str:
        return super().image(text, self._embed_image_or_attachment(url), title)

    def _embed_image_or_attachment(self, src: str) -> str:
        """An attachment's data URL, else the file's under ``path`` (embedding), else ``src``."""
        if src.startswith("attachment:"):
            name = src[len("attachment:") :]
            if name not in self.attachments:
                raise InvalidNotebook(f"missing attachment: {name}")
            attachment = self.attachments[name]
            # vector over raster, lossless over lossy, else the first one
            for mime_type in ("image/svg+xml", "image/png", "image/jpeg"):
                if mime_type in attachment:
                    return f"data:{mime_type};base64,{attachment[mime_type]}"
            mime_type = next(iter(attachment.keys()))
            return f"data:{mime_type};base64,{attachment[mime_type]}"
        if self.embed_images:
            url = self._src_to_base64(src)
            if url is not None:
                return url
        return src

    def _src_to_base64(self, src: str) -> str | None:
        """The data URL of file ``src`` under ``path``; None: none there, or outside it."""
        src_path = os.path.join(self.path, src)
        resolved = os.path.abspath(src_path)
        allowed_base = os.path.abspath(self.path)
        if not resolved.startswith(allowed_base + os.sep) and resolved != allowed_base:
            return None
        if not os.path.exists(src_path):
            return None
        with open(src_path, "rb") as fobj:
            mime_type, _ = mimetypes.guess_type(src_path)
            data = base64.b64encode(fobj.read()).replace(b"\n", b"").decode("ascii")
            return f"data:{mime_type};base64,{data}"

    def _html_embed_images(self, html: str) -> str:
        """``html`` as bs4 writes it, its images' sources under ``path`` as data URLs."""
        written = None if "<img" in html.lower() else report_soup.written(html)
        if written is not None:
            return written
        import bs4  # ~6 MiB: only for images and HTML that report_soup does not foresee

        soup: Any = bs4.BeautifulSoup(html, features="html.parser")
        for img in soup.find_all("img"):
            if img.attrs.get("src") is None:
                continue
            url = self._src_to_base64(img.attrs["src"])
            if url is not None:
                img.attrs["src"] = url
        return str(soup)


_FORMATTER: Any = None  # pygments' HtmlFormatter() (reused: making one costs more than a cell)
_LEXERS: dict[str, Any] = {}  # pygments' lexer by language name, None: no such language


def _highlighted(code: str, lang: str) -> str | None:
    """``code`` highlighted as nbconvert's renderer does; None: pygments has no ``lang``."""
    global _FORMATTER
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    if lang not in _LEXERS:
        try:
            _LEXERS[lang] = get_lexer_by_name(lang)
        except ClassNotFound:
            _LEXERS[lang] = None
    lexer = _LEXERS[lang]
    if lexer is None:
        return None
    if _FORMATTER is None:
        _FORMATTER = HtmlFormatter()
    return str(highlight(code, lexer, _FORMATTER))


def _add_anchor(html: str) -> str:
    """nbconvert's ``add_anchor``: the heading ``html`` with an id from its text and an anchor
    link to it (unchanged if it is no XML, an HTML entity say)."""
    try:
        h = ElementTree.fromstring(html)
    except Exception:
        return html
    link = quote(_text(h).replace(" ", "-"), safe="?/:@!$&'()*+,;=")  # _convert_header_id
    h.set("id", link)
    a = Element("a", {"class": "anchor-link", "href": "#" + link})
    a.text = ANCHOR_LINK_TEXT
    h.append(a)
    return str(ElementTree.tostring(h).decode(encoding="utf-8"))


def _text(element: Any) -> str:
    """nbconvert's ``html2text`` of a parsed element: its text, as jQuery's ``.text()``."""
    text: str = element.text or ""
    for child in element:
        text += _text(child)
    return text + (element.tail or "")


def _build() -> tuple[Markdown, _Renderer]:
    """nbconvert's ``MarkdownWithMath`` with nbjob's renderer, and the renderer."""
    renderer = _Renderer()
    plugins = [import_plugin(name) for name in PLUGINS]
    block, inline = _MathBlockParser(), _MathInlineParser(hard_wrap=False)
    return Markdown(renderer, block, inline, plugins), renderer


_lock = threading.Lock()
_parser: tuple[Markdown, _Renderer] | None = None
