"""What the bench scripts share: a moto server on loopback, and their own section of
BENCHMARKS.md (replaced between its markers, else appended)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """moto's server on a free loopback port, in a session of its own (stop it by its PID);
    (the process, its endpoint URL) once it answers."""
    return _serve(lambda port: [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)])


def write_section(path: Path, section: str, start: str, end: str) -> None:
    """``section`` (which begins with ``start`` and ends with ``end``) in place of the text
    between those markers in ``path``, or appended when they are not there yet."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def start_s3rver(tool: Path, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    """s3rver (npm) on a free loopback port, storing under ``data``, in a session of its own
    (stop it by its PID); (the process, its endpoint URL) once it answers. It accepts only
    the access key ``S3RVER`` (any secret, with --allow-mismatched-signatures)."""
    flags = ["-a", "127.0.0.1", "--silent", "--allow-mismatched-signatures", "--no-vhost-buckets"]
    return _serve(lambda port: [str(tool), "-d", str(data), *flags, "-p", str(port)])


def _serve(argv: Callable[[int], list[str]]) -> tuple[subprocess.Popen[bytes], str]:
    """``argv(port)`` started on a free loopback port, in a session of its own; (the process,
    its URL) once it answers HTTP (an error page is an answer), killed if it never does."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = argv(port)
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/", timeout=1).close()
            return proc, url
        except urllib.error.HTTPError:
            return proc, url
        except OSError:
            time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"{Path(command[0]).name} did not start")
