"""Listeners to a run's events (``nbjob.events``).

nbjob's own, which run inline: the log (``log.LogListener``), the checkpointer
(``checkpoint.Checkpointer``) and the record (``record.RunRecord.on_event``). External ones are
plug-ins (``plugins``: the ``nbjob.listeners`` entry points named with ``--listener``) or are
given to ``nbjob.run(..., listeners=...)``; the bus isolates them (``nbjob.delivery``). A new
consumer (MLflow, a live view) is a plug-in: no change to the run.

Names load on first use: ``plugins`` is read before the kernel starts, the others import
nbformat.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["Checkpointer", "LogListener"]

_EXPORTS = {"Checkpointer": "nbjob.listeners.checkpoint", "LogListener": "nbjob.listeners.log"}

if TYPE_CHECKING:
    from nbjob.listeners.checkpoint import Checkpointer
    from nbjob.listeners.log import LogListener


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nbjob.listeners' has no attribute {name!r}")
    return getattr(import_module(module), name)
