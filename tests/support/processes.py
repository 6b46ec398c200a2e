"""One way to start and stop the server processes tests need (moto, s3rver, Jupyter, Slurm...).

A server is started in its own session (so a Ctrl-C of the test run never reaches it and its
children can be stopped as a group), its output goes to a log file, and it is ready when a
check holds — a bounded wait that also fails at once if the process exits first. It is stopped
by PID (or process group): SIGTERM, a bounded wait, then SIGKILL. Never by name (no ``pkill``,
``killall`` or ``ray stop``): other runs on the same machine are left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .e2e import starts_processes

__all__ = ["ServerProcess", "descendants", "running", "serve", "start_server", "wait_ready"]


@dataclass
class ServerProcess:
    """A server a test started: its process, its log, and how it is stopped."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    group: bool = False  # stop its whole process group (a server that starts kernels)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        """The end of its log, for error messages."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, grace: float = 10, tree: bool = False) -> list[int]:
        """SIGTERM, up to ``grace`` s to end, then SIGKILL; the PIDs that had to be killed.

        ``tree`` also waits for every process below it (read from /proc before the SIGTERM)
        and SIGKILLs those left, for servers whose children leave its process group.
        """
        below = descendants(self.pid) if tree else set()
        if self.alive():
            self._signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (self.alive() or any(map(running, below))):
            if tree and self.alive():
                below |= descendants(self.pid)
            time.sleep(0.05)
        left = [pid for pid in below if running(pid)]
        if self.alive():
            left.insert(0, self.pid)
            self._signal(signal.SIGKILL)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        return left

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)


def wait_ready(
    check: Callable[[], object], timeout: float, what: str, *servers: ServerProcess
) -> None:
    """Poll ``check`` until it holds (bounded); fail at once if one of ``servers`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        for server in servers:
            if not server.alive():
                raise RuntimeError(
                    f"{server.name} exited with {server.proc.returncode} before {what}:\n"
                    f"{server.tail()}"
                )
        if check():
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"not {what} within {timeout} s")
        time.sleep(0.1)


@starts_processes
def start_server(
    name: str,
    argv: Sequence[str | Path],
    log: Path,
    *,
    ready: Callable[[], object] | None = None,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    group: bool = False,
) -> ServerProcess:
    """Start ``argv`` in its own session, output appended to ``log``; wait for ``ready``.

    Without ``ready`` it returns as soon as the process started. If it exits or is not ready
    within ``timeout`` s, it is stopped and RuntimeError names its log's tail.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:  # the child has its own copy of the descriptor
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    server = ServerProcess(name, proc, log, group)
    if ready is not None:
        try:
            wait_ready(ready, timeout, f"{name} ready", server)
        except RuntimeError as exc:
            server.stop(grace=1)
            raise RuntimeError(f"{exc}\n{server.tail()}") from None
    return server


@starts_processes
@contextlib.contextmanager
def serve(
    name: str,
    argv: Sequence[str | Path],
    log: Path,
    *,
    ready: Callable[[], object] | None = None,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    group: bool = False,
    grace: float = 10,
) -> Iterator[ServerProcess]:
    """``start_server`` for a ``with`` block (or a fixture): stopped at the end, however it ends."""
    server = start_server(
        name, argv, log, ready=ready, timeout=timeout, env=env, cwd=cwd, group=group
    )
    try:
        yield server
    finally:
        server.stop(grace)


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (from /proc)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                tree.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def pid_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie not reaped yet does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
