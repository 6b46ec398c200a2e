"""Listener plug-ins: the entry points of the group ``nbjob.listeners``, chosen by name.

A distribution declares one in its metadata, e.g. in ``pyproject.toml``::

    [project.entry-points."nbjob.listeners"]
    progress = "my_package.progress:make"

and a run loads it with ``--listener progress`` (or ``NBJOB_LISTENERS=progress``). The entry
point is a **factory**: it is called once, before the kernel starts, with the run's
``nbjob.Settings``, and returns the listener (a callable taking each event, or an object with
``on_event``) or an ``nbjob.Subscription`` that also says which event types it wants and
whether it runs on a queue thread of its own. A class whose ``__init__`` takes the settings is
such a factory. Its errors are logged, never fatal to the run (``nbjob.delivery``).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING

from nbjob.delivery import one_line
from nbjob.errors import UsageError
from nbjob.events import Subscription

if TYPE_CHECKING:
    from nbjob.config import Settings

GROUP = "nbjob.listeners"


def installed() -> dict[str, metadata.EntryPoint]:
    """The installed listener plug-ins, by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def load(names: Sequence[str], settings: Settings) -> list[Subscription]:
    """The plug-ins ``names``, each made by its factory for this run; ``UsageError`` (exit 2)
    for a name that is not installed, or a plug-in that cannot be loaded or made."""
    if not names:
        return []
    found = installed()
    unknown = [n for n in names if n not in found]
    if unknown:
        have = ", ".join(sorted(found)) or "none"
        raise UsageError(
            f"unknown listener {', '.join(map(repr, unknown))} (--listener); installed: {have}"
        )
    subscriptions = []
    for name in names:
        try:
            made = found[name].load()(settings)
        except Exception as exc:
            raise UsageError(f"listener {name!r} could not be loaded: {one_line(exc)}") from None
        if not isinstance(made, Subscription):
            made = Subscription(made, name=name)
        subscriptions.append(made)
    return subscriptions
