"""nbjob: run a notebook bundle cell by cell in a real Jupyter kernel inside a batch job.

The public surface, for embedding nbjob in another program (the command line is ``nbjob``)::

    import nbjob

    settings = nbjob.resolve({"source": "s3://bucket/bundle.zip"}, os.environ)
    exit_code = nbjob.run(settings, listeners=[my_listener])  # my_listener(event) per event

A listener is a callable taking each event (``RunStarted``, the cell events, ``RunEnded``) or an
object with ``on_event``; ``nbjob.Subscription(listener, event_types={nbjob.CellEnded},
queued=True)`` picks event types and delivery on a thread of its own. A listener's errors are
logged, never fatal to the run. ``nbjob.run`` installs no signal handlers and leaves structlog's
configuration alone unless asked (``install_signals=True``, ``configure_logging=True``).

Everything else is internal and may change. Names are loaded on first use, so ``import nbjob``
stays cheap (the kernel starts before nbjob's heavy imports).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CellEnded",
    "CellMetric",
    "CellOutput",
    "CellSkipped",
    "CellStarted",
    "CellState",
    "CellStatus",
    "CellsListed",
    "Event",
    "Listener",
    "NbjobError",
    "RunEnded",
    "RunStarted",
    "RunStatus",
    "Settings",
    "StopToken",
    "Subscription",
    "Tick",
    "__version__",
    "resolve",
    "run",
]

# public name -> module it lives in
_EXPORTS = {
    "run": "nbjob.start",
    "resolve": "nbjob.config",
    "Settings": "nbjob.config",
    "StopToken": "nbjob.stop",
    "NbjobError": "nbjob.errors",
    "CellEnded": "nbjob.events",
    "CellMetric": "nbjob.events",
    "CellOutput": "nbjob.events",
    "CellSkipped": "nbjob.events",
    "CellStarted": "nbjob.events",
    "CellState": "nbjob.events",
    "CellStatus": "nbjob.events",
    "CellsListed": "nbjob.events",
    "Event": "nbjob.events",
    "Listener": "nbjob.events",
    "RunEnded": "nbjob.events",
    "RunStarted": "nbjob.events",
    "RunStatus": "nbjob.events",
    "Subscription": "nbjob.events",
    "Tick": "nbjob.events",
}

if TYPE_CHECKING:
    from nbjob.config import Settings, resolve
    from nbjob.errors import NbjobError
    from nbjob.events import (
        CellEnded,
        CellMetric,
        CellOutput,
        CellSkipped,
        CellsListed,
        CellStarted,
        CellState,
        CellStatus,
        Event,
        Listener,
        RunEnded,
        RunStarted,
        RunStatus,
        Subscription,
        Tick,
    )
    from nbjob.start import run
    from nbjob.stop import StopToken


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nbjob' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
