"""The memory cgroup nbjob runs in: its usage, limit, peak and out-of-memory counters.

A container's memory limit and its out-of-memory kills are the memory cgroup's: cgroup v2's
``memory.current``, ``memory.max``, ``memory.peak`` and ``memory.events`` (``max``: the limit
was hit; ``oom_kill``: a process was killed), cgroup v1's ``memory.usage_in_bytes``,
``memory.limit_in_bytes``, ``memory.max_usage_in_bytes``, ``memory.failcnt`` and
``memory.oom_control`` (its ``oom_kill`` line). The group is found from ``/proc/self/cgroup``
(``N:memory:/path`` for v1, ``0::/path`` for v2) under ``/sys/fs/cgroup``; inside a container's
cgroup namespace the path is ``/`` and the mount's root is the container's own group. The kernel
nbjob starts is in the same group (a child inherits it), so its out-of-memory kill moves the
counter read here: the evidence that turns "killed by SIGKILL" into "out of memory".
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
SELF = Path("/proc/self/cgroup")
UNLIMITED = 2**60  # v1 writes "no limit" as a huge page-aligned number


@dataclass(frozen=True)
class Memory:
    """One reading of the memory cgroup; None: that file could not be read."""

    version: int
    usage_bytes: int | None = None
    limit_bytes: int | None = None  # None: no limit (or unreadable)
    peak_bytes: int | None = None  # the group's own high-water mark (v1; v2 on Linux 5.19+)
    oom_kills: int | None = None  # processes the group's out-of-memory killer ended so far
    limit_hits: int | None = None  # v1 failcnt, v2 events' "max": the limit was reached

    @property
    def fraction(self) -> float | None:
        """Usage as a fraction of the limit, when both are known."""
        if self.usage_bytes is None or not self.limit_bytes:
            return None
        return self.usage_bytes / self.limit_bytes


class MemoryGroup:
    """A memory cgroup folder (``path``) of cgroup ``version`` 1 or 2."""

    def __init__(self, path: Path, version: int) -> None:
        self.path, self.version = path, version

    def __repr__(self) -> str:
        return f"MemoryGroup({str(self.path)!r}, v{self.version})"

    @classmethod
    def find(cls, self_file: Path = SELF, root: Path = ROOT) -> MemoryGroup | None:
        """The memory cgroup this process is in, or None (no cgroup file system, no memory
        controller, a group that cannot be read)."""
        try:
            lines = self_file.read_text().splitlines()
        except OSError:
            return None
        v1, v2 = None, None
        for line in lines:
            _, controllers, path = [*line.split(":", 2), "", ""][:3]
            if "memory" in controllers.split(","):
                v1 = path
            elif controllers == "" and line.startswith("0:"):
                v2 = path
        if v1 is not None:
            for folder in _candidates(root / "memory", v1):
                if (folder / "memory.usage_in_bytes").is_file():
                    return cls(folder, 1)
        if v2 is not None:
            for base in (root, root / "unified"):
                for folder in _candidates(base, v2):
                    if (folder / "memory.current").is_file():
                        return cls(folder, 2)
        return None

    def read(self) -> Memory:
        """The group's numbers now (each None when its file cannot be read)."""
        if self.version == 1:
            return Memory(
                1,
                usage_bytes=self._int("memory.usage_in_bytes"),
                limit_bytes=_limit(self._int("memory.limit_in_bytes")),
                peak_bytes=self._int("memory.max_usage_in_bytes"),
                oom_kills=self._keyed("memory.oom_control").get("oom_kill"),
                limit_hits=self._int("memory.failcnt"),
            )
        events = self._keyed("memory.events")
        return Memory(
            2,
            usage_bytes=self._int("memory.current"),
            limit_bytes=_limit(self._int("memory.max")),
            peak_bytes=self._int("memory.peak"),
            oom_kills=events.get("oom_kill"),
            limit_hits=events.get("max"),
        )

    def _text(self, name: str) -> str | None:
        try:
            with open(f"{self.path}/{name}", "rb") as f:
                return f.read().decode()
        except (OSError, UnicodeDecodeError):
            return None

    def _int(self, name: str) -> int | None:
        """A file holding one number; v2's ``max`` (no limit) reads as ``UNLIMITED``."""
        text = (self._text(name) or "").strip()
        if text == "max":
            return UNLIMITED
        with contextlib.suppress(ValueError):
            return int(text)
        return None

    def _keyed(self, name: str) -> dict[str, int]:
        """A file of ``key value`` lines (``memory.events``, ``memory.oom_control``)."""
        found: dict[str, int] = {}
        for line in (self._text(name) or "").splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                found[key] = int(value)
        return found


def _candidates(base: Path, path: str) -> list[Path]:
    """Where the group ``path`` may be mounted: under ``base``, else (a cgroup namespace, or a
    container seeing only its own group) ``base`` itself."""
    inner = base / path.strip("/") if path.strip("/") else base
    return [inner, base] if inner != base else [base]


def _limit(value: int | None) -> int | None:
    return None if value is None or value >= UNLIMITED else value
