"""Run ``nbjob`` the way a platform does: a subprocess in its own session, output to files."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .e2e import starts_processes
from .results import output_folder, validate_written

__all__ = ["NBJOB", "NbjobProcess", "Result", "nbjob_env", "run_nbjob", "start_nbjob"]

NBJOB = str(Path(sys.executable).with_name("nbjob"))


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every JSON log line on stderr, in order."""
        found = []
        for line in self.stderr.splitlines():
            if line.startswith("{"):
                try:
                    found.append(dict(json.loads(line)))
                except ValueError:
                    continue
        return found

    @property
    def last_event(self) -> dict[str, Any]:
        """The last JSON log line on stderr (``run_end`` for ``nbjob run``), or {}."""
        for line in reversed(self.stderr.splitlines()):
            if line.startswith("{"):
                try:
                    return dict(json.loads(line))
                except ValueError:
                    continue
        return {}


def nbjob_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without NBJOB_* / AWS_* settings, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NBJOB_", "AWS_"))}
    base["NBJOB_LOG_FORMAT"] = "json"
    base.update(env or {})
    return base


@starts_processes
class NbjobProcess:
    """A running ``nbjob``; output goes to temp files, so the pipes never fill up."""

    def __init__(
        self,
        args: Iterable[str | Path],
        env: Mapping[str, str] | None,
        cwd: str | Path | None,
        cgroup: Path | None = None,
    ) -> None:
        # Files, not pipes: a test may watch the run for a while without reading its output.
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as this object)
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        args = [str(a) for a in args]
        self.written = output_folder(args, nbjob_env(env), cwd)  # validated after the run
        self.proc = subprocess.Popen(
            [NBJOB, *map(str, args)],
            env=nbjob_env(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            start_new_session=True,  # its own group: a timeout stops it and its children
            preexec_fn=None if cgroup is None else _join_cgroup(cgroup),
        )

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = 120) -> Result:
        """Wait (bounded); on timeout kill its process group and fail the test."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"nbjob did not end within {timeout} s: {self.output()}") from None
        validate_written(self.written)  # every notebook nbjob writes must be valid
        return Result(code, *self.output())

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def output(self) -> tuple[str, str]:
        texts = []
        for f in (self._out, self._err):
            f.seek(0)
            texts.append(f.read().decode("utf-8", "replace"))
        return texts[0], texts[1]


@starts_processes
def start_nbjob(
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    cgroup: Path | None = None,
) -> NbjobProcess:
    """Start ``nbjob ARGS`` in the background (for tests that watch a run as it goes);
    ``cgroup``: in that cgroup folder from its first instruction (``support.memory_group``)."""
    return NbjobProcess(args, env, cwd, cgroup)


def _join_cgroup(folder: Path) -> Callable[[], None]:
    """For ``preexec_fn``: the child moves itself into ``folder`` before it runs nbjob, so the
    kernel it starts is in the group too."""
    procs = str(folder / "cgroup.procs")

    def join() -> None:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    return join


@starts_processes
def run_nbjob(
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 120,
    cgroup: Path | None = None,
) -> Result:
    """Run ``nbjob ARGS`` to its end (``timeout`` is a safety bound only)."""
    return start_nbjob(*args, env=env, cwd=cwd, cgroup=cgroup).wait(timeout)
