"""R (IRkernel, whose kernelspec language is ``R``): parameters, environment and folder.

The parameters cell is papermill's (``RTranslator``): ``NULL``, ``TRUE``/``FALSE``, numbers,
``list(...)`` for lists and ``list("key" = value)`` for mappings, and a leading ``_`` dropped
from a name (R names cannot start with one). Where papermill's text is not R, it is fixed
here: NaN and infinities are ``NaN``/``Inf``/``-Inf`` (papermill writes ``nan``/``inf``), and
strings escape every non-ASCII character as ``\\uXXXX`` (papermill's ``\\xe9`` is a byte in
R, not ``é``), so the value is the same whatever the kernel's locale. R numbers are doubles:
an integer beyond 2**53 is rounded, as R itself would read it.

What R lacks here: the GPU probe, the requirements check and the in-kernel file transfer
(nbjob reads a helper's result back as a user expression, and IRkernel answers none),
recorded in run.json's ``kernel.unsupported``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from nbjob.errors import ParameterError
from nbjob.languages._base import Language, check_value, finite
from nbjob.languages._quote import number, quoted

__all__ = ["R"]

# Words R reserves: as a parameter name they are written in backticks.
_RESERVED_WORDS = (
    "if else repeat while function for in next break TRUE FALSE NULL Inf NaN NA NA_integer_"
    " NA_real_ NA_character_ NA_complex_"
)
_RESERVED = frozenset(_RESERVED_WORDS.split())
# A top-level assignment: `name = ...`, `name <- ...`, `name <<- ...` (or a backticked name).
_ASSIGNED = re.compile(r"^(`[^`]+`|[A-Za-z.][\w.]*)\s*(?:<<?-|=(?!=))")


class R(Language):
    """R kernels."""

    name: ClassVar[str] = "r"
    default_kernel: ClassVar[str | None] = "ir"
    kernels: ClassVar[tuple[str, ...]] = ("sparkrkernel",)  # sparkmagic's SparkR

    def literal(self, value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if not finite(value):
            return "NaN" if value != value else ("Inf" if value > 0 else "-Inf")
        if isinstance(value, str):
            return self.string(value)
        if isinstance(value, dict):
            items = (f"{self.string(str(k))} = {self.literal(v)}" for k, v in value.items())
            return "list(" + ", ".join(items) + ")"
        if isinstance(value, list | tuple):
            return "list(" + ", ".join(self.literal(v) for v in value) + ")"
        check_value(value)  # ParameterError for any other type
        return number(value)

    def string(self, text: str) -> str:
        """An R string literal, ASCII only (locale-independent)."""
        return quoted(text, "R", ascii_only=True)

    def assign(self, name: str, source: str) -> str:
        bare = name.lstrip("_")  # as papermill: R names cannot start with "_"
        if not bare:
            raise ParameterError(f"{name!r} is not a name R can hold")
        return f"{self.name_of(bare)} = {source}"

    def name_of(self, name: str) -> str:
        """``name`` as R source: in backticks where R reserves the word."""
        return f"`{name}`" if name in _RESERVED else name

    def comment(self, text: str) -> str:
        return f"# {text}"

    def declared_names(self, source: str) -> set[str] | None:
        found = (_ASSIGNED.match(line) for line in source.splitlines())
        return {m.group(1).strip("`") for m in found if m}

    def set_env(self, name: str, value: str) -> str:
        return f"Sys.setenv({self.string(name)} = {self.string(value)})"

    def chdir(self, path: str) -> str:
        return f"setwd({self.string(path)})"

    def forget(self, name: str) -> str:
        return f"suppressWarnings(rm({self.name_of(name)}))"
