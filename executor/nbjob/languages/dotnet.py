""".NET Interactive's languages, as papermill names them: C# (``.net-csharp``), F#
(``.net-fsharp``) and PowerShell (``.net-powershell``, and PowerShell kernels): parameters only.

papermill's shapes (``CSharpTranslator``, ``FSharpTranslator``, ``PowershellTranslator``), with
what papermill leaves broken written here:

- C#: ``var name = value;``; None is ``(object)null`` (papermill refuses it); a list is
  ``new [] { ... }`` when its items share one scalar type, else ``new object[] { ... }``
  (``new [] { 1, "a" }`` does not compile); ``new Dictionary<string,Object>{ { "k" , v } }``.
- F#: ``let name = value``; ``None``; ``[ a; b ]`` (items of mixed types boxed); ``[ ("k", v :>
  System.IComparable) ] |> Map.ofList`` (papermill's ``IComparable`` needs ``open System``).
- PowerShell: ``$name = value``; strings escape with backticks, not backslashes (papermill's
  ``"a\\nb"`` is a backslash and an ``n`` in PowerShell), ``$`` included (``"$HOME"``
  interpolates); ``$Null``, ``$True``, ``@(...)``, ``@{"k" = v; ...}``.

NaN and infinities are each language's own names; an integer beyond 64 bits is a big integer.
Not tested against real .NET kernels here (none is packaged for this image): the cells' text is
checked against golden strings. Everything else nbjob asks of a kernel is recorded as
unsupported in run.json.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from nbjob.languages._base import Language, check_value, finite
from nbjob.languages._quote import number, quoted
from nbjob.languages.scala import integer

__all__ = ["CSharp", "FSharp", "PowerShell"]

_CSHARP_RESERVED_WORDS = (
    "abstract as base bool break byte case catch char checked class const continue decimal"
    " default delegate do double else enum event explicit extern false finally fixed float for"
    " foreach goto if implicit in int interface internal is lock long namespace new null object"
    " operator out override params private protected public readonly ref return sbyte sealed"
    " short sizeof stackalloc static string struct switch this throw true try typeof uint ulong"
    " unchecked unsafe ushort using virtual void volatile while"
)
_CSHARP_RESERVED = frozenset(_CSHARP_RESERVED_WORDS.split())
_FSHARP_RESERVED_WORDS = (
    "abstract and as assert base begin class default delegate do done downcast downto elif else"
    " end exception extern false finally fixed for fun function global if in inherit inline"
    " interface internal lazy let match member module mutable namespace new not null of open or"
    " override private public rec return select sig static struct then to true try type upcast"
    " use val void when while with yield"
)
_FSHARP_RESERVED = frozenset(_FSHARP_RESERVED_WORDS.split())


def _scalar_kind(value: Any) -> type | None:
    """The Python type of a scalar list item (None for a nested or absent value)."""
    if value is None or isinstance(value, dict | list | tuple):
        return None
    return float if isinstance(value, int | float) and not isinstance(value, bool) else type(value)


def _uniform(values: list[Any] | tuple[Any, ...]) -> bool:
    """Do the items share one scalar type (numbers counting as one)?"""
    kinds = {_scalar_kind(v) for v in values}
    return len(kinds) == 1 and None not in kinds


class CSharp(Language):
    """C# kernels (.NET Interactive's ``.net-csharp``, language ``C#``)."""

    name: ClassVar[str] = "c#"
    default_kernel: ClassVar[str | None] = ".net-csharp"
    kernels: ClassVar[tuple[str, ...]] = (".net-csharp",)
    _declared = re.compile(r"^\s*[\w<>\[\],.?]+\s+@?([A-Za-z_]\w*)\s*=(?!=)")

    def literal(self, value: Any) -> str:
        if value is None:
            return "(object)null"
        if isinstance(value, bool):
            return "true" if value else "false"
        if not finite(value):
            if value != value:
                return "double.NaN"
            return "double.PositiveInfinity" if value > 0 else "double.NegativeInfinity"
        if isinstance(value, str):
            return quoted(value, "C#")
        if isinstance(value, dict):
            pairs = (f"{{ {quoted(str(k), 'C#')} , {self.literal(v)} }}" for k, v in value.items())
            return "new Dictionary<string,Object>{ " + ", ".join(pairs) + " }"
        if isinstance(value, list | tuple):
            kind = "new []" if _uniform(value) else "new object[]"
            return f"{kind} {{ " + ", ".join(self.literal(v) for v in value) + " }"
        check_value(value)  # ParameterError for any other type
        if isinstance(value, int):
            return integer(value, 'System.Numerics.BigInteger.Parse("{}")')
        return number(value)

    def assign(self, name: str, source: str) -> str:
        return f"var {'@' + name if name in _CSHARP_RESERVED else name} = {source};"

    def comment(self, text: str) -> str:
        return f"// {text}"

    def declared_names(self, source: str) -> set[str] | None:
        found = (self._declared.match(line) for line in source.splitlines())
        return {m.group(1) for m in found if m}


class FSharp(Language):
    """F# kernels (.NET Interactive's ``.net-fsharp``, language ``F#``)."""

    name: ClassVar[str] = "f#"
    default_kernel: ClassVar[str | None] = ".net-fsharp"
    kernels: ClassVar[tuple[str, ...]] = (".net-fsharp",)
    _declared = re.compile(r"^let\s+(?:mutable\s+)?(``[^`]+``|[A-Za-z_]\w*)")

    def literal(self, value: Any) -> str:
        return self._literal(value, boxed=False)

    def _literal(self, value: Any, boxed: bool) -> str:
        text = self._plain(value)
        return f"box ({text})" if boxed else text

    def _plain(self, value: Any) -> str:
        if value is None:
            return "None"
        if isinstance(value, bool):
            return "true" if value else "false"
        if not finite(value):
            return "nan" if value != value else ("infinity" if value > 0 else "-infinity")
        if isinstance(value, str):
            return quoted(value, "F#")
        if isinstance(value, dict):
            if not value:
                return "Map.empty<string, System.IComparable>"
            pairs = (
                f"({quoted(str(k), 'F#')}, {self.literal(v)} :> System.IComparable)"
                for k, v in value.items()
            )
            return "[ " + "; ".join(pairs) + " ] |> Map.ofList"
        if isinstance(value, list | tuple):
            if not value:
                return "List.empty<obj>"
            boxed = not _uniform(value)
            return "[ " + "; ".join(self._literal(v, boxed) for v in value) + " ]"
        check_value(value)  # ParameterError for any other type
        if isinstance(value, int):
            return integer(value, "{}I")
        return number(value)

    def assign(self, name: str, source: str) -> str:
        return f"let {f'``{name}``' if name in _FSHARP_RESERVED else name} = {source}"

    def comment(self, text: str) -> str:
        return f"(* {text} *)"

    def declared_names(self, source: str) -> set[str] | None:
        found = (self._declared.match(line) for line in source.splitlines())
        return {m.group(1).strip("`") for m in found if m}


# PowerShell's escapes in a double-quoted string: a backtick before the character. The curly
# double quotes end a string as '"' does.
_PS_ESCAPES = {
    "`": "``",
    '"': '`"',
    "$": "`$",
    "\u201c": "`\u201c",
    "\u201d": "`\u201d",
    "\u201e": "`\u201e",
    "\n": "`n",
    "\r": "`r",
    "\t": "`t",
}
_PS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PowerShell(Language):
    """PowerShell kernels (.NET Interactive's ``.net-powershell``, language ``PowerShell``)."""

    name: ClassVar[str] = "powershell"
    default_kernel: ClassVar[str | None] = ".net-powershell"
    kernels: ClassVar[tuple[str, ...]] = (".net-powershell",)
    _declared = re.compile(r"^\s*(?:\[[^\]]+\]\s*)?\$(?:\{([^}]+)\}|(\w+))\s*=(?!=)")

    def literal(self, value: Any) -> str:
        if value is None:
            return "$Null"
        if isinstance(value, bool):
            return "$True" if value else "$False"
        if not finite(value):
            if value != value:
                return "[double]::NaN"
            return "[double]::PositiveInfinity" if value > 0 else "[double]::NegativeInfinity"
        if isinstance(value, str):
            return self.string(value)
        if isinstance(value, dict):
            items = (f"{self.string(str(k))} = {self.literal(v)}" for k, v in value.items())
            return "@{" + "; ".join(items) + "}"
        if isinstance(value, list | tuple):
            return "@(" + ", ".join(self.literal(v) for v in value) + ")"
        check_value(value)  # ParameterError for any other type
        if isinstance(value, int):
            return integer(value, "[bigint]'{}'")
        return number(value)

    def string(self, text: str) -> str:
        """A double-quoted PowerShell string; a control character is ``$([char]N)``."""
        out = []
        for char in text:
            if char in _PS_ESCAPES:
                out.append(_PS_ESCAPES[char])
            elif ord(char) < 0x20 or ord(char) == 0x7F:
                out.append(f"$([char]{ord(char)})")
            else:
                out.append(char)
        return '"' + "".join(out) + '"'

    def assign(self, name: str, source: str) -> str:
        return f"${name if _PS_NAME.match(name) else '{' + name + '}'} = {source}"

    def comment(self, text: str) -> str:
        return f"# {text}"

    def declared_names(self, source: str) -> set[str] | None:
        found = (self._declared.match(line) for line in source.splitlines())
        return {m.group(1) or m.group(2) for m in found if m}
