"""bash (``bash_kernel``, language ``bash``): parameters, environment and folder.

The parameters cell is papermill's (``BashTranslator``): ``name=value`` with the value quoted
by ``shlex.quote``, ``true``/``false``, an empty string for None, and a list as an indexed
array ``(a b c)``. bash has no nesting and papermill has no mapping for it; here a mapping is
an associative array (``declare -A name=([key]=value ...)``) and a list or mapping inside
another is one element holding its JSON text. A parameter that becomes an array is ``unset``
first, so no element of the notebook's default survives. Names must be ASCII identifiers.

What bash lacks here: the GPU probe, the requirements check and the in-kernel file transfer
(bash_kernel answers no user expressions), recorded in run.json's ``kernel.unsupported``.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from typing import Any, ClassVar

from nbjob.errors import ParameterError
from nbjob.languages._base import Language, check_value
from nbjob.languages._quote import number

__all__ = ["Bash"]

# ANSI-C quoting's escapes; other control characters are \xHH, everything else itself.
_ANSI_C = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ASSIGNED = re.compile(
    r"^\s*(?:unset\s+\w+\s*;\s*)?(?:(?:declare|typeset|local|export|readonly)(?:\s+-\w+)*\s+)?"
    r"([A-Za-z_]\w*)(?:\[[^\]]*\])?\+?="
)


def _control(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x20 or code == 0x7F else char


class Bash(Language):
    """bash kernels."""

    name: ClassVar[str] = "bash"
    default_kernel: ClassVar[str | None] = "bash"

    def literal(self, value: Any) -> str:
        if isinstance(value, dict):
            items = (f"[{self._key(k)}]={self._element(v)}" for k, v in value.items())
            return "(" + " ".join(items) + ")"
        if isinstance(value, list | tuple):
            return "(" + " ".join(self._element(v) for v in value) + ")"
        check_value(value)  # ParameterError for any other type
        if value is None:
            return "''"
        if isinstance(value, bool):
            return "true" if value else "false"
        return self.quote(value if isinstance(value, str) else number(value))

    def quote(self, text: str) -> str:
        """``text`` as one shell word: ``shlex.quote``, or ANSI-C quoting (``$'a\\tb'``) when
        it holds a control character (bash_kernel types a cell into an interactive bash, where
        a tab completes and a newline would end a line). bash cannot hold a NUL."""
        if "\0" in text:
            raise ParameterError("a bash string cannot hold a NUL character")
        if not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            return shlex.quote(text)
        return "$'" + "".join(_ANSI_C.get(c) or _control(c) for c in text) + "'"

    def _element(self, value: Any) -> str:
        if isinstance(value, dict | list | tuple):
            check_value(value)
            return self.quote(json.dumps(value, ensure_ascii=False, allow_nan=True))
        return self.literal(value)

    def _key(self, key: Any) -> str:
        text = key if isinstance(key, str) else self.literal(key).strip("'")
        if not text:
            raise ParameterError("a bash associative array cannot have an empty key")
        return self.quote(text)

    def assign(self, name: str, source: str) -> str:
        if not _NAME.match(name):
            raise ParameterError(f"{name!r} is not a bash variable name")
        return f"{name}={source}"

    def comment(self, text: str) -> str:
        return f"# {text}"

    def parameters_cell(self, parameters: Mapping[str, Any]) -> str:
        """papermill's shape; an array is declared afresh (``unset`` first)."""
        lines = [self.comment("Parameters")]
        for name, value in parameters.items():
            line = self.assign(name, self.literal(value))
            if isinstance(value, dict):
                line = f"unset {name}; declare -A {line}"
            elif isinstance(value, list | tuple):
                line = f"unset {name}; {line}"
            lines.append(line)
        return "\n".join(lines) + "\n"

    def declared_names(self, source: str) -> set[str] | None:
        found = (_ASSIGNED.match(line) for line in source.splitlines())
        return {m.group(1) for m in found if m}

    def set_env(self, name: str, value: str) -> str:
        return f"export {self.assign(name, self.quote(value))}"

    def chdir(self, path: str) -> str:
        return f"cd {self.quote(path)}"

    def forget(self, name: str) -> str:
        return f"unset {name}"
