"""nbjob: run a notebook bundle cell by cell in a real Jupyter kernel inside a batch job.

The public surface, for embedding nbjob in another program (the command line is ``nbjob``)::

    import nbjob

    settings = nbjob.resolve({"source": "s3://bucket/bundle.zip"}, os.environ)
    exit_code = nbjob.run(settings, listeners=[my_listener])  # my_listener(event) per cell event

Everything else is internal and may change. Names are loaded on first use, so ``import nbjob``
stays cheap (the kernel starts before nbjob's heavy imports).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CellEnded",
    "CellOutput",
    "CellStarted",
    "NbjobError",
    "Settings",
    "StopToken",
    "__version__",
    "resolve",
    "run",
]

# public name -> module it lives in
_EXPORTS = {
    "run": "nbjob.job",
    "resolve": "nbjob.config",
    "Settings": "nbjob.config",
    "StopToken": "nbjob.stop",
    "CellStarted": "nbjob.events",
    "CellOutput": "nbjob.events",
    "CellEnded": "nbjob.events",
    "NbjobError": "nbjob.errors",
}

if TYPE_CHECKING:
    from nbjob.config import Settings, resolve
    from nbjob.errors import NbjobError
    from nbjob.events import CellEnded, CellOutput, CellStarted
    from nbjob.job import run
    from nbjob.stop import StopToken


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nbjob' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
