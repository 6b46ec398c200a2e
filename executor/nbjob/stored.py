"""The bytes nbjob stores of the notebook and of run.json, made an item of their long list (the
cells) at a time (``listed_json``): the same text as ``json.dumps`` of the whole, without the
memory it takes for a long notebook.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from typing import Any

from nbjob import logs

__all__ = ["listed_json", "notebook_bytes", "record_bytes"]


def notebook_bytes(nb: Any) -> bytes:
    """``nb`` as stored: its JSON with one space a level, keys sorted, then a newline."""
    return listed_json(nb, "cells", _notebook_json, 1)


def _notebook_json(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False)


def listed_json(doc: Any, key: str, dumps: Callable[[Any], str], indent: int) -> bytes:
    """``dumps(doc)`` and a newline, made an item of the list ``doc[key]`` at a time (``dumps``
    indents ``indent`` spaces a level): with an indent, ``json.dumps`` builds the whole text from
    small pieces in Python, ~6 bytes of memory for each byte of a long notebook's or run.json's
    text (47 MiB for a 20,000-cell notebook, at every checkpoint); an item at a time, into one
    growing buffer, about the text's size. The same bytes (tested)."""
    items = doc.get(key)
    if not isinstance(items, Sequence) or isinstance(items, str | bytes) or not items:
        plain = not isinstance(items, Sequence) or isinstance(items, list | tuple | str | bytes)
        return (dumps(doc if plain else {**doc, key: []}) + "\n").encode()  # a view: empty
    frame = dumps({**doc, key: []})
    mark = "\n" + " " * indent + json.dumps(key) + ": []"  # one level deep: only doc's own key
    at = frame.find(mark)
    pad = " " * (2 * indent)
    out = io.BytesIO()  # grows in place, its value not copied: the text about once in memory
    out.write((frame[:at] + mark[:-1] + "\n").encode())
    for n, item in enumerate(items):  # JSON text has no newline inside a string
        out.write(((",\n" if n else "") + pad + dumps(item).replace("\n", "\n" + pad)).encode())
    out.write(("\n" + " " * indent + "]" + frame[at + len(mark) :] + "\n").encode())
    return out.getvalue()


def record_bytes(record: dict[str, Any]) -> bytes:
    """run.json's text: two spaces a level, known secrets redacted, made a cell at a time."""
    return listed_json(record, "cells", _record_json, 2)


def _record_json(value: Any) -> str:
    return logs.redacted_json(value, indent=2, default=str)
