"""Scala (almond, spylon, sparkmagic's ``sparkkernel``; language ``scala``): parameters only.

papermill's shape (``ScalaTranslator``): ``val name = value``, ``None`` for None, ``Seq(...)``
and ``Map(key -> value)``, an ``L`` suffix on integers beyond 32 bits. Fixed here: an integer
beyond 64 bits is ``BigInt("...")``, NaN and infinities are ``Double.NaN`` /
``Double.PositiveInfinity`` / ``Double.NegativeInfinity``, and a name Scala reserves is in
backticks.

Not tested against a real Scala kernel here (none is packaged for this image): the cell's text
is checked against golden strings. Everything else nbjob asks of a kernel is recorded as
unsupported in run.json.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from nbjob.languages._base import Language, check_value, finite
from nbjob.languages._quote import number, quoted, u4

__all__ = ["Scala"]

_RESERVED_WORDS = (
    "abstract case catch class def do else enum export extends false final finally for forSome"
    " given if implicit import lazy macro match new null object override package private"
    " protected return sealed super then this throw trait true try type val var while with"
    " yield"
)
_RESERVED = frozenset(_RESERVED_WORDS.split())
_ASSIGNED = re.compile(
    r"^\s*(?:(?:private|protected|lazy|final|implicit)\s+)*va[lr]\s+(`[^`]+`|\w+)"
)


def integer(value: int, big: str) -> str:
    """An integer for the JVM and .NET: ``1``, ``5000000000L``, else ``big`` of its digits."""
    if -(2**31) <= value < 2**31:
        return number(value)
    if -(2**63) <= value < 2**63:
        return f"{value}L"
    return big.format(number(value))


class Scala(Language):
    """Scala kernels."""

    name: ClassVar[str] = "scala"
    default_kernel: ClassVar[str | None] = "scala"
    kernels: ClassVar[tuple[str, ...]] = ("sparkkernel",)  # sparkmagic's Spark

    def literal(self, value: Any) -> str:
        if value is None:
            return "None"
        if isinstance(value, bool):
            return "true" if value else "false"
        if not finite(value):
            if value != value:
                return "Double.NaN"
            return "Double.PositiveInfinity" if value > 0 else "Double.NegativeInfinity"
        if isinstance(value, str):
            return quoted(value, "Scala", unicode=u4)
        if isinstance(value, dict):
            items = (f"{self.literal(k)} -> {self.literal(v)}" for k, v in value.items())
            return "Map(" + ", ".join(items) + ")"
        if isinstance(value, list | tuple):
            return "Seq(" + ", ".join(self.literal(v) for v in value) + ")"
        check_value(value)  # ParameterError for any other type
        if isinstance(value, int):
            return integer(value, 'BigInt("{}")')
        return number(value)

    def assign(self, name: str, source: str) -> str:
        return f"val {f'`{name}`' if name in _RESERVED else name} = {source}"

    def comment(self, text: str) -> str:
        return f"// {text}"

    def declared_names(self, source: str) -> set[str] | None:
        found = (_ASSIGNED.match(line) for line in source.splitlines())
        return {m.group(1).strip("`") for m in found if m}
