"""One job, start to end: fetch and unpack while the kernel starts, execute, store, exit code.

``Job.run`` never raises: every ending becomes a run.json status, a one-line reason and one of
the documented exit codes, and the results already produced are stored before it returns.
SIGTERM/SIGINT interrupt the kernel and store partial results within ``stop_grace`` seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from nbjob import bundle as bundles
from nbjob import kernel as kernels
from nbjob import logs, params, platforms, results
from nbjob.config import Settings
from nbjob.errors import (
    GPUNotVisibleError,
    NbjobError,
    NotebookError,
    RunTimeoutError,
    StoppedError,
    StorageError,
)
from nbjob.storage import Storage, is_local, local_path

if TYPE_CHECKING:
    from nbjob.execute import CellResult, Executor

FINAL_WRITE_S = 300.0  # how long the final write may take when nothing else is pressing


class Job:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.t0 = time.monotonic()
        self.deadline = self.t0 + settings.timeout if settings.timeout else None
        self.stop_at: float | None = None  # monotonic time of the first SIGTERM/SIGINT
        # From here on a SIGTERM/SIGINT is recorded; once logging and results are set up, it
        # interrupts at once (outside the cell loop, which checks the flag itself).
        self._raise_on_signal = False
        self.stop_signal: str | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.storage = Storage(settings.s3_endpoint_url)
        self.workdir = Path(settings.workdir or tempfile.mkdtemp(prefix="nbjob-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Start the kernel first: it boots on another core while nbjob fetches and unpacks.
        # It starts in the notebook's folder when that is known now, else in the (empty)
        # bundle folder; the notebook may still ask for another kernel or folder (_kernel_at).
        self.source_local = is_local(settings.source) and local_path(settings.source).exists()
        self.artifacts = results.artifacts_dir(settings.output, self.workdir)
        self.kernel = self._new_kernel(settings.kernel or kernels.DEFAULT_KERNEL, self._guess_cwd())
        self.kernel.start_in_background()
        self.nb: Any = None
        self.executor: Executor | None = None
        self.keep_workdir = False
        self.record = results.new_record(settings)

    # -- signals -------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_at is not None:
            return  # already stopping; the grace period bounds the rest
        self.stop_at = time.monotonic()
        self.stop_signal = signal.Signals(signum).name
        if hasattr(self, "log"):  # logging is set up
            self.log.warning("stop_requested", signal=self.stop_signal, grace_s=self.s.stop_grace)
        if self._raise_on_signal:
            raise StoppedError(f"stopped by {self.stop_signal} before cells ran")

    def _should_stop(self) -> bool:
        return self.stop_at is not None

    # -- the job -------------------------------------------------------------------------------

    def run(self) -> int:
        error: NbjobError | None = None
        try:
            log_files = [self._log_path()]
        except StorageError as exc:  # the results folder cannot be made: still log, exit 6
            log_files, error = [self.workdir / results.LOG_NAME], exc
        if self.s.log_dir:
            log_files.append(Path(self.s.log_dir) / results.LOG_NAME)
        logs.configure(self.s.log_format, log_files, truncate=True)
        self.log = logs.get_logger(run_id=self.s.run_id)
        self.results = results.Results(
            self.storage,
            self.s.output,
            None,
            log_files[0],
            self.workdir / "results",
            self.artifacts,
            self.s.checkpoint_interval,
        )
        try:
            self.log.info(
                "run_start",
                source=self.s.source,
                output=self.s.output,
                platform=self.s.platform.name,
                nbjob=self.record["versions"]["nbjob"],
            )
            self._raise_on_signal = True
            if self.stop_signal is not None:  # arrived while nbjob was setting up
                self.log.warning("stop_requested", signal=self.stop_signal)
                raise StoppedError(f"stopped by {self.stop_signal} before cells ran")
            if error is not None:
                raise error
            self._prepare()
            self._raise_on_signal = False
            if self.stop_at is not None:
                raise StoppedError("stopped by signal before cells ran")
            self._execute()
        except NbjobError as exc:
            error = exc
        except Exception as exc:  # a bug in nbjob itself must still leave results behind
            self.log.exception("internal_error")
            error = NbjobError(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._raise_on_signal = False
        return self._finish(error)

    def _log_path(self) -> Path:
        if is_local(self.s.output):
            self.storage.check_writable(self.s.output)
            return local_path(self.s.output) / results.LOG_NAME
        return self.workdir / results.LOG_NAME

    def _read_only_folder(self) -> bool:
        """A folder source on a read-only mount runs on a copy, so cells can write beside it."""
        path = local_path(self.s.source)
        return self.source_local and path.is_dir() and not os.access(path, os.W_OK)

    def _guess_cwd(self) -> Path:
        if self.source_local and not self._read_only_folder():
            path = local_path(self.s.source)
            return (path if path.is_dir() else path.parent).resolve()
        cwd = self.workdir / "bundle"
        cwd.mkdir(exist_ok=True)
        return cwd.resolve()

    def _new_kernel(self, name: str, cwd: Path) -> kernels.KernelSession:
        # A local kernel inherits NBJOB_ARTIFACTS_DIR: notebooks save models and metrics there
        # (a remote kernel gets a folder of its own, brought back at the end).
        return kernels.open_session(
            self.s,
            name,
            cwd,
            workdir=self.workdir,
            env={"NBJOB_ARTIFACTS_DIR": str(self.artifacts)},
        )

    def _prepare(self) -> None:
        s = self.s
        started = time.monotonic()
        download = self.workdir / "download"
        download.mkdir(exist_ok=True)
        fetched = self.storage.fetch(s.source, download)
        if not self.source_local:
            self.log.info(
                "fetched",
                bytes=fetched.stat().st_size,
                seconds=round(time.monotonic() - started, 3),
            )
            if fetched.suffix == ".ipynb" and bundles.archive_kind(fetched) is None:
                fetched = bundles.place_notebook(fetched, self.workdir / "bundle")
        elif self._read_only_folder():
            self.log.info("read_only_source", copied_to=str(self.workdir / "bundle"))
            fetched = Path(shutil.copytree(fetched, self.workdir / "bundle", dirs_exist_ok=True))
        bundle = bundles.open_bundle(
            fetched, self.workdir / "bundle", s.notebook, s.max_bundle_files, s.max_bundle_bytes
        )
        self.results.notebook_name = bundle.notebook.name
        self.record["notebook"] = bundle.relative_notebook
        self.log.info("bundle", root=str(bundle.root), notebook=bundle.relative_notebook)

        self.nb = self._read_notebook(bundle.notebook)
        results.remove_banners(self.nb)
        installed = self.kernel.kernelspecs()
        name = kernels.choose(self.nb.metadata, s.kernel or bundle.kernel, installed)
        language = (self.nb.metadata.get("kernelspec") or {}).get("language") or "python"
        merged = bundle.parameters
        if s.parameters_file:
            merged.update(params.load_file(s.parameters_file))
        merged.update(s.parameters)
        if unknown := params.inject(self.nb, merged, language):
            self.log.warning("unknown_parameters", names=unknown)
        self.record["parameters"] = merged

        kernel = self._kernel_at(name, bundle.notebook.parent.resolve(), bundle.root)
        self.record["kernel"] = {
            "name": name,
            "language": kernel.language,
            "implementation": kernel.info.get("implementation"),
            "implementation_version": kernel.info.get("implementation_version"),
            **kernel.describe(),
        }
        self.log.info(
            "kernel_ready",
            kernel=name,
            language=kernel.language,
            seconds=round(time.monotonic() - self.t0, 3),
            **kernel.describe(),
        )
        if unmet := kernel.check_requirements(bundles.requirement_lines(bundle.root)):
            self.record["unmet_requirements"] = unmet
            self.log.warning(
                "requirements_unmet",
                requirements=unmet,
                hint="nbjob installs nothing at job start; use an image with them",
            )
        probe = kernel.probe_gpus()
        self.record["gpus"], self.record["gpu_probe"] = probe.get("gpus", []), probe
        self.log.info(
            "gpus",
            gpus=probe.get("gpus", []),
            visible=probe.get("env", {}),
            error=probe.get("error"),
        )
        if s.require_gpu and not probe.get("gpus"):
            raise GPUNotVisibleError(
                "a GPU is required (--require-gpu) but the kernel sees none"
                + (f": {probe['error']}" if probe.get("error") else "")
            )

    def _read_notebook(self, path: Path) -> Any:
        import nbformat

        try:
            nb = nbformat.read(path, as_version=4)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise NotebookError(
                f"{path.name} is not a readable notebook: {str(exc).splitlines()[0][:300]}"
            ) from None
        if not isinstance(nb.get("cells"), list):
            raise NotebookError(f"{path.name} is not a notebook (no cells)")
        try:
            nbformat.validate(nb)
        except nbformat.ValidationError as exc:
            self.log.warning("notebook_invalid", reason=str(exc).splitlines()[0][:300])
        return nb

    def _kernel_at(self, name: str, cwd: Path, root: Path) -> kernels.KernelSession:
        """The started kernel, replaced when the notebook needs another one or folder.

        The bundle's files reach the kernel's folder first (a remote kernel gets a copy).
        """
        kernel = self.kernel
        try:
            kernel.wait_started()
            if kernel.name == name and (kernel.cwd == cwd or kernel.language == "python"):
                return self._in_folder(kernel, cwd, root)
        except NbjobError:
            if kernel.name == name:
                raise
        kernel.shutdown(grace=0)
        self.kernel = self._new_kernel(name, cwd)
        self.kernel.start()
        return self._in_folder(self.kernel, cwd, root)

    def _in_folder(
        self, kernel: kernels.KernelSession, cwd: Path, root: Path
    ) -> kernels.KernelSession:
        started = time.monotonic()
        if sent := kernel.upload_files(root):
            seconds = round(time.monotonic() - started, 3)
            self.log.info("files_uploaded", files=sent, seconds=seconds)
        if kernel.cwd != cwd:  # notebook in a subfolder: Python can just change dir
            kernel.chdir(cwd)
        return kernel

    def _execute(self) -> None:
        from nbjob.execute import Executor

        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise RunTimeoutError("the run took longer than its time limit before cells ran")
        self.executor = Executor(
            self.kernel,
            self,
            cell_timeout=self.s.cell_timeout,
            run_deadline=self.deadline,
            max_output_bytes=self.s.max_output_bytes,
            should_stop=self._should_stop,
            stop_wait=min(5.0, self.s.stop_grace / 3),
        )
        self.log.info("execute_start", cells=len(self.executor.code_cells(self.nb)))
        exited = self.executor.run(self.nb)
        if exited:
            self.log.info("run_exited_early", reason="a cell called sys.exit(0)")

    # -- hooks called by Executor --------------------------------------------------------------

    def on_cell_start(self, index: int, cell: Any) -> None:
        self.log.info("cell_start", cell=index)
        self._checkpoint()

    def on_cell_end(self, index: int, cell: Any, result: CellResult) -> None:
        self.log.info(
            "cell_end",
            cell=index,
            status=result.status,
            execution_count=result.execution_count,
            duration_s=result.duration_s,
            **({"error": result.error} if result.error else {}),
        )
        self._checkpoint()

    def on_stream(self, index: int, name: str, text: str) -> None:
        self.log.info("stream", cell=index, name=name, text=text)

    def on_tick(self) -> None:
        self._checkpoint()

    def _checkpoint(self) -> None:
        if self.results.due():
            self.results.checkpoint(self.nb, self._snapshot())

    def _snapshot(self) -> dict[str, Any]:
        if self.executor is not None:
            self.record["cells"] = [r.as_record() for r in self.executor.results.values()]
        return self.record

    # -- the end -------------------------------------------------------------------------------

    def _finish(self, error: NbjobError | None) -> int:
        s = self.s
        stopping = self.stop_at is not None
        if stopping and not isinstance(error, StoppedError):
            error = StoppedError(
                f"stopped by signal ({error.reason})" if error else "stopped by signal"
            )
        code, status = (error.exit_code, error.status) if error else (0, "succeeded")
        reason = error.reason if error else "succeeded"
        cell_index = error.details.get("cell_index") if error else None
        self._fetch_artifacts(max(1.0, s.stop_grace / 3) if stopping else FINAL_WRITE_S / 5)
        self._snapshot()
        self.record["artifacts"] = self.results.artifact_names()
        self.record.update(
            status=status,
            exit_code=code,
            reason=reason,
            ended_at=logs.now_iso(),
            duration_s=round(time.monotonic() - self.t0, 3),
        )
        if cell_index is not None:
            self.record["failed_cell"] = {
                "index": cell_index,
                **((self.executor.results[cell_index].error or {}) if self.executor else {}),
            }
            if self.nb is not None:
                results.add_banners(self.nb, cell_index, reason)
        if stopping:
            assert self.stop_at is not None
            budget = max(1.0, s.stop_grace - (time.monotonic() - self.stop_at) - 1.0)
        else:
            budget = FINAL_WRITE_S
        failed = stopping or error is not None
        if failed:
            self.kernel.shutdown(grace=0)  # results first; a failed run's kernel is not needed
        deadline = time.monotonic() + budget
        stored = True
        try:
            self.results.final(self.nb, self.record, timeout=budget)
        except StorageError as exc:
            stored, self.keep_workdir = False, True
            self.log.error("results_not_stored", reason=exc.reason)
            if code == 0:  # never report success when the results are not stored
                code, status, reason = exc.exit_code, exc.status, exc.reason
                self.record.update(status=status, exit_code=code, reason=reason)
        self.log.info(
            "run_end",
            status=status,
            exit_code=code,
            reason=reason,
            cell=cell_index,
            duration_s=self.record["duration_s"],
        )
        if stored:
            self.results.store_log(timeout=deadline - time.monotonic())
        else:
            self.results.keep_local_copy(self.nb, self.record)
        message = reason if code else f"succeeded: {self.record['notebook']}"
        platforms.write_termination_message(self.s.termination_log, logs.redact(message))
        if not failed:  # a finished kernel may run its exit handlers
            self.kernel.shutdown(grace=3.0)
        logs.close()
        self._cleanup()
        return code

    def _fetch_artifacts(self, timeout: float) -> None:
        """A remote kernel's artifacts come back into the local artifacts folder."""
        try:
            if names := self.kernel.fetch_artifacts(self.artifacts, timeout=timeout):
                self.log.info("artifacts_fetched", files=len(names))
        except (NbjobError, OSError, ValueError, TimeoutError) as exc:
            self.log.warning("artifacts_not_fetched", reason=str(exc)[:300])

    def _cleanup(self) -> None:
        if self.s.workdir:
            return  # the user's folder: leave it
        if self.keep_workdir:
            shutil.rmtree(self.workdir / "bundle", ignore_errors=True)
            shutil.rmtree(self.workdir / "download", ignore_errors=True)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def run(settings: Settings) -> int:
    """Run one job; the return value is the process exit code."""
    return Job(settings).run()
