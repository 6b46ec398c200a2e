"""The start of a run: its kernel first, then the job (``run``, the public ``nbjob.run``).

The kernel's process is launched before nbjob imports the job and what the job needs only after
the launch (its record, results, report, finish: about 0.1 s of imports at every start), so the
kernel boots on another core meanwhile. The launch needs the run's work folder, its artifacts
folder (``NBJOB_ARTIFACTS_DIR`` in the kernel's environment) and the folder the kernel starts
in: the notebook's when it is local, else the (empty) bundle folder; the notebook may still ask
for another kernel or folder once read (``Job._kernel_at``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nbjob import early, reaper, stop
from nbjob import kernel as kernels
from nbjob.config import Settings
from nbjob.layout import ARTIFACTS, Destination
from nbjob.storage import is_local, local_path

if TYPE_CHECKING:
    from nbjob.environment import Overlay
    from nbjob.events import Listener, Subscription


@dataclass(frozen=True)
class Start:
    """A run's work folder, artifacts folder and kernel session: launched, unless the run
    installs requirements first (its kernel then starts from the overlay, once made)."""

    workdir: Path
    artifacts: Path
    kernel: kernels.KernelSession


def launch(settings: Settings) -> Start:
    """Make the run's folders and launch its kernel (connected to in the background)."""
    workdir = Path(settings.workdir or tempfile.mkdtemp(prefix="nbjob-"))
    workdir.mkdir(parents=True, exist_ok=True)
    artifacts = artifacts_dir(settings.places.own, workdir)
    cwd = kernel_cwd(settings.source, workdir)
    name = settings.kernel or kernels.DEFAULT_KERNEL
    kernel = session(settings, name, cwd, workdir, artifacts)
    if not settings.install_requirements:
        kernel.start_in_background()
    early.discard()  # launched into it, else not to be used
    return Start(workdir, artifacts, kernel)


def session(
    settings: Settings,
    name: str,
    cwd: Path,
    workdir: Path,
    artifacts: Path,
    overlay: Overlay | None = None,
) -> kernels.KernelSession:
    """A new, unstarted kernel session. A local kernel inherits ``NBJOB_ARTIFACTS_DIR``:
    notebooks save models and metrics there (a remote kernel gets a folder of its own, brought
    back at the end)."""
    env = {
        "NBJOB_ARTIFACTS_DIR": str(artifacts),
        **({"NBJOB_ATTEMPT": str(settings.attempt)} if settings.attempt else {}),
        **(overlay.kernel_env() if overlay else {}),
    }
    python = str(overlay.python) if overlay else None
    return kernels.open_session(settings, name, cwd, workdir=workdir, env=env, python=python)


def artifacts_dir(dest: Destination, workdir: Path) -> Path:
    """Where the kernel writes artifacts: inside a local destination, else streamed from here."""
    folder = workdir / ARTIFACTS
    if dest.is_local:
        with contextlib.suppress(OSError):
            local_path(dest.artifacts).mkdir(parents=True, exist_ok=True)
            folder = local_path(dest.artifacts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def source_is_local(source: str) -> bool:
    return is_local(source) and local_path(source).exists()


def read_only_folder(source: str) -> bool:
    """A folder source on a read-only mount runs on a copy, so cells can write beside it."""
    if not source_is_local(source):
        return False
    path = local_path(source)
    return path.is_dir() and not os.access(path, os.W_OK)


def kernel_cwd(source: str, workdir: Path) -> Path:
    """Where the kernel starts before the notebook is known: its folder, else the bundle's."""
    if source_is_local(source) and not read_only_folder(source):
        path = local_path(source)
        return (path if path.is_dir() else path.parent).resolve()
    cwd = workdir / "bundle"
    cwd.mkdir(exist_ok=True)
    return cwd.resolve()


def run(
    settings: Settings,
    token: stop.StopToken | None = None,
    listeners: Sequence[Listener | Subscription] = (),
    *,
    install_signals: bool = False,
    configure_logging: bool = False,
    end_orphans: bool = False,
) -> int:
    """Run one job; the return value is the process exit code.

    ``token``: stops the run when set (``token.request``); a new one when not given.
    ``listeners``: external listeners, each a listener or an ``nbjob.Subscription``; with the
    plug-ins ``settings.listeners`` names, they are isolated from the run (``events.Bus``).
    ``install_signals``: make ``settings.stop_signals`` set the token (this replaces the
    process's handlers for them); ``configure_logging``: make nbjob's log structlog's global
    configuration. The command line asks for both; an embedding program usually for neither
    (the run's log, executor.log, is written either way; a run may then be started from any
    thread, and Ctrl-C is the program's KeyboardInterrupt, not a graceful stop: for that, set
    the token from the program's own handler, or ask for ``install_signals``).
    ``end_orphans``: make this process a child subreaper and, at the end, end the processes the
    run left below it that were not there when it began (``nbjob.reaper``); for a program that
    runs one job at a time. The kernel's own process group is ended either way.
    ``UsageError`` for an unknown plug-in, before any kernel starts.
    """
    from nbjob.listeners import plugins

    external = [*listeners, *plugins.load(plugins.wanted(settings), settings)]
    if settings.notify:  # urllib's import (~10 ms) only for a run that notifies
        from nbjob.listeners import notify

        external += notify.subscriptions(settings)
    if token is None:
        token = stop.StopToken()
    if install_signals:
        stop.install(token, settings.stop_signals)
    orphans = reaper.Orphans() if end_orphans else None  # before the kernel starts
    started = launch(settings)
    from nbjob.job import Job  # after the launch: the kernel boots meanwhile

    job = Job(settings, token, external, configure_logging, started)
    job.orphans = orphans
    return job.run()
