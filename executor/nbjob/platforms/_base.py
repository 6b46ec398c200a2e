"""The interface every platform implements, the rank it answers, and the readers they share.

A platform is read from a process's environment: ``Platform(env)`` answers what that platform
says (``None``: not said). Subclasses set ``name`` and override only what their platform knows,
as submitit's ``JobEnvironment`` subclasses do.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from nbjob.errors import UsageError

# Kubernetes shows this file's text as a container's termination message.
KUBERNETES_TERMINATION_LOG = "/dev/termination-log"


@dataclass(frozen=True)
class Identity:
    """Which rank of a multi-process job this process is, and who said so (``source``)."""

    rank: int = 0
    world_size: int | None = 1  # None: the platform does not say
    source: str = "default"
    task: str | None = None  # TF_CONFIG's "type:index"

    @property
    def canonical(self) -> bool:
        """Rank 0 writes the results at the top of the destination."""
        return self.rank == 0

    @property
    def multi(self) -> bool:
        return self.world_size is None or self.world_size > 1

    def to_json(self) -> dict[str, Any]:
        data = {**asdict(self), "canonical": self.canonical}
        return {k: v for k, v in data.items() if v is not None or k == "world_size"}


class Platform:
    """One batch platform's conventions, as its environment variables tell them.

    Every answer defaults to "not said". ``rank``, ``shard`` and ``attempt`` are asked of every
    platform (see ``nbjob.platforms``): answer them only from variables that are this
    platform's own. ``recorded`` lists the variables run.json keeps (never credentials).
    """

    name: ClassVar[str] = ""
    recorded: ClassVar[tuple[str, ...]] = ()
    # Where the one-line reason of a run's end goes (None: this platform reads no such file).
    termination_log: ClassVar[str | None] = None

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def detected(self) -> bool:
        """Whether this process runs on this platform."""
        return False

    def run_id(self) -> str | None:
        """An id the platform keeps across retries, so a retry lands on the same run."""
        return None

    def rank(self) -> Identity | None:
        """This process's rank and world size, from the platform's own variables."""
        return None

    def shard(self) -> tuple[int, str] | None:
        """The shard index of a sweep (an array index) and the variable that gave it."""
        return None

    def attempt(self) -> int | None:
        """This attempt's number (1-based) when the platform counts restarts."""
        return None

    def source(self) -> str | None:
        """Where the bundle is, when the platform puts it somewhere."""
        return None

    def output(self) -> str | None:
        """Where results go, when the platform collects them somewhere."""
        return None

    def log_dir(self) -> str | None:
        """A folder the platform collects logs from."""
        return None

    def info(self) -> dict[str, str]:
        """The ``recorded`` variables this environment has."""
        return {k: self.env[k] for k in self.recorded if k in self.env}


def integer(env: Mapping[str, str], name: str) -> int | None:
    """A variable as an integer; None when unset or empty; a usage error when not a number."""
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{name}={text!r} is not an integer") from None


def lenient_integer(env: Mapping[str, str], name: str) -> int | None:
    """A variable as an integer; None when unset or not a number (a count nbjob may ignore)."""
    try:
        return int(env[name])
    except (KeyError, ValueError):
        return None


def checked(rank: int, world: int | None, source: str, task: str | None = None) -> Identity:
    """The identity, when the rank fits the world size; else a usage error (exit 2)."""
    if rank < 0 or (world is not None and not 0 <= rank < world):
        raise UsageError(f"rank {rank} does not fit world size {world} (from {source})")
    return Identity(rank, world, source, task)


def restarts(env: Mapping[str, str], name: str) -> int | None:
    """The attempt a restart count gives (restarts so far + 1); None when not counted."""
    if (count := lenient_integer(env, name)) is not None and count >= 0:
        return count + 1
    return None


def array_index(env: Mapping[str, str], name: str) -> tuple[int, str] | None:
    """A shard index from an array variable; a usage error when it is negative."""
    if (index := integer(env, name)) is None:
        return None
    if index < 0:
        raise UsageError(f"{name}={index} is not a shard index")
    return index, name


def write_termination_message(path: str | None, reason: str) -> None:
    """Write the one-line reason (at most 4 KB, as Kubernetes shows) to the platform's file.

    Written only when the file exists and is writable, as it is inside a Kubernetes container.
    """
    if path and os.path.exists(path) and os.access(path, os.W_OK):
        with contextlib.suppress(OSError), open(path, "w", encoding="utf-8") as f:
            f.write(reason[:4000] + "\n")
