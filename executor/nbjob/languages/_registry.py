"""Kernel language name -> ``Language``: nbjob's own, then those of installed packages.

A package adds a language with an entry point in the group ``nbjob.languages`` named after
the kernel language (``r = "nbjob_r:R"``), pointing at a ``Language`` subclass or instance.
nbjob's own languages win over an entry point of the same name. A name nobody provides gets a
bare ``Language``: every capability unsupported, so nothing is sent to that kernel.
"""

from __future__ import annotations

import threading

from nbjob.languages._base import Language
from nbjob.languages.bash import Bash
from nbjob.languages.dotnet import CSharp, FSharp, PowerShell
from nbjob.languages.julia import Julia
from nbjob.languages.python import Python
from nbjob.languages.r import R
from nbjob.languages.scala import Scala

ENTRY_POINT_GROUP = "nbjob.languages"
DEFAULT_LANGUAGE = "python"  # a notebook that names neither a kernel nor a language

# nbjob's own languages: adding one is a module and a line here.
BUILTIN: dict[str, type[Language]] = {
    "python": Python,
    "r": R,
    "bash": Bash,
    "julia": Julia,
    "scala": Scala,
    "c#": CSharp,
    "f#": FSharp,
    "powershell": PowerShell,
}

_lock = threading.Lock()
_found: dict[str, Language] = {}


def get(name: str) -> Language:
    """The language for the kernel language ``name`` (case-insensitive, e.g. ``Python``)."""
    key = (name or "").strip().lower()
    found = _found.get(key)
    if found is None:
        made = _make(key)  # outside the lock: a plug-in's import may look languages up too
        with _lock:
            found = _found.setdefault(key, made)
    return found


def names() -> list[str]:
    """Every language nbjob can find: its own and the installed entry points'."""
    from importlib.metadata import entry_points  # ~25 ms of imports: only when asked

    return sorted(set(BUILTIN) | {ep.name.lower() for ep in entry_points(group=ENTRY_POINT_GROUP)})


def supporting(capability: str) -> list[str]:
    """The languages that have ``capability`` (for messages: "needs a python kernel")."""
    return [n for n in names() if get(n).supports(capability)]


def _make(key: str) -> Language:
    if key in BUILTIN:
        return BUILTIN[key]()
    from importlib.metadata import entry_points  # ~25 ms of imports: only for other languages

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name.lower() != key:
            continue
        try:
            found = ep.load()
            language = found() if isinstance(found, type) else found
        except Exception as exc:  # a broken plug-in is a missing language, not a failed run
            _warn(ep.value, f"{type(exc).__name__}: {exc}")
            break
        if isinstance(language, Language):
            return language
        _warn(ep.value, "not an nbjob.languages.Language")
        break
    return _unknown(key)


def _warn(plugin: str, error: str) -> None:
    from nbjob import logs  # only here: nbjob.languages stays a light import

    logs.get_logger().warning("language_plugin_unusable", plugin=plugin, error=error[:300])


def _unknown(key: str) -> Language:
    """A language nbjob knows nothing of: no capability, only its name (for messages)."""
    return type("UnknownLanguage", (Language,), {"name": key})()


def forget_found() -> None:
    """Look entry points up again on the next ``get`` (tests that install a plug-in)."""
    with _lock:
        _found.clear()
