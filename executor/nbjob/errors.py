"""Every way a job can end, one exception class per exit code.

The hierarchy maps 1:1 onto the exit-code table that platform retry policies use
(docs/running/index.md, "Exit codes")::

    NbjobError                      base; never raised itself
    ├── CellExecutionError      1   a cell raised an error
    ├── UsageError              2   bad command line or settings
    ├── InvalidInputError       3   bad bundle, notebook or parameters
    │   ├── BundleError
    │   ├── NotebookError
    │   └── ParameterError
    ├── JobTimeoutError         4   a cell or the whole run took too long
    │   ├── CellTimeoutError
    │   └── RunTimeoutError
    ├── DeadKernelError         5   the kernel process died (crash, OOM kill, os._exit)
    ├── StorageError            6   fetch or upload failed after retries
    ├── EnvironmentUnfitError   7   this machine cannot run the job
    │   ├── NoSuchKernelError
    │   └── GPUNotVisibleError
    ├── ConcurrentAttemptError  8   another live attempt holds the destination's lease
    ├── InternalError           1   a bug in nbjob (status internal_error, with a traceback)
    ├── StoppedError          143   SIGTERM / SIGINT from the platform
    └── PeerLostError         200   a collective failed because another rank died or went away

Success is exit 0 and has no class. Each error carries a one-line ``reason`` that goes
to the log, to run.json and to the termination-message file.
"""

from __future__ import annotations

from typing import Any


class NbjobError(Exception):
    """Base class: ``exit_code`` and ``status`` are what the platform sees."""

    exit_code: int = 1
    status: str = "failed"

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.reason = " ".join(str(reason).split())  # always one line
        self.details = details


class CellExecutionError(NbjobError):
    """A cell raised an exception (including a non-zero ``SystemExit``)."""

    exit_code = 1
    status = "failed"


class UsageError(NbjobError):
    """The command line or the NBJOB_* settings are wrong."""

    exit_code = 2
    status = "usage_error"


class InvalidInputError(NbjobError):
    """The bundle, the notebook or the parameters cannot be used."""

    exit_code = 3
    status = "invalid_input"


class BundleError(InvalidInputError):
    """Unsafe or malformed archive; no notebook or an ambiguous choice of notebook."""


class NotebookError(InvalidInputError):
    """The notebook file is not a valid notebook."""


class ParameterError(InvalidInputError):
    """Parameters cannot be parsed or injected."""


class JobTimeoutError(NbjobError):
    """A time limit was reached."""

    exit_code = 4
    status = "timed_out"


class CellTimeoutError(JobTimeoutError):
    """One cell ran longer than the per-cell timeout."""


class RunTimeoutError(JobTimeoutError):
    """The whole run took longer than the run timeout."""


class DeadKernelError(NbjobError):
    """The kernel process exited while the job needed it."""

    exit_code = 5
    status = "kernel_died"


class StorageError(NbjobError):
    """Reading the bundle or writing results failed after retries."""

    exit_code = 6
    status = "storage_error"


class EnvironmentUnfitError(NbjobError):
    """The machine or image cannot run this job as asked."""

    exit_code = 7
    status = "environment_unfit"


class NoSuchKernelError(EnvironmentUnfitError):
    """The kernelspec the notebook names is not installed."""


class GPUNotVisibleError(EnvironmentUnfitError):
    """A GPU was required, and the kernel sees none."""


class ConcurrentAttemptError(NbjobError):
    """Another attempt of the run is alive and holds the destination (``nbjob.lease``): this
    one stops before its first cell, its results beside (``attempts/concurrent-<start>/``)."""

    exit_code = 8
    status = "concurrent_attempt"


class InternalError(NbjobError):
    """A bug in nbjob itself (not the notebook): its traceback is in executor.log and run.json."""

    exit_code = 1
    status = "internal_error"


class StoppedError(NbjobError):
    """The platform asked the job to stop (SIGTERM or SIGINT)."""

    exit_code = 143
    status = "stopped"


class PeerLostError(NbjobError):
    """A cell's collective failed because a peer rank died or went away (torch.distributed,
    gloo, NCCL): not this notebook's bug. 200 is in the range PyTorchJob's ``ExitCode`` policy
    retries (128-255) and above 128 + any signal number, so it never reads as "killed by a
    signal" (130, 137, 143)."""

    exit_code = 200
    status = "peer_lost"


def cell_name(index: int, execution_count: int | None) -> str:
    """A code cell in the user's words: ``In [7] (cell 15)``, the execution count JupyterLab
    shows first, the cell's index in the notebook (markdown cells count) second; ``cell 15``
    for a cell that never started."""
    if execution_count is None:
        return f"cell {index}"
    return f"In [{execution_count}] (cell {index})"


EXIT_CODES: dict[int, type[NbjobError]] = {
    cls.exit_code: cls
    for cls in (
        CellExecutionError,
        UsageError,
        InvalidInputError,
        JobTimeoutError,
        DeadKernelError,
        StorageError,
        EnvironmentUnfitError,
        ConcurrentAttemptError,
        StoppedError,
        PeerLostError,
    )
}


class RunLostError(NbjobError):
    """``nbjob watch`` only (not a run's exit code): the watched run gave no sign of life — its
    heartbeat stopped while it was ``running`` (a SIGKILL, a lost node), or no run appeared at
    the destination within ``--wait-start``."""

    exit_code = 9
    status = "lost"
