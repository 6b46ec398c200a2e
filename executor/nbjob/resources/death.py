"""Why a kernel died, from evidence rather than a guess.

A kernel ended by SIGKILL may have met the out-of-memory killer, or a ``kill -9``, or a cell's
own ``os.kill``. The memory cgroup counts its out-of-memory kills (``cgroup.Memory.oom_kills``):
compared with its value when the run began, a counter that moved says "out of memory" (with
the limit and the kernel's memory at its last sample), one that did not says "not by this
container's out-of-memory killer", and no counter says that the cause is unknown.

A GPU's memory running out is a Python exception (torch's ``OutOfMemoryError``, TensorFlow's
``ResourceExhaustedError``): the failed cell is named with that GPU's peak memory when known.

An earlier attempt that ended without a record (the whole container killed, nbjob with it)
is explained from its stored last sample (``probable``).
"""

from __future__ import annotations

import signal
import time
from typing import Any

from nbjob.errors import CellExecutionError, DeadKernelError, NbjobError
from nbjob.resources.cgroup import Memory

GPU_OOM = ("OutOfMemoryError", "ResourceExhaustedError")  # torch, TensorFlow: the class names
PROBABLE = 0.9  # of the limit, at an unrecorded attempt's last sample


def size(n: float) -> str:
    """Bytes in a person's words: ``600 MiB``, ``8.0 GiB``."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.0f} MiB"


def oom_cause(
    before: Memory | None, now: Memory | None, last: dict[str, Any] | None, cell: str | None
) -> dict[str, Any]:
    """The cause of a SIGKILL as evidence shows it: ``kind`` (``out_of_memory``,
    ``not_out_of_memory`` or ``unknown``), the figures, and ``text`` to append to the reason."""
    if before is None or now is None or before.oom_kills is None or now.oom_kills is None:
        return {"kind": "unknown",
                "text": "; the cause is unknown: no out-of-memory counter could be read"
                " (no memory cgroup here)"}  # fmt: skip
    if now.oom_kills <= before.oom_kills:
        return {"kind": "not_out_of_memory",
                "text": ", not by this container's out-of-memory killer"}  # fmt: skip
    limit = now.limit_bytes
    used = None
    if last is not None:
        used = last.get("rss_bytes") or last.get("memory_bytes")
    words = "out of memory: "
    if limit:
        words += f"the container's limit is {size(limit)}"
    else:
        words += "this container's out-of-memory killer ended it"
    if limit and now.peak_bytes:
        words += f", its use reached {size(now.peak_bytes)}"
    if used:
        ago = time.time() - float(last.get("t") or time.time()) if last is not None else 0
        words += f"; the kernel used {size(used)} at its last sample"
        words += f", {ago:.1f} s before" if ago >= 0.1 else ""
        words += f", in {cell}" if cell else ""
    return {
        "kind": "out_of_memory",
        "oom_kills": now.oom_kills - before.oom_kills,
        "memory_limit_bytes": limit,
        "memory_peak_bytes": now.peak_bytes,
        "last_sample_bytes": used,
        "text": ": " + words,
    }


def explain_death(
    error: DeadKernelError, before: Memory | None, now: Memory | None,
    last: dict[str, Any] | None, cell: str | None,
) -> DeadKernelError:  # fmt: skip
    """``error`` with its cause (a SIGKILL's, from the counter) in its reason and details."""
    if error.details.get("exit_status") != -signal.SIGKILL:
        return error
    cause = oom_cause(before, now, last, cell)
    text = cause.pop("text")
    return DeadKernelError(error.reason + text, **{**error.details, "cause": cause})


def explain_gpu(error: CellExecutionError, cell: dict[str, Any] | None) -> NbjobError:
    """A GPU out-of-memory exception named as such, with the GPUs' peaks during the cell."""
    if error.details.get("ename") not in GPU_OOM:
        return error
    gpus = [g for g in (cell or {}).get("gpus") or [] if g.get("peak_memory_bytes")]
    cause: dict[str, Any] = {"kind": "gpu_out_of_memory", "gpus": gpus}
    if gpus:
        peaks = ", ".join(f"GPU {g['index']} {size(g['peak_memory_bytes'])}" for g in gpus)
        text = f" (a GPU's memory ran out; peak during the cell: {peaks})"
    else:
        text = " (a GPU's memory ran out; its peak is unknown: no GPU was sampled)"
    return CellExecutionError(error.reason + text, **{**error.details, "cause": cause})


def probable(record: dict[str, Any]) -> str | None:
    """For an attempt that ended without a record: "probable out-of-memory: 97 % of the 8.0
    GiB limit at its last sample" when its stored last sample shows that much; else None."""
    res = record.get("resources")
    last = res.get("last_sample") if isinstance(res, dict) else None
    if not isinstance(last, dict):
        return None
    used, limit = last.get("memory_bytes"), last.get("memory_limit_bytes")
    if not isinstance(used, int) or not isinstance(limit, int) or limit <= 0:
        return None
    if used / limit < PROBABLE:
        return None
    share = f"{100 * used / limit:.0f} %"
    return f"probable out-of-memory: {share} of the {size(limit)} limit at its last sample"
