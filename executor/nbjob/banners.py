"""The red banners of a run that did not finish, as papermill writes them.

``add`` puts one at the top of the executed notebook and one right before the cell where the
run stopped (its reason scrubbed as run.json's is, ``logs.redact``); ``remove`` takes out the
banners an earlier run left, nbjob's or papermill's, before a notebook runs again. They are
markdown cells tagged ``BANNER_TAG``.
"""

from __future__ import annotations

from typing import Any

from nbjob import logs

BANNER_TAG = "nbjob-error-banner"
_STALE_BANNERS = (BANNER_TAG, "papermill-error-cell-tag")
_STYLE = "color:red; font-family:Helvetica Neue, Helvetica, Arial, sans-serif; font-size:1.5em;"


def remove(nb: Any) -> None:
    nb.cells = [
        c for c in nb.cells if not set(c.get("metadata", {}).get("tags", [])) & set(_STALE_BANNERS)
    ]


def _banner(html: str) -> Any:
    import nbformat

    return nbformat.v4.new_markdown_cell(html, metadata={"tags": [BANNER_TAG]})


def add(nb: Any, index: int, reason: str) -> None:
    """Red banners at the top and right before cell ``index``, as papermill does; the reason
    scrubbed as run.json's is (``logs.redact``)."""
    text = logs.redact(reason).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    nb.cells.insert(
        index,
        _banner(f'<span id="nbjob-error-cell" style="{_STYLE}">nbjob stopped here: {text}</span>'),
    )
    nb.cells.insert(
        0,
        _banner(
            f'<span style="{_STYLE}">This run did not finish: {text}. '
            f'<a href="#nbjob-error-cell">Go to the cell</a>.</span>'
        ),
    )
