"""The report's markdown filter (``nbjob.report_markdown``) writes what nbconvert writes, byte for
byte, without importing nbconvert (nor bs4 for plain markdown).

The oracle is what nbjob rendered with nbconvert before: ``MarkdownWithMath`` with
``IPythonRenderer`` and nbjob's inline HTML fix (jupyter/nbconvert#2020).
"""

from __future__ import annotations

import base64
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from nbjob import report_markdown, report_soup
from nbjob.report_markdown import markdown2html

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
PNG_B64 = base64.b64encode(PNG).decode("ascii")


def oracle(
    source: str,
    attachments: Mapping[str, Any] | None = None,
    path: str = "",
    embed_images: bool = True,
) -> str:
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    class _Renderer(IPythonRenderer):
        def inline_html(self, html: str) -> str:  # nbjob's override (jupyter/nbconvert#2020)
            return str(super().inline_html(html)) if "<img" in html.lower() else html

    r = _Renderer(
        escape=False,
        attachments=dict(attachments or {}),
        embed_images=embed_images,
        path=path,
        anchor_link_text="¶",
        exclude_anchor_links=False,
    )
    return str(MarkdownWithMath(renderer=r).render(source))


SOURCES = {
    # headings
    "h1": "# Title",
    "h-all-levels": "# One\n## Two\n### Three\n#### Four\n##### Five\n###### Six\n####### Seven",
    "h-no-space": "#Title without space\n##Second",
    "h-setext": "Title\n=====\n\nSub\n---",
    "h-inline-code": "## The `run()` function",
    "h-emphasis": "### *Emphasis* and **strong** and ~~gone~~",
    "h-link": "# See [the docs](https://example.com/docs?a=1&b=2)",
    "h-entity": "# Fish &amp; Chips &lt;3",
    "h-nbsp-entity": "# Non&nbsp;breaking",
    "h-non-ascii": "# Überblick — 日本語 ✓ ¶",
    "h-duplicates": "# Same\n\ntext\n\n# Same\n\n## Same",
    "h-specials": "# 100% sure? (yes/no) #tag 'quoted' \"double\"",
    "h-closing-hashes": "## Closed heading ##",
    "h-math": "# Energy $E = mc^2$",
    "h-inline-html": '# A <span style="color:red">red</span> word',
    "h-empty": "#\n\ntext",
    "h-indented": "   # three spaces",
    # paragraphs and inline
    "paragraphs": "First paragraph\nstill first.\n\nSecond paragraph.",
    "emphasis": "*em* _em_ **strong** __strong__ ***both*** ~~strike~~",
    "inline-code": "Use `x = 1` and ``a ` b`` here, `<tag> & $x$`.",
    "links": '[text](http://example.com "Title") and [ref][r]\n\n[r]: https://example.org/x',
    "autolinks": "<https://example.com/a?b=c> and www.example.com and https://bare.example.com",
    "email-autolink": "Mail <someone@example.com>",
    "harmful-link": "[x](javascript:alert(1))",
    "escapes": r"\*not em\* \_ \# \` \\ \[x\]",
    "hard-breaks": "line one  \nline two\\\nline three",
    "html-chars": "a < b > c & d &copy; &#169; &#xA9; &bogus;",
    # lists
    "ul": "- one\n- two\n- three",
    "ol": "1. one\n2. two\n3. three",
    "ol-start": "3. three\n4. four",
    "nested-lists": "- a\n  - b\n    1. c\n    2. d\n- e\n\n  para in e",
    "loose-list": "* a\n\n* b\n\n* c",
    "task-list": "- [ ] todo\n- [x] done",
    "def-list": "Term\n: Definition one\n: Definition two",
    # blocks
    "blockquote": "> quoted\n> > nested\n>\n> - list in quote",
    "hr": "above\n\n---\n\n***\n\n___\n\nbelow",
    "table": "| a | b |\n|---|:-:|\n| 1 | 2 |\n| `x` | *y* |",
    "table-align": "| left | center | right |\n|:-----|:------:|------:|\n| l | c | r |",
    # code
    "fence-python": "```python\ndef f(x):\n    return x < 1 and 'a' or \"b\"\n```",
    "fence-bash": "```bash\necho $HOME | grep -v '^#' > out.txt\n```",
    "fence-unknown": "```nolanguage\nsome <code> & stuff\n```",
    "fence-unknown-extra": "```notalang with extra\nx\n```",
    "fence-no-lang": "```\nplain <b>code</b>\n```",
    "fence-lang-extra": "```python title=x\nprint(1)\n```",
    "fence-tilde": "~~~ruby\nputs 1\n~~~",
    "fence-spaces-info": "```   \nblank info\n```",
    "fence-mermaid": "```mermaid\ngraph TD;\n  A-->B;\n```",
    "fence-ipython": "```ipython3\n%matplotlib inline\nx = 1\n```",
    "fence-in-list": "- item\n\n  ```python\n  x = 1\n  ```",
    "indented-code": "para\n\n    indented <code>\n    more & more\n\nafter",
    # raw HTML
    "inline-span": 'Text <span style="color:red">x</span> more',
    "inline-tags": "A <b>bold</b> <i>it</i> <kbd>Ctrl</kbd> <sup>2</sup> <br> end",
    "inline-comment": "text <!-- hidden --> more",
    "block-div": '<div class="alert alert-block alert-info">\n<b>Tip:</b> Use blue boxes.\n</div>',
    "block-div-indented": "<div>\n    <p>indented</p>\n    <p>kept?</p>\n</div>",
    "block-div-attrs-unsorted": '<div style="x" class="a">\nhi\n</div>',
    "block-div-unquoted": "<div class=note>\nhi\n</div>",
    "block-div-entity": "<div>\nFish &amp; chips &nbsp; &copy;\n</div>",
    "block-div-gt": "<div>\na > b\n</div>",
    "block-div-uppercase": "<DIV CLASS='x'>\nhi\n</DIV>",
    "block-div-class-spaces": '<div class="a  b ">\nhi\n</div>',
    "block-br": "<div>\nline<br>\nline<br/>\n</div>",
    "block-unclosed": "<div>\n<p>unclosed\n</div>",
    "block-comment": "<!-- a comment -->\n\ntext",
    "block-comment-empty": "<!---->\n\ntext",
    "block-comment-blank": "<!--   -->",
    "block-table": "<table>\n<tr><th>a</th><td>1</td></tr>\n</table>",
    "block-pre": "<pre>\n  keep   this\n\n</pre>",
    "block-script": "<script>\nvar a = 1 < 2;\n</script>",
    "block-style": "<style>\n.a > .b { color: red; }\n</style>",
    "block-details": "<details>\n<summary>More</summary>\n\n*markdown* inside\n\n</details>",
    "block-doctype": "<!DOCTYPE html>\n<p>x</p>",
    "block-selfclosing-div": "<div/>\n\ntext",
    "block-void-with-end": "<div>\n<br></br>\n</div>",
    "block-attr-noval": "<div>\n<input disabled>\n</div>",
    "block-attr-quote": "<div title='say \"hi\"'>\nx\n</div>",
    "block-nonascii": "<div>\nÜber — ✓\n</div>",
    "block-tab": "<div>\t\n</div>",
    "block-trailing-ws": "<div>x</div>   \n\n<p>y</p>",
    # math
    "math-inline": "Inline $a^2 + b^2 = c^2$ math.",
    "math-display": "Display:\n\n$$\n\\int_0^1 x\\,dx = \\frac{1}{2}\n$$",
    "math-display-inline": "Text $$x_1$$ more",
    "math-latex-paren": "Inline \\\\(\\alpha\\\\) and \\\\[\\beta\\\\]",
    "math-latex-brackets-block": "\\\\[\n\\sum_i x_i\n\\\\]",
    "math-env": "\\begin{equation}\nx = 1\n\\end{equation}",
    "math-env-star": "\\begin{align*}\na &= b \\\\\nc &= d\n\\end{align*}",
    "math-lt-gt-amp": "$a<b$ and $c > d$ and $x & y$ and $$p<q>r$$",
    "math-underscores": "$x_1 * y_2 * z_3$ not emphasis",
    "math-dollars-in-code": "`$HOME` and `$x$` in code, and ```$$y$$```",
    "math-escaped-dollars": r"It costs \$5 and \$10, not $x$.",
    "math-escaped-display": r"\$\$ not math \$\$",
    "math-in-list": "- $x$\n- $$y$$",
    "math-multiline-paragraph": "$$\na\n\nb\n$$",
    "math-single-dollar": "Just a $ sign",
    "math-empty": "$$ and $$",
    # images (no attachments nor files)
    "image-remote": '![remote](https://example.com/x.png "A title")',
    "image-missing-file": "![missing](no-such-file.png)",
    "image-inline-html-remote": 'Look <img src="https://example.com/y.png" width="10"> here',
    "image-block-html-remote": '<img src="https://example.com/y.png" alt="y">',
    "image-data-url": "![d](data:image/png;base64,AAAA)",
    # edge cases
    "empty": "",
    "whitespace": "   \n\t\n  ",
    "newlines": "\n\n\n",
    "crlf": "# Title\r\n\r\ntext\r\nmore",
    "mixed": "# Report\n\nSome *text* with $x$.\n\n```python\nx = 1\n```\n\n| a |\n|---|\n| 1 |",
}


@pytest.mark.parametrize("source", list(SOURCES.values()), ids=list(SOURCES))
def test_same_html_as_nbconvert(source: str) -> None:
    for _ in range(2):  # the second call reuses the parser, the lexer and the formatter
        assert markdown2html(source) == oracle(source)


@pytest.mark.parametrize("source", list(SOURCES.values())[::7], ids=list(SOURCES)[::7])
def test_without_embedding_as_nbconvert(source: str) -> None:
    assert markdown2html(source, embed_images=False) == oracle(source, embed_images=False)


ATTACHMENTS = {
    "a.png": {"image/png": PNG_B64},
    "both.png": {"image/jpeg": "SlBFRw==", "image/png": PNG_B64},
    "vector.svg": {"image/png": PNG_B64, "image/svg+xml": "PHN2Zy8+"},
    "other.gif": {"image/gif": "R0lGODlh", "text/plain": "eA=="},
}
ATTACHMENT_SOURCES = {
    "png": "![alt](attachment:a.png)",
    "png-title": '![alt *em*](attachment:a.png "T")',
    "prefer-png": "![both](attachment:both.png)",
    "prefer-svg": "![v](attachment:vector.svg)",
    "first-mime": "![g](attachment:other.gif)",
    "in-heading": "# Logo ![l](attachment:a.png)",
    "in-list": "- ![a](attachment:a.png)\n- text",
    "inline-html-not-attachment": 'x <img src="attachment:a.png"> y',
}


@pytest.mark.parametrize("embed", [True, False])
@pytest.mark.parametrize("source", list(ATTACHMENT_SOURCES.values()), ids=list(ATTACHMENT_SOURCES))
def test_attachments_as_nbconvert(source: str, embed: bool) -> None:
    ours = markdown2html(source, attachments=ATTACHMENTS, embed_images=embed)
    assert ours == oracle(source, attachments=ATTACHMENTS, embed_images=embed)


def test_missing_attachment_raises_as_nbconvert() -> None:
    from nbconvert.filters.markdown_mistune import InvalidNotebook

    source = "![x](attachment:nope.png)"
    with pytest.raises(InvalidNotebook) as theirs:
        oracle(source, attachments=ATTACHMENTS)
    with pytest.raises(report_markdown.InvalidNotebook) as ours:
        markdown2html(source, attachments=ATTACHMENTS)
    assert str(ours.value) == str(theirs.value) == "missing attachment: nope.png"
    # the next call does not keep the previous call's attachments
    with pytest.raises(report_markdown.InvalidNotebook):
        markdown2html("![alt](attachment:a.png)")
    assert markdown2html("![alt](attachment:a.png)", attachments=ATTACHMENTS) == oracle(
        "![alt](attachment:a.png)", attachments=ATTACHMENTS
    )


FILE_SOURCES = {
    "file": "![pic](pic.png)",
    "file-sub": "![pic](sub/deep.png)",
    "file-jpg-unknown-ext": "![f](data.weird)",
    "file-outside": "![out](../outside.png)",
    "file-outside-dotdot-sub": "![out](sub/../../outside.png)",
    "file-absolute-outside": "![abs]({outside})",
    "file-absolute-inside": "![abs]({inside})",
    "file-inline-html": 'A <img src="pic.png" alt="p"> inline',
    "file-inline-html-outside": 'A <img src="../outside.png"> inline',
    "file-block-html": '<img src="pic.png" width="20">',
    "file-block-html-div": '<div align="center">\n<img src="sub/deep.png">\n</div>',
    "file-block-html-outside": '<div>\n<img src="../outside.png"/>\n</div>',
    "file-missing": "![m](missing.png)",
    "file-folder": "![d](sub)",  # nbconvert fails on it (IsADirectoryError): so does nbjob
    "file-remote": "![r](https://example.com/pic.png)",
}


def outcome(render: Callable[..., str], source: str, **kw: Any) -> str | tuple[str, str]:
    """The HTML, or the error's type and message."""
    try:
        return render(source, **kw)
    except Exception as e:
        return type(e).__name__, str(e)


@pytest.mark.parametrize("embed", [True, False])
@pytest.mark.parametrize("source", list(FILE_SOURCES.values()), ids=list(FILE_SOURCES))
def test_files_as_nbconvert(tmp_path: Path, source: str, embed: bool) -> None:
    folder = tmp_path / "nb"
    (folder / "sub").mkdir(parents=True)
    (folder / "pic.png").write_bytes(PNG)
    (folder / "sub" / "deep.png").write_bytes(PNG)
    (folder / "data.weird").write_bytes(b"\x00\x01 weird")
    (tmp_path / "outside.png").write_bytes(PNG)
    source = source.format(outside=tmp_path / "outside.png", inside=folder / "pic.png")
    ours = outcome(markdown2html, source, path=str(folder), embed_images=embed)
    assert ours == outcome(oracle, source, path=str(folder), embed_images=embed)
    if embed and source in ("![pic](pic.png)", FILE_SOURCES["file-block-html"]):
        assert f"data:image/png;base64,{PNG_B64}" in ours
    if "outside" in source:
        assert "base64" not in str(ours)  # nbconvert 7.17: nothing from outside the folder


def test_same_html_as_nbconvert_fuzzed() -> None:
    """Random markdown out of pieces (math, code, HTML, lists, images...): the same HTML, or the
    same error."""
    pieces = [
        "# ", "## ", "#", "\n", "\n\n", "text", " ", "*", "**", "_", "`", "```", "```python\n",
        "```foo\n", "```mermaid\n", "$", "$$", "\\$", "\\\\(", "\\\\)", "\\\\[", "\\\\]",
        "\\begin{equation}", "\\end{equation}", "\\begin{align*}", "\\end{align*}", "<", ">", "&",
        "&amp;", "&nbsp;", "<div>", "</div>", '<span style="color:red">', "</span>", "<br>",
        '<img src="x.png">', "<!-- c -->", "- ", "1. ", "> ", "    ", "|a|b|\n|-|-|\n|1|2|",
        "[l](http://x.y)", "![i](attachment:a.png)", "![j](y.png)", "![k](attachment:no.png)",
        "---", "===", "~~", "Über", "日本", "a<b", "x_1", "\\", "<https://e.com>", "www.x.com",
        "  \n", "<p>", "</p>", "<details>", "- [ ] ", "Term\n: def", "&#169;", "'", '"', "(", ")",
        "[", "]", "{", "}", "<pre>", "</pre>", "\t",
    ]  # fmt: skip
    rng = random.Random(2020)
    for _ in range(300):
        source = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        ours = outcome(markdown2html, source, attachments=ATTACHMENTS)
        assert ours == outcome(oracle, source, attachments=ATTACHMENTS), source


def test_threads_share_the_parser_safely() -> None:
    sources = list(SOURCES.values())
    expected = [oracle(s) for s in sources]
    failures: list[str] = []

    def work() -> None:
        for source, html in zip(sources, expected, strict=True):
            if markdown2html(source) != html:
                failures.append(source)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


BS4_HTML = [  # written as bs4 writes them, without bs4
    '<div class="alert alert-block alert-info">\n<b>Tip:</b> Use blue boxes.\n</div>\n',
    "<div>\n    <p>indented</p>\n    <p>more</p>\n</div>\n",
    '<div style="x" class="a  b ">\nhi\n</div>\n',
    "<div class=note>\n<br>\n<hr/>\n<input disabled>\n</div>\n",
    "<details>\n<summary>More</summary>\n",
    '<DIV Title=\'say "hi"\' data-x="it\'s">a > b < c</DIV>\n',
    "<!--   -->\n<!---->\n<!-- a comment -->\n",
    "<pre>\n  keep   this\n\n</pre>\n<div>\t</div>",
    '<table>\n  <tr><th>a</th><td headers=" h1  h2">1</td></tr>\n</table>\n',
    '<a rel=" x  y " href="u">l</a><span rel=" x  y ">s</span>',
    "<div/><p a='1'>x</p >",
    "</p>",
    "<p><b>x</p></b>\n</details>\n",
]
BS4_ITSELF = [  # left to bs4
    "<div>\nFish &amp; chips &nbsp;\n</div>\n",
    "<script>\nvar a = 1 < 2;\n</script>\n",
    "<!DOCTYPE html>\n",
    "<br></br>",
    "<meta charset='x'>",
]


def bs4_writes(html: str) -> str:
    import bs4

    return str(bs4.BeautifulSoup(html, features="html.parser"))


@pytest.mark.parametrize("html", BS4_HTML + BS4_ITSELF)
def test_html_written_as_bs4_writes_it(html: str) -> None:
    written = report_soup.written(html)
    assert (written is None) == (html in BS4_ITSELF)
    if written is not None:
        assert written == bs4_writes(html)


def test_html_written_as_bs4_writes_it_fuzzed() -> None:
    """Random HTML out of pieces: whatever ``report_soup.written`` writes, bs4 writes too."""
    pieces = [
        "<div>", "</div>", "<p>", "</p>", "<span>", "</span>", "<pre>", "</pre>", "<b>", "</b>",
        "<br>", "<br/>", "<hr />", "<img src='x.png'>", "<div/>", "<td headers='a  b'>", "</td>",
        '<div class=" a  b" id=x>', '<a rel="x  y" title=\'"q"\'>', "</a>", "<input disabled>",
        "<P>", "</P>", "<div\nclass='m'>", "<textarea>", "</textarea>", "<script>", "</script>",
        " ", "  ", "\n", "\n  \n", "\t", "\x0c", "text", " a > b ", "1 < 2", "<", ">", "Über",
        "<!-- c -->", "<!---->", "<!--  -->", "&amp;", "'", '"', "</", "<!x>", "<?pi?>", "-->",
        "</br>", "</img>", "</i>", "<i>",
    ]  # fmt: skip
    rng = random.Random(2020)
    foreseen = 0
    for _ in range(3000):
        html = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        written = report_soup.written(html)
        if written is not None:
            foreseen += 1
            assert written == bs4_writes(html), html
    assert foreseen > 500  # the fuzzing reaches the path without bs4


def test_imports_neither_nbconvert_nor_bs4() -> None:
    code = (
        "import sys, nbjob.report_markdown as m; "
        "m.markdown2html('# t\\n\\n*x* $a<b$\\n```python\\nx=1\\n```'); "
        "print(sorted(k for k in ('nbconvert','bs4') if k in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
