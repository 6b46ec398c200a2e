"""glibc's allocator held to one threshold in nbjob's own processes (the run, the renderer).

glibc serves an allocation of 128 KiB or more from its own memory map, returned to the system
when freed, but after freeing one it raises that threshold to the freed size (up to 32 MiB): the
next large buffers (a long notebook's text at a checkpoint, run.json at the end) then come from
the heap, where freed memory stays with the process. nbjob makes such buffers over and over, so
the threshold is fixed where it starts (``M_MMAP_THRESHOLD``, which also stops the adjustment):
on a 20,000-cell run the process's high-water mark at the end is ~118 MiB instead of ~131.
Elsewhere than glibc (musl, macOS) nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)
THRESHOLD = 128 * 1024  # glibc's own starting value


def fix_threshold() -> bool:
    """Fix glibc's mmap threshold at ``THRESHOLD``; whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, THRESHOLD))
    return False
