"""The kinds of value a setting takes, and ``Option``: one setting's flag, parser and help.

``nbjob.config.Settings`` declares each setting with ``opt(...)`` in its field's metadata; a
parser takes the text of a flag or an ``NBJOB_*`` variable and raises ``ValueError`` (the
message says what was expected) or ``UsageError`` (when the value must not be echoed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nbjob.errors import UsageError


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError("must be >= 0")
    return value


def boolean(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false")


def addressing_style(text: str) -> str:
    if text not in ("auto", "path", "virtual"):
        raise ValueError("expected auto, path or virtual")
    return text


def name_list(text: str) -> tuple[str, ...]:
    """``a,b`` -> ``("a", "b")``, in order, each once."""
    return tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))


def http_urls(text: str) -> tuple[str, ...]:
    """``--notify``: http(s) URLs, comma-separated, each once (never echoed: a credential)."""
    urls = name_list(text)
    if any(not u.lower().startswith(("http://", "https://")) for u in urls):
        raise UsageError(  # not ValueError: its message would quote the value
            "--notify (NBJOB_NOTIFY): expected http:// or https:// URLs"
            " (the value is not shown: a webhook URL is a credential)"
        )
    return urls


def log_format(text: str) -> str:
    if text not in ("auto", "json", "console"):
        raise ValueError("expected auto, json or console")
    return text


@dataclass(frozen=True)
class Option:
    """One setting's flag, parser and help; its name and default come from ``Settings``."""

    flag: str
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None  # None: a switch
    repeat: bool = False  # the flag may be given more than once (values joined with commas)
    name: str = ""
    default: Any = None

    @property
    def env(self) -> str:
        return "NBJOB_" + self.name.upper()


def opt(
    flag: str,
    parse: Callable[[str], Any],
    help: str,
    metavar: str | None = None,
    repeat: bool = False,
) -> dict[str, Option]:
    return {"option": Option(flag, parse, help, metavar, repeat)}
