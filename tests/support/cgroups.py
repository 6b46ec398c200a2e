"""A real cgroup v1 memory group for a test: made below this process's own, limited, removed.

``memory_group(limit)`` skips the test (with the reason) where it cannot be made: not root, no
cgroup v1 memory controller. A process joins it with ``start_nbjob(..., cgroup=folder)``; at the
end whatever is still in the group (only what the test started) is killed by pid, and the group
removed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from nbjob.resources.cgroup import MemoryGroup

__all__ = ["group_pids", "kill_group", "memory_group"]


def group_pids(folder: Path) -> list[int]:
    """The processes in the group now."""
    try:
        return [int(p) for p in (folder / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def kill_group(folder: Path, timeout: float = 10) -> None:
    """SIGKILL to every process in the group (as Kubernetes ends an OOM-killed container), and
    wait until it is empty."""
    end = time.monotonic() + timeout
    while (pids := group_pids(folder)) and time.monotonic() < end:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


@contextlib.contextmanager
def memory_group(limit_bytes: int) -> Iterator[Path]:
    """A new v1 memory group limited to ``limit_bytes`` (no swap either), below this
    process's own group; removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a memory cgroup")
    own = MemoryGroup.find()
    if own is None or own.version != 1:
        pytest.skip("needs a cgroup v1 memory controller (/sys/fs/cgroup/memory)")
    folder = own.path / f"nbjob-test-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir()
        (folder / "memory.limit_in_bytes").write_text(str(limit_bytes))
    except OSError as exc:
        with contextlib.suppress(OSError):
            folder.rmdir()
        pytest.skip(f"cannot make a memory cgroup here: {exc}")
    with contextlib.suppress(OSError):  # no swap beyond the limit either (when accounted)
        (folder / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
    try:
        yield folder
    finally:
        kill_group(folder)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                folder.rmdir()
                break
            except OSError:
                time.sleep(0.1)
