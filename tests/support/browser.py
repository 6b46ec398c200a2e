"""Headless Chromium looking at a page nbjob wrote (the HTML report), as a user's browser would."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from .e2e import starts_processes

__all__ = ["browse"]


@starts_processes
def browse(chromium: str, page: Path, *args: str, timeout: float = 60) -> str:
    """``chromium --headless ARGS file://PAGE``; its stdout. Its process group ends with it."""
    profile = page.parent / f".chromium-{page.stem}"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    flags += [f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
    argv = [chromium, *flags, page.as_uri()]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"chromium did not end within {timeout} s") from None
    assert proc.returncode == 0, err[-3000:]
    return out
