"""The report's template filters give what nbconvert's give, character for character, and
importing or calling them (but ``clean_html``) imports neither nbconvert nor bleach."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import nbformat
import pytest
from jinja2 import nodes
from jupyter_core.paths import jupyter_path
from nbconvert import HTMLExporter, filters
from nbconvert.exporters.templateexporter import default_filters
from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter
from nbjob import report_filters
from nbjob.report_filters import FILTERS, DataTypes


def outcome(function: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """What ``function(*args)`` gives: its value, or the type of what it raised."""
    try:
        return "value", function(*args)
    except Exception as e:
        return "raised", type(e)


def same(ours: Callable[..., Any], theirs: Callable[..., Any], *args: Any) -> Any:
    mine = outcome(ours, *args)
    assert mine == outcome(theirs, *args)
    if mine[0] == "value":
        assert type(mine[1]) is str or not isinstance(mine[1], str)  # a str, not a Markup
    return mine[1]


STRINGS = [
    "",
    "plain text",
    "a < b > c & d",
    "&amp; &lt; already escaped",
    "\"double\" and 'single' quotes",
    '<img src="x" onerror="alert(1)">',
    '</script><script>alert("x")</script>',
    "<!-- comment --> <![CDATA[ x ]]>",
    "path/to/file.png",
    "C:\\Users\\me\\file.png",
    "non-ASCII: é ü ß 日本語 🎉 \u200b",
    "tabs\tand\nnewlines\r\n",
    "\x1b[31mred\x1b[0m",
]
NOT_STRINGS = [None, 0, 42, 3.5, True, ["a", "<b>"], {"k": "<v>"}]


@pytest.mark.parametrize("value", STRINGS + NOT_STRINGS)
@pytest.mark.parametrize("name", ["escape_html", "escape_html_keep_quotes"])
def test_escape_html(name: str, value: Any) -> None:
    same(FILTERS[name], default_filters[name], value)


@pytest.mark.parametrize("value", STRINGS)
def test_escape_html_script(value: str) -> None:
    same(FILTERS["escape_html_script"], default_filters["escape_html_script"], value)
    json_text = json.dumps({"html": value})
    same(FILTERS["escape_html_script"], default_filters["escape_html_script"], json_text)


JSON_VALUES: list[Any] = [
    *STRINGS,
    None,
    1,
    1.5,
    [],
    {},
    {"model_id": "abc", "version_major": 2, "version_minor": 0},
    {"state": {"m1": {"model_name": "IntSliderModel", "state": {"value": 3, "d": "</script>"}}}},
    {"é": ["ü", {"n": None, "t": True}]},
]


@pytest.mark.parametrize("value", JSON_VALUES)
def test_json_dumps(value: Any) -> None:
    same(FILTERS["json_dumps"], default_filters["json_dumps"], value)
    node = nbformat.from_dict({"v": value})  # the templates dump NotebookNodes
    same(FILTERS["json_dumps"], default_filters["json_dumps"], node)


@pytest.mark.parametrize("value", STRINGS)
@pytest.mark.parametrize("name", ["posix_path", "text_base64", "strip_files_prefix"])
def test_string_filters(name: str, value: str) -> None:
    same(FILTERS[name], default_filters[name], value)


FILES_HTML = [
    '<p><img src="files/plot.png" alt="x"></p>',
    '<p><img src="/files/plot.png"></p>',
    "<a href='files/data.csv'>data</a> <a href=\"/files/sub/dir/a b.csv\">b</a>",
    "<a href=files/unquoted.txt>u</a> <img src=/files/u.png>",
    '<a href="https://example.com/files/x">not ours</a> <a href="myfiles/x">nor this</a>',
    "![a plot](files/plot.png) and [a link](/files/report.pdf) and ![](files/empty.png)",
    "[text](other/files/x.png) <code>src=\"files/x\"</code> SRC='files/upper'",
    "no files here",
    "",
]


@pytest.mark.parametrize("value", FILES_HTML)
def test_strip_files_prefix(value: str) -> None:
    ours = same(FILTERS["strip_files_prefix"], filters.strip_files_prefix, value)
    assert "files/" not in ours or "example.com" in ours or "other/" in ours or "SRC" in ours


def test_posix_path_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os.path, "sep", "\\")
    same(FILTERS["posix_path"], filters.posix_path, "C:\\Users\\me\\plot.png")


# ANSI escape sequences

E = "\x1b["
ANSI = [
    "",
    "plain text, no escapes",
    "<b>&amp;</b> 'quoted' \"double\"",
    f"{E}31mred{E}0m plain",
    f"{E}1;31mbold red{E}0m",
    f"{E}31;1mred then bold{E}m",
    f"{E}1mbold only{E}22m not bold",
    f"{E}4munder{E}24m over {E}7minverse{E}27m back",
    f"{E}7minverse, default colours{E}0m",
    f"{E}7;31;42minverse red on green{E}0m",
    f"{E}1;4;7;33;44mall of them{E}0m and after",
    f"{E}5mblink is bold{E}21mnot{E}0m",
    f"{E}31mred {E}39mdefault fg {E}41mred bg {E}49mdefault bg",
    f"{E}38;5;1mlow 256{E}0m {E}38;5;9mhigh 256{E}0m {E}1;38;5;3mbold 256{E}0m",
    f"{E}38;5;16mcube0 {E}38;5;17mcube1 {E}38;5;231mcube-last {E}38;5;232mgrey0 {E}38;5;255mg",
    f"{E}48;5;100mbg256 {E}38;5;196;48;5;21mfg and bg{E}0m",
    f"{E}38;2;255;128;0morange{E}0m {E}48;2;0;0;0mblack bg{E}0m",
    f"{E}7;38;2;1;2;3;48;2;4;5;6minverse rgb{E}27m",
    f"{E}38;2;256;0;0mout of range rgb{E}0m",
    f"{E}38;2;1;2mshort rgb{E}0m",
    f"{E}38;5;256mout of range 256{E}0m {E}38;5;-1mnegative",
    f"{E}38;5mmissing index{E}0m",
    f"{E}38;7;1mbad kind{E}0m",
    f"{E}1;x;31mnot a number{E}0m",
    f"{E} 1mspace {E}+1mplus {E}1_0munderscore",
    f"{E}99mnot a code {E}58;5;1munderline colour {E}3mitalic{E}0m",
    f"{E}Kerase line {E}2Jclear {E}1Aup {E}?25lcursor {E}0;0Hhome {E}1;2rregion",
    "progress  10%\r\x1b[Kprogress 100%\n",
    f"\x1b]0;a title\x07osc is not csi {E}32mgreen",
    "\x1b(Bcharset \x1b=keypad \x1bM reverse index",
    f"unterminated {E}31",
    f"unterminated {E}",
    f"{E}32mgreen then unterminated {E}1;3",
    "trailing escape \x1b",
    f"{E}&<>\"'m escaped params {E}<m",
    f"{E}31m<script>alert('x')</script> & \"q\"{E}0m",
    f"{E}1;32mnon-ASCII é 日本 🎉{E}0m",
    f"{E}mempty code {E};mempty parts {E};;31mleading empties{E}0m",
    f"{E}0;31;1;4m{E}0m{E}31m{E}0mempty runs",
    "\n".join(f"{E}{n}m{n}{E}0m" for n in range(110) if n not in (38, 48)),
    "\n".join(f"{E}1;{n}mbold {n}{E}0m" for n in [*range(30, 38), *range(90, 98)]),
    "\n".join(f"{E}{n};{b}m{n} on {b}{E}0m" for n in range(30, 38) for b in range(40, 48)),
    "\n".join(f"{E}38;5;{n};48;5;{255 - n}m{n}" for n in range(256)),
]

# A typical IPython traceback (ipykernel's error output, its escapes as the "linux" theme's)
TYPICAL_TRACEBACK = [
    f"{E}0;31m---------------------------------------------------------------------------{E}0m",
    f"{E}0;31mZeroDivisionError{E}0m                         Traceback (most recent call last)",
    f"Cell {E}32mIn[3], line 4{E}0m\n{E}1;32m      1{E}0m {E}38;5;28;01mdef{E}39;00m "
    f"{E}38;5;21mf{E}39m(x):\n{E}1;32m      2{E}0m     {E}38;5;28;01mreturn{E}39;00m x "
    f"{E}38;5;241m/{E}39m {E}38;5;241m0{E}39m\n{E}32m----> 4{E}0m "
    f'{E}43mf{E}49m({E}38;5;124m"{E}38;5;124m<b>&{E}38;5;124m"{E}39m)',
    f"{E}0;31mZeroDivisionError{E}0m: division by zero",
]


def _tracebacks() -> list[str]:
    """A real one, made by IPython's ultratb (both of its formatters), of an error whose
    message and code hold HTML's special characters."""
    from IPython.core import ultratb

    def inner(x: str) -> float:
        table = {"<b>&": 1}
        return table[x] / 0  # "<b>&'\"" in the source too

    try:
        inner("<b>&")
    except ZeroDivisionError:
        etype, value, tb = sys.exc_info()
    lines: list[str] = []
    for formatter in (
        ultratb.VerboseTB(theme_name="linux"),
        ultratb.FormattedTB(mode="Context", theme_name="linux"),
    ):
        lines += formatter.structured_traceback(etype, value, tb)
    assert any(E in line for line in lines)
    return lines


TRACEBACKS = [*TYPICAL_TRACEBACK, *_tracebacks()]
ANSI += [*TRACEBACKS, "\n".join(TRACEBACKS)]


@pytest.mark.parametrize("text", ANSI)
def test_ansi2html(text: str) -> None:
    same(FILTERS["ansi2html"], filters.ansi2html, text)


# Where nbconvert's ansi2html raises (IndexError: its page is not written at all), ours shows
# the text in the colours it had: the sequence's other codes apply, the lone 38 / 48 does not.
NBCONVERT_RAISES = {
    f"{E}38mfg alone": "fg alone",
    f"{E}48mbg alone": "bg alone",
    f"{E}31mred {E}1;38mstill red, bold": '<span class="ansi-red-fg">red </span>'
    '<span class="ansi-red-intense-fg ansi-bold">still red, bold</span>',
}


@pytest.mark.parametrize("text", NBCONVERT_RAISES)
def test_ansi2html_shows_what_nbconvert_fails_on(text: str) -> None:
    assert outcome(filters.ansi2html, text)[0] == "raised"
    assert FILTERS["ansi2html"](text) == NBCONVERT_RAISES[text]


def test_ansi2html_corpus_covers_the_cases() -> None:
    assert [t for t in ANSI if outcome(filters.ansi2html, t)[0] == "raised"] == []
    html = FILTERS["ansi2html"]("\n".join(ANSI))
    for part in ("ansi-red-intense-fg", "ansi-default-inverse-bg", "color: rgb(", "&lt;"):
        assert part in html


# get_metadata

OUTPUTS_METADATA: list[dict[str, Any]] = [
    {},
    {"metadata": None},
    {"metadata": {}},
    {"metadata": {"width": 10, "height": 20, "needs_background": "dark"}},
    {"metadata": {"image/png": {"width": 5, "unconfined": True}, "width": 10}},
    {"metadata": {"image/png": {"width": None, "height": 0}, "width": 10, "height": 7}},
    {"metadata": {"image/png": {}, "needs_background": "light"}},
    {"metadata": {"image/jpeg": {"needs_background": "light"}, "image/png": {"width": "50"}}},
    {"metadata": {"filenames": {"image/png": "a.png"}}, "data": {"image/png": "xx"}},
]


@pytest.mark.parametrize("mimetype", [None, "", "image/png", "image/jpeg"])
@pytest.mark.parametrize("key", ["width", "height", "unconfined", "needs_background", "nope"])
@pytest.mark.parametrize("output", OUTPUTS_METADATA)
def test_get_metadata(output: dict[str, Any], key: str, mimetype: str | None) -> None:
    for o in (output, nbformat.from_dict(output)):
        same(FILTERS["get_metadata"], filters.get_metadata, o, key, mimetype)
    if mimetype is None:
        same(FILTERS["get_metadata"], filters.get_metadata, output, key)


# filter_data_type

VIEW = "application/vnd.jupyter.widget-view+json"
STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_STATE = {STATE: {"version_major": 2, "version_minor": 0, "state": {"m1": {}, "m3": {}}}}
NOTEBOOK_METADATA: list[dict[str, Any]] = [
    {},
    {"kernelspec": {"name": "python3"}, "language_info": {"name": "python"}},
    {"widgets": WIDGET_STATE},
    {"widgets": {STATE: {"state": {}}}},
    {"widgets": None},
    {"widgets": {}},  # nbconvert raises KeyError: so must we
]


def view(model: str) -> dict[str, Any]:
    return {"model_id": model, "version_major": 2, "version_minor": 0}


DATA: list[dict[str, Any]] = [
    {"text/plain": "1"},
    {"image/png": "iVBOR", "text/plain": "<Figure>"},
    {"image/jpeg": "/9j/", "image/png": "iVBOR", "text/plain": "<Figure>"},
    {"text/html": "<b>x</b>", "text/plain": "x"},
    {VIEW: view("m1"), "text/plain": "IntSlider(value=3)"},
    {VIEW: view("m2"), "text/plain": "IntSlider(value=3)"},
    {VIEW: view("m1")},
    {VIEW: view("m2")},
    {VIEW: view("m3"), "text/html": "<p>fallback</p>", "application/javascript": "x()"},
    {"application/javascript": "alert(1)", "text/plain": "<IPython.core.display.Javascript>"},
    {"text/latex": "$x^2$", "text/plain": "x**2"},
    {"text/latex": "$x$", "image/png": "iVBOR", "text/plain": "x"},
    {"text/markdown": "# T", "text/html": "<h1>T</h1>", "text/plain": "T"},
    {"text/markdown": "**b**", "text/plain": "b"},
    {"image/svg+xml": "<svg/>", "image/png": "iVBOR", "text/plain": "<Figure>"},
    {"text/vnd.mermaid": "graph TD; A-->B", "text/plain": "A-->B"},
    {"application/pdf": "JVBER", "text/plain": "pdf"},
    {"application/vnd.plotly.v1+json": {}, "text/html": "<div>plot</div>", "text/plain": "P"},
    {"application/vnd.plotly.v1+json": {}},
    {"application/x-scrapbook+json": {"name": "m", "data": 1}},
    {"application/json": {"a": 1}},
    {},
]


def theirs_data_types(metadata: dict[str, Any]) -> WidgetsDataTypeFilter:
    """nbconvert's filter as HTMLExporter makes it for a notebook of this metadata."""
    resources = {"metadata": {"name": "nb", "path": "/work"}}
    nb_metadata = {os.path.join("/work", "nb"): nbformat.from_dict(metadata)}
    return WidgetsDataTypeFilter(
        notebook_metadata=nb_metadata, parent=HTMLExporter(), resources=resources
    )


def test_display_data_priority_is_html_exporters() -> None:
    priority = theirs_data_types({}).display_data_priority
    assert list(report_filters.DISPLAY_DATA_PRIORITY) == list(priority)
    assert list(DataTypes({}).priority) == list(priority)


@pytest.mark.parametrize("metadata", NOTEBOOK_METADATA)
def test_data_types(metadata: dict[str, Any]) -> None:
    theirs = theirs_data_types(metadata)
    ours = DataTypes(nbformat.from_dict(metadata))
    for data in DATA:
        for output in (data, nbformat.from_dict(data)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = outcome(theirs, output)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # ours never warns
                assert outcome(ours, output) == expected, data


def test_data_types_of_widgets() -> None:
    ours = DataTypes(nbformat.from_dict({"widgets": WIDGET_STATE}))
    assert ours({VIEW: view("m1"), "text/plain": "x"}) == [VIEW]
    assert ours({VIEW: view("m2"), "text/plain": "x"}) == ["text/plain"]
    assert ours({VIEW: view("m2")}) == []
    assert DataTypes({})({VIEW: view("m1"), "text/plain": "x"}) == ["text/plain"]


# clean_html

SVG_SCRIPT = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<svg xmlns="http://www.w3.org/2000/svg" width="100" height="50" onload="alert(1)">'
    '<script type="text/javascript">alert("x") && 1 < 2</script>'
    '<g id="figure_1" class="fig"><rect x="0" y="0" width="10" height="10" '
    'style="fill: #fff; stroke: red; behavior: url(x.htc)"/>'
    '<text x="1" y="2" onclick="evil()">a &lt; b &amp; é</text></g>'
    '<a xlink:href="javascript:alert(1)"><circle r="3"/></a></svg>'
)
CLEAN_HTML: list[Any] = [
    "",
    SVG_SCRIPT,
    SVG_SCRIPT.encode("utf-8"),  # the lab template's SVGs: .encode("utf-8") | clean_html
    "<p>plain <b>bold</b> <i>it</i> <code>x &lt; y</code></p>",
    '<div class="c" id="i" style="color: red; position: fixed" title="t">d</div>',
    '<table><tr><td class="x">1</td><th>h</th></tr></table><pre>pre</pre><span>s</span>',
    '<a href="https://example.com" title="t" rel="x" target="_blank">link</a>',
    '<a href="javascript:alert(1)">js</a> <img src="x.png" onerror="alert(1)">',
    "<iframe src='x'></iframe><style>body{}</style><!-- c --><object></object>",
    "unclosed <b>tag and < stray & ampersand",
    "non-ASCII é 日本 🎉 \"q\" 'q'",
    "raw cell text\nwith </script> and <script>alert(1)</script>",
    nbformat.from_dict({"a": 1}),  # anything: str() of it
    42,
]


@pytest.mark.parametrize("value", CLEAN_HTML)
def test_clean_html(value: Any) -> None:
    ours = same(FILTERS["clean_html"], filters.clean_html, value)
    # what bleach does not allow is left as text: no tag of a script, no handler on a tag
    assert "<script" not in ours and not re.search(r"<[^>]*\son\w+=", ours)


# every filter the templates use

NOT_HERE = {"markdown2html", "highlight_code", "filter_data_type"}


def template_filters() -> set[str]:
    folder = next(
        Path(p) for p in jupyter_path("nbconvert", "templates") if Path(p, "lab").is_dir()
    )
    env = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
    names: set[str] = set()
    for path in [*folder.glob("lab/*.j2"), *folder.glob("base/*.j2")]:
        tree = env.parse(path.read_text(encoding="utf-8"))
        names |= {node.name for node in tree.find_all(nodes.Filter)}
    return names


def test_every_template_filter_is_here() -> None:
    used = template_filters()
    assert {"ansi2html", "clean_html", "json_dumps", "filter_data_type"} <= used
    ours = used - set(jinja2.filters.FILTERS) - NOT_HERE
    assert ours == set(FILTERS)
    for name in FILTERS:
        assert name in default_filters  # nbconvert's names


# nothing heavy imported

CALLS = """
import sys
from nbjob import report_filters as f
f.FILTERS['escape_html']('<a>')
f.FILTERS['escape_html_keep_quotes']('"<a>"')
f.FILTERS['escape_html_script']('</script>')
f.FILTERS['get_metadata']({'metadata': {'image/png': {'width': 3}}}, 'width', 'image/png')
f.FILTERS['posix_path']('a/b')
f.FILTERS['strip_files_prefix']('<img src="files/a.png">')
f.FILTERS['text_base64']('<svg/>')
f.FILTERS['json_dumps']({'a': '</script>'})
f.FILTERS['ansi2html']('\\x1b[1;31m<red>\\x1b[0m')
types = f.DataTypes({'widgets': {'application/vnd.jupyter.widget-state+json': {'state': {}}}})
types({'text/plain': 'x', 'application/vnd.jupyter.widget-view+json': {'model_id': 'm'}})
types({'application/x-unknown': 1})
print(sorted(m for m in ('nbconvert', 'bleach', 'bs4') if m in sys.modules))
"""


def test_no_nbconvert_nor_bleach_imported() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CALLS], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
