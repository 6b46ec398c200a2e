"""String literals for the languages whose strings are double-quoted with backslash escapes.

papermill escapes with Python's ``unicode_escape`` codec, which writes ``é`` as ``\\xe9``: a
byte, not the character, in R, Julia and C#. Here each character is escaped as the target
language reads it: the named escapes it has, a Unicode escape for other control characters
(and, where asked, for everything beyond ASCII), the character itself otherwise.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Mapping
from typing import Any

from nbjob.errors import ParameterError

# The escapes C, R, Julia, Scala, C# and F# all read the same way.
COMMON: Mapping[str, str] = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def u4(code: int) -> str:
    """``\\uXXXX`` (and a surrogate pair beyond the BMP: Scala's and C#'s only form)."""
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def u8(code: int) -> str:
    """``\\uXXXX`` or ``\\UXXXXXXXX`` (R, Julia, C#, F#: up to 8 hex digits, read greedily, so
    always all 8)."""
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def quoted(
    text: str,
    language: str,
    unicode: Callable[[int], str] = u8,
    extra: Mapping[str, str] | None = None,
    ascii_only: bool = False,
) -> str:
    """``text`` as a double-quoted literal of ``language``: ``COMMON`` and ``extra`` escapes,
    ``unicode(code)`` for other control characters (and non-ASCII with ``ascii_only``).
    NUL is a ``ParameterError``: these languages' strings cannot hold it portably."""
    if "\0" in text:
        raise ParameterError(f"a {language} string cannot hold a NUL character")
    table = {**COMMON, **(extra or {})}
    out = []
    for char in text:
        code = ord(char)
        if char in table:
            out.append(table[char])
        elif code < 0x20 or code == 0x7F or (ascii_only and code > 0x7F):
            out.append(unicode(code))
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def number(value: Any) -> str:
    """A finite int or float as decimal text: ``repr`` for a float, every digit of an int (even
    one longer than Python's 4300-digit ``str`` limit)."""
    if isinstance(value, int):
        return str(decimal.Decimal(value))
    return repr(value)
