"""One placement of this process: its platform, run id, rank, shard and attempt."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nbjob.errors import UsageError
from nbjob.platforms import _launchers, _registry
from nbjob.platforms._base import KUBERNETES_TERMINATION_LOG, Identity, Platform, checked, restarts

# Recorded whatever the platform (never credentials): the host and the GPUs it was given.
COMMON_RECORDED = (
    "HOSTNAME",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "NBJOB_RESTART_COUNT",
)
# A variable with such a name is never recorded, even when a plug-in lists it.
_SECRET_NAME = re.compile(r"(?i)secret|token|password|passwd|credential|(^|_)key$|api_?key")

T = TypeVar("T")


@dataclass(frozen=True)
class Placement:
    """Where this process runs and which part of the job it is (None: not said)."""

    name: str = "local"  # the platform: run.json["platform"]["name"]
    run_id: str | None = None
    identity: Identity = field(default_factory=Identity)
    shard: int | None = None
    shard_source: str | None = None  # where ``shard`` came from
    attempt: int | None = None  # 1-based, when the platform counts restarts
    info: dict[str, str] = field(default_factory=dict)  # run.json["platform"], besides the name
    termination_log: str | None = None  # the file the one-line reason goes to
    source: str | None = None
    output: str | None = None
    log_dir: str | None = None


def _first(answers: Iterable[T | None]) -> T | None:
    return next((a for a in answers if a is not None), None)


def _identity(flags: Mapping[str, Any], env: Mapping[str, str], asked: list[Platform]) -> Identity:
    """Flags, then the launchers, then each platform's rank, then rank 0 of 1."""
    rank, world = flags.get("rank"), flags.get("world_size")
    if rank is not None or world is not None:
        if rank is None or world is None:
            raise UsageError("--rank and --world-size go together (or NBJOB_RANK/NBJOB_WORLD_SIZE)")
        return checked(int(rank), int(world), "flags")
    found = _first(launcher(env) for launcher in _launchers.LAUNCHERS)
    found = found or _first(p.rank() for p in asked)
    return found or Identity()


def _info(env: Mapping[str, str], asked: list[Platform], platform: Platform) -> dict[str, str]:
    info = {k: env[k] for k in (*_launchers.RECORDED, *COMMON_RECORDED) if k in env}
    for p in [*asked, platform]:  # the detected platform's answer last: it may add to it
        info.update(p.info())
    return {k: v for k, v in info.items() if not _SECRET_NAME.search(k)}


def resolve(env: Mapping[str, str], flags: Mapping[str, Any] | None = None) -> Placement:
    """This process's placement, from ``--rank``/``--world-size``/``--shard`` (``flags``; None:
    not given) and the platforms' variables; ``UsageError`` (exit 2) when they do not fit."""
    flags = flags or {}
    plugins = _registry.plugins()
    platform = next(p for p in (c(env) for c in (*plugins, *_registry.DETECTION)) if p.detected())
    asked = [c(env) for c in (*plugins, *_registry.PRECEDENCE)]
    identity = _identity(flags, env, asked)
    shard = (flags["shard"], "flags") if flags.get("shard") is not None else None
    shard = shard or _first(p.shard() for p in asked)
    attempt = _first(p.attempt() for p in asked) or restarts(env, "NBJOB_RESTART_COUNT")
    return Placement(
        name=platform.name,
        run_id=platform.run_id(),
        identity=identity,
        shard=shard[0] if shard else None,
        shard_source=shard[1] if shard else None,
        attempt=attempt,
        info=_info(env, asked, platform),
        termination_log=platform.termination_log or _kubernetes_file(env),
        source=platform.source(),
        output=platform.output(),
        log_dir=platform.log_dir(),
    )


def _kubernetes_file(env: Mapping[str, str]) -> str | None:
    """Any platform run in a Kubernetes container (a KubeRay pod, say) has its termination file."""
    return KUBERNETES_TERMINATION_LOG if "KUBERNETES_SERVICE_HOST" in env else None
