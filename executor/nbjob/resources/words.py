"""Resource figures in a person's words, for those who read run.json from outside
(``nbjob watch``'s footer and summary): the newest sample and the run's peaks."""

from __future__ import annotations

from typing import Any

from nbjob.resources.death import size

__all__ = ["peaks_line", "resources_line"]


def resources_line(res: Any) -> str:
    """run.json's newest resource sample in words: ``memory 1.2 GiB of 8.0 GiB · kernel
    900 MiB, CPU 12.3 s · GPU 0 45 % 10.1 GiB`` ('' when there is none)."""
    last = res.get("last_sample") if isinstance(res, dict) else None
    if not isinstance(last, dict):
        return ""
    parts = []
    if isinstance(last.get("memory_bytes"), int):
        limit = last.get("memory_limit_bytes")
        parts.append(f"memory {size(last['memory_bytes'])}" + (
            f" of {size(limit)}" if isinstance(limit, int) else ""))  # fmt: skip
    if isinstance(last.get("rss_bytes"), int):
        parts.append(f"kernel {size(last['rss_bytes'])}, CPU {last.get('cpu_s', 0):.1f} s")
    for gpu in last.get("gpus") or []:
        used, busy = gpu.get("memory_used_bytes"), gpu.get("utilization")
        parts.append(f"GPU {gpu.get('index')} {busy} % {size(used)}" if used is not None
                     else f"GPU {gpu.get('index')}")  # fmt: skip
    return " · ".join(parts)


def peaks_line(res: Any) -> str:
    """The run's peaks in words, for the summary ('' when nothing was sampled)."""
    peaks = res.get("peaks") if isinstance(res, dict) else None
    if not isinstance(peaks, dict):
        return ""
    labels = {"memory_bytes": "memory", "rss_bytes": "kernel"}
    parts = [
        f"{labels[name]} {size(value)}"
        for name, value in peaks.items()
        if name in labels and isinstance(value, int)
    ]
    parts += [f"GPU {g.get('index')} {size(g.get('memory_bytes') or 0)}"
              for g in peaks.get("gpus") or [] if isinstance(g, dict)]  # fmt: skip
    return ", ".join(parts)
