"""The report's code highlighting is nbconvert's markup, its formatter and lexer reused."""

from __future__ import annotations

import pytest
from nbconvert.filters.highlight import Highlight2HTML
from nbjob import report

SOURCES = [
    "x = 1",
    "",
    "%matplotlib inline\n!ls -la\nfor i in range(3):\n    print(i)  # comment",
    "echo $HOME | tr a-z A-Z",
    'cat("R", 1 + 2)\n',
]


@pytest.mark.parametrize("language", ["ipython3", "ipython2", "python", "bash", "r", "nope"])
@pytest.mark.parametrize("source", SOURCES)
def test_same_markup_as_nbconvert(language: str, source: str) -> None:
    for _ in range(2):  # the second call reuses the formatter and the lexer
        ours = report.highlight(source, language)
        assert ours == Highlight2HTML(pygments_lexer=language)(source)


def test_magics_language_as_nbconvert() -> None:
    meta = {"magics_language": "bash"}
    source = "%%bash\necho hi"
    theirs = Highlight2HTML(pygments_lexer="ipython3")(source, metadata=meta)
    assert report.highlight(source, "ipython3", meta) == theirs
    assert "hl-ipython3" in theirs  # the class names the notebook's language, as nbconvert's
