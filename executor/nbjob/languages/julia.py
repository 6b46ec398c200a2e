"""Julia (IJulia, language ``julia``): the parameters cell only.

papermill's shape (``JuliaTranslator``): ``nothing``, ``true``/``false``, numbers, ``[...]``
for lists and ``Dict(key => value)`` for mappings. Fixed here: ``$`` in a string is escaped
(papermill's ``"$HOME"`` interpolates), NaN and infinities are ``NaN``/``Inf``/``-Inf``, a
non-ASCII character is itself (papermill's ``\\xe9`` is a byte in Julia), and a name Julia
reserves (``end``, ``function``) is written ``var"end"``.

Not tested against a real Julia kernel here (none is packaged for this image): the cell's text
is checked against golden strings. What else nbjob asks of a kernel (environment, folder, GPU
probe, requirements, file transfer) is recorded as unsupported in run.json.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from nbjob.languages._base import Language, check_value, finite
from nbjob.languages._quote import number, quoted

__all__ = ["Julia"]

_RESERVED_WORDS = (
    "baremodule begin break catch const continue do else elseif end export false finally for"
    " function global if import let local macro module quote return struct true try using while"
    " abstract mutable primitive type where outer"
)
_RESERVED = frozenset(_RESERVED_WORDS.split())
_ASSIGNED = re.compile(r'^(var"[^"]+"|[A-Za-z_]\w*!?)\s*(?:::[^=]+)?=(?!=)')


class Julia(Language):
    """Julia kernels."""

    name: ClassVar[str] = "julia"

    def literal(self, value: Any) -> str:
        if value is None:
            return "nothing"
        if isinstance(value, bool):
            return "true" if value else "false"
        if not finite(value):
            return "NaN" if value != value else ("Inf" if value > 0 else "-Inf")
        if isinstance(value, str):
            return quoted(value, "Julia", extra={"$": "\\$"})
        if isinstance(value, dict):
            items = (f"{self.literal(k)} => {self.literal(v)}" for k, v in value.items())
            return "Dict(" + ", ".join(items) + ")"
        if isinstance(value, list | tuple):
            return "[" + ", ".join(self.literal(v) for v in value) + "]"
        check_value(value)  # ParameterError for any other type
        return number(value)

    def assign(self, name: str, source: str) -> str:
        target = f'var"{name}"' if name in _RESERVED else name
        return f"{target} = {source}"

    def comment(self, text: str) -> str:
        return f"# {text}"

    def declared_names(self, source: str) -> set[str] | None:
        found = (_ASSIGNED.match(line) for line in source.splitlines())
        return {m.group(1).removeprefix('var"').rstrip('"') for m in found if m}
