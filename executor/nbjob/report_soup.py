"""Raw HTML written out as BeautifulSoup writes it, without importing bs4 (for the report).

nbconvert runs a markdown cell's raw HTML blocks through BeautifulSoup (``html.parser``) when it
embeds images, which writes them out again its own way: attributes sorted, ``<br>`` as
``<br/>``, a run of blanks between tags as one blank, open elements closed. bs4 costs ~6 MiB, so
``nbjob.report_markdown`` asks ``written`` first: what bs4 4.15 writes for HTML without
entities, scripts, styles or declarations (tests/test_report_markdown.py compares it with bs4 on
fixed and random HTML), None for the rest, which bs4 itself then writes.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

# What bs4's html.parser tree builder treats apart (bs4 4.15): elements without content, written
# ``<br/>``; attributes holding lists, written back joined by one space (on any element, and on
# some); elements in which blanks are kept. Elements whose content html.parser or bs4 reads in a
# way of its own are left to bs4 itself (``_SPECIAL``).
_VOID = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "menuitem",
    "meta", "param", "source", "track", "wbr", "basefont", "bgsound", "command", "frame", "image",
    "isindex", "nextid", "spacer"})  # fmt: skip
_LISTS = frozenset({"class", "accesskey", "dropzone"})
_LISTS_OF = {"a": {"rel", "rev"}, "link": {"rel", "rev"}, "td": {"headers"}, "th": {"headers"},
             "form": {"accept-charset"}, "object": {"archive"}, "area": {"rel"},
             "icon": {"sizes"}, "iframe": {"sandbox"}, "output": {"for"}}  # fmt: skip
_PRE = frozenset({"pre", "textarea"})
_SPECIAL = frozenset({
    "script", "style", "template", "textarea", "title", "xmp", "iframe", "noembed", "noframes",
    "noscript", "plaintext", "rt", "rp", "meta", "math", "svg"})  # fmt: skip
_SPACES = frozenset("\x20\x0a\x09\x0c\x0d")  # bs4's ASCII_SPACES
_NONBLANK = re.compile(r"\S+")  # bs4's split of a list attribute


def written(html: str) -> str | None:
    """What bs4 (``html.parser``, formatter "minimal") writes for ``html``; None for HTML that
    would take more to foresee: entities, declarations, end tags of voids, ``_SPECIAL``."""
    if "&" in html or "<!" in html.replace("<!--", ""):
        return None
    parser = _Bs4Writes()
    parser.feed(html)
    parser.close()
    parser.flush()
    if parser.out is None:
        return None
    return "".join(parser.out) + "".join(f"</{tag}>" for tag in reversed(parser.open))


def _minimal(text: str) -> str:
    """bs4's "minimal" formatter (``&`` never comes here)."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


class _Bs4Writes(HTMLParser):
    """bs4's tree builder and writer in one, for ``written``: ``out`` what it writes (None
    once that is past foreseeing), ``open`` the elements still open."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)  # as bs4's
        self.out: list[str] | None = []
        self.open: list[str] = []
        self.data: list[str] = []

    def flush(self, comment: bool = False) -> None:
        """bs4's ``endData``: text that is all blanks becomes one blank, outside <pre>."""
        if self.data and self.out is not None:
            text = "".join(self.data)
            if not _PRE.intersection(self.open) and set(text) <= _SPACES:
                text = "\n" if "\n" in text else " "
            self.out.append(f"<!--{text}-->" if comment else _minimal(text))
        self.data = []

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], end: bool) -> None:
        self.flush()
        if self.out is None or tag in _SPECIAL or len({name for name, _ in attrs}) < len(attrs):
            self.out = None
            return
        written = []
        for name, value in sorted((name, value or "") for name, value in attrs):
            if name in _LISTS or name in _LISTS_OF.get(tag, ()):
                value = " ".join(_NONBLANK.findall(value))
            quote = "'" if '"' in value else '"'  # both: only with an entity, never here
            value = _minimal(value)
            written.append(f" {name}={quote}{value}{quote}")
        if tag in _VOID:
            self.out.append(f"<{tag}{''.join(written)}/>")
            return
        self.out.append(f"<{tag}{''.join(written)}>")
        self.open.append(tag)
        if end:
            self.handle_endtag(tag)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, end=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, end=True)

    def handle_endtag(self, tag: str) -> None:
        """bs4's: the elements up to the last one ``tag`` closed, nothing if none is open."""
        self.flush()
        if self.out is None or tag in _VOID:  # bs4 counts the voids written <br>: left to it
            self.out = None
        elif tag in self.open:
            while self.open:
                self.out.append(f"</{self.open[-1]}>")
                if self.open.pop() == tag:
                    break

    def handle_data(self, data: str) -> None:
        self.data.append(data)

    def handle_comment(self, data: str) -> None:
        self.flush()
        self.data.append(data)
        self.flush(comment=True)

    def handle_decl(self, decl: str) -> None:
        self.out = None

    def unknown_decl(self, data: str) -> None:
        self.out = None

    def handle_pi(self, data: str) -> None:
        self.out = None
