"""Loopback ports and HTTP probes for servers started by tests."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

__all__ = ["answers", "free_port", "free_ports", "serves"]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (bound together, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """One free loopback port."""
    return free_ports(1)[0]


def answers(url: str, timeout: float = 1) -> bool:
    """Whether anything answers HTTP at ``url``, errors included (Azurite answers 400 to GET /)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def serves(url: str, timeout: float = 1) -> bool:
    """Whether ``url`` answers with a status below 500 (the server is up, not failing)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False
