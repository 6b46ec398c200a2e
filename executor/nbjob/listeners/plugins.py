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

nbjob's own plug-ins (``BUILTIN``: ``mlflow``, ``kfp``) are known by name without entry-point
metadata, and ``automatic`` turns them on from the environment: ``mlflow`` when
``MLFLOW_TRACKING_URI`` is set (and mlflow is installed), ``kfp`` with
``--kfp-executor-input``. A listener may offer ``kernel_env()``: variables set in the kernel
once it is ready (``kernel_env``), e.g. the MLflow run the notebook's own calls join.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata, util
from typing import TYPE_CHECKING, Any

from nbjob.delivery import one_line
from nbjob.errors import UsageError
from nbjob.events import Subscription

if TYPE_CHECKING:
    from nbjob.config import Settings

GROUP = "nbjob.listeners"
# nbjob's own plug-ins, known by name even where the package's entry points are not installed
BUILTIN = {"mlflow": "nbjob.listeners.mlflow:make", "kfp": "nbjob.listeners.kfp:make"}


def installed() -> dict[str, metadata.EntryPoint]:
    """The listener plug-ins, by name: nbjob's own, then the installed entry points."""
    own = {n: metadata.EntryPoint(n, v, GROUP) for n, v in BUILTIN.items()}
    return own | {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def automatic(settings: Settings, env: Mapping[str, str] | None = None) -> list[str]:
    """nbjob's own plug-ins the run's environment turns on: ``mlflow`` when
    ``MLFLOW_TRACKING_URI`` is set and mlflow can be imported (unless ``--no-mlflow``), ``kfp``
    with an executor input."""
    env = os.environ if env is None else env
    names = []
    tracking = env.get("MLFLOW_TRACKING_URI") and not settings.no_mlflow
    if tracking and util.find_spec("mlflow") is not None:
        names.append("mlflow")
    if settings.kfp_executor_input:
        names.append("kfp")
    return names


def wanted(settings: Settings, env: Mapping[str, str] | None = None) -> list[str]:
    """The plug-ins to load: those named (``--listener``), then the automatic ones."""
    names = list(settings.listeners)
    return names + [n for n in automatic(settings, env) if n not in names]


def kernel_env(listeners: Iterable[Any], log: Any) -> dict[str, str]:
    """The variables listeners ask for in the kernel (their ``kernel_env()``), once it is
    ready; a listener's error is logged, never raised (it is not nbjob's code)."""
    found: dict[str, str] = {}
    for item in listeners:
        target = item.listener if isinstance(item, Subscription) else item
        offer = getattr(target, "kernel_env", None)
        if not callable(offer):
            continue
        try:
            found.update({str(k): str(v) for k, v in offer().items()})
        except Exception as exc:
            name = item.name if isinstance(item, Subscription) else type(target).__name__
            log.warning("listener_failed", listener=name, error=one_line(exc))
    return found


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
