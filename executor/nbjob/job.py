"""One job, start to end: prepare → execute → finish, driven by a stop token.

``Job.run`` never raises: every ending becomes a run.json status, a one-line reason and one of
the documented exit codes, and the results already produced are stored before it returns. The
kernel starts first and boots while ``prepare`` fetches and unpacks. The run publishes events
(``nbjob.events``: RunStarted, the cells', RunEnded) to a bus; the record, the log and the
checkpointer listen inline, external listeners (plug-ins, ``run(listeners=...)``) isolated. A stop
signal sets the ``StopToken`` (``nbjob.stop``); every step checks it, and the results are stored
within ``stop_grace`` seconds of the signal.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nbjob import attempts, events, logs, platforms, prepare, ranks, report, results, stop
from nbjob import kernel as kernels
from nbjob.config import Settings
from nbjob.errors import (
    InternalError,
    NbjobError,
    RunTimeoutError,
    StoppedError,
    StorageError,
)
from nbjob.record import RunRecord
from nbjob.storage import Storage, is_local, join, local_path

FINAL_WRITE_S = 300.0  # how long the final write may take when nothing else is pressing


class Job:
    def __init__(
        self,
        settings: Settings,
        token: stop.StopToken,
        listeners: Sequence[events.Listener | events.Subscription] = (),
        configure_logging: bool = False,
    ) -> None:
        self.s = settings
        self.token = token
        self.listeners = list(listeners)  # external consumers of events (plug-ins, embedders)
        self.configure_logging = configure_logging  # structlog's global configuration too
        self.t0 = time.monotonic()
        self.deadline = self.t0 + settings.timeout if settings.timeout else None
        self.storage = Storage(settings.storage_options)
        self.workdir = Path(settings.workdir or tempfile.mkdtemp(prefix="nbjob-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.record = RunRecord.start(
            settings.run_id,
            settings.source,
            settings.output,
            settings.platform.name,
            settings.platform.info,
        )
        self.record.placed(settings.identity.to_json(), settings.shard, settings.shard_source)
        if settings.no_report:
            self.record.report_missing(report.TURNED_OFF)
        # Start the kernel first: it boots on another core while nbjob fetches and unpacks.
        # It starts in the notebook's folder when that is known now, else in the (empty)
        # bundle folder; the notebook may still ask for another kernel or folder (_kernel_at).
        self.artifacts = results.artifacts_dir(settings.output, self.workdir)
        cwd = prepare.kernel_cwd(settings.source, self.workdir)
        self.kernel = self._new_kernel(settings.kernel or kernels.DEFAULT_KERNEL, cwd)
        self.kernel.start_in_background()
        self.nb: Any = None
        self.nb_folder: Path | None = None  # the notebook's folder in the bundle (its images)
        self.keep_workdir = False
        self.attempt: attempts.Attempt | None = None
        self.watch: ranks.PeerWatch | None = None  # the peers' records, while cells run

    # -- the job -------------------------------------------------------------------------------

    def run(self) -> int:
        error: NbjobError | None = self._open_results()
        try:
            self.log.info(
                "run_start",
                source=self.s.source,
                output=self.s.output,
                platform=self.s.platform.name,
                nbjob=self.record.versions["nbjob"],
            )
            self.token.check("before the run started")
            if error is not None:
                raise error
            self._prepare()
            self._execute()
        except NbjobError as exc:
            error = ranks.classify(exc, self.s.identity, self.watch)  # a lost peer: not a bug
        except Exception as exc:  # a bug in nbjob itself must still leave results behind
            trace = logs.redact("".join(traceback.format_exception(exc)))
            self.log.error("internal_error", traceback=trace)
            self.record.internal_error(trace)
            error = InternalError(f"internal error: {type(exc).__name__}: {exc}")
        return self._finish(error)

    def _open_results(self) -> StorageError | None:
        """The log, the results writer and the event bus; the error if the output is unusable."""
        error: StorageError | None = None
        try:
            log_files = [self._log_path()]
        except StorageError as exc:  # the results folder cannot be made: still log, exit 6
            log_files, error = [self.workdir / results.LOG_NAME], exc
        if error is None and is_local(self.s.output):  # before the log file is truncated
            error = self._begin_attempt()
        if self.s.log_dir:
            log_files.append(Path(self.s.log_dir) / results.LOG_NAME)
        logs.configure(
            self.s.log_format, log_files, truncate=True, global_structlog=self.configure_logging
        )
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
        from nbjob.listeners import Checkpointer, LogListener  # nbformat: after the kernel launch

        checkpointer = Checkpointer(self.results, lambda: self.nb, self.record)
        self.bus = events.Bus([self.record, LogListener(self.log), checkpointer], log=self.log)
        for listener in self.listeners:  # isolated: their errors never reach the run
            self.bus.subscribe(listener)
        return error

    def _begin_attempt(self) -> StorageError | None:
        """Keep an earlier attempt's results under attempts/<n>/ and learn this one's number."""
        found = self._read_attempt()
        if isinstance(found, StorageError):
            return found
        self.attempt = found
        return None

    def _read_attempt(self) -> attempts.Attempt | StorageError:
        return attempts.read(self.storage, self.s, self.artifacts)

    def _late_attempt(self, budget: float) -> None:
        """The run ended (a stop, say) before a remote destination was read: read it now, for
        at most ``budget`` seconds, so the results go on top as usual; if it cannot be read in
        time, they go beside whatever it holds, never over it."""
        found = stop.bounded(self._read_attempt, budget, "reading earlier attempts")
        if isinstance(found, attempts.Attempt):
            self.attempt = found
            self.record.attempt_began(found.number, found.earlier, None)
        else:
            self._beside_earlier_attempts()

    def _resume(self) -> list[str]:
        """Attempt n > 1: the earlier attempt's artifacts, restored before the first cell."""
        a = self.attempt or attempts.Attempt()
        self.record.attempt_began(a.number, a.earlier, a.resume_from)
        restored: list[str] = []
        if a.resume_from is not None:
            restored = attempts.restore(self.storage, self.s.output, self.artifacts)
        return restored

    def _log_path(self) -> Path:
        if is_local(self.s.output):
            self.storage.check_writable(self.s.output)
            return local_path(self.s.output) / results.LOG_NAME
        return self.workdir / results.LOG_NAME

    def _new_kernel(self, name: str, cwd: Path) -> kernels.KernelSession:
        # A local kernel inherits NBJOB_ARTIFACTS_DIR: notebooks save models and metrics there
        # (a remote kernel gets a folder of its own, brought back at the end).
        return kernels.open_session(
            self.s,
            name,
            cwd,
            workdir=self.workdir,
            env={
                "NBJOB_ARTIFACTS_DIR": str(self.artifacts),
                **({"NBJOB_ATTEMPT": str(self.s.attempt)} if self.s.attempt else {}),
            },
        )

    def _prepare(self) -> None:
        from nbjob.execute import code_cells

        s = self.s
        if self.attempt is None:  # a remote destination
            error = stop.wait_for(self.token, self._begin_attempt, "reading earlier attempts")
            if error is not None:
                raise error
        assert self.attempt is not None
        restored = stop.wait_for(self.token, self._resume, "restoring artifacts")
        self.results.stream_artifacts(restored)
        self.log.info(
            "attempt",
            attempt=self.attempt.number,
            earlier=len(self.attempt.earlier),
            resumed_from=self.attempt.resume_from,
            restored=len(restored),
        )
        bundle = prepare.open_source(s, self.storage, self.workdir, self.token, self.log)
        self.results.notebook_name = bundle.notebook.name
        self.nb_folder = bundle.notebook.parent
        self.record.bundle_opened(bundle.relative_notebook)
        self.nb = prepare.read_notebook(bundle.notebook, self.log)
        installed = stop.wait_for(self.token, self.kernel.kernelspecs, "the kernel list")
        name = kernels.choose(self.nb.metadata, s.kernel or bundle.kernel, installed)
        self.record.parameters_merged(prepare.inject_parameters(self.nb, bundle, s, self.log))
        self.bus.publish(events.CellsListed(tuple(code_cells(self.nb))))

        cwd = bundle.notebook.parent.resolve()
        kernel = stop.wait_for(
            self.token,
            lambda: prepare.kernel_at(
                self.kernel, name, cwd, bundle.root, self._replace_kernel, self.log
            ),
            "the kernel start",
        )
        session = kernel.describe() | {"unsupported": kernel.lang.unsupported()}
        self.record.kernel_ready(name, kernel.language, kernel.info, session)
        attempt = str(self.record.attempt)  # may be known only now (the destination's)
        stop.wait_for(
            self.token, lambda: kernel.set_env("NBJOB_ATTEMPT", attempt), "the attempt number"
        )
        self.log.info(
            "kernel_ready",
            kernel=name,
            language=kernel.language,
            seconds=round(time.monotonic() - self.t0, 3),
            **kernel.describe(),
        )
        prepare.check_environment(
            kernel, bundle.root, s.require_gpu, self.token, self.record, self.log
        )

    def _replace_kernel(self, name: str, cwd: Path) -> kernels.KernelSession:
        """Another kernel (not started yet), the job's from now on: a stop shuts it down."""
        self.kernel = self._new_kernel(name, cwd)
        return self.kernel

    def _execute(self) -> None:
        from nbjob.execute import Executor

        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise RunTimeoutError("the run took longer than its time limit before cells ran")
        self.watch = ranks.PeerWatch(self.storage, self.s, self.token, self.record.to_json())
        executor = Executor(
            self.kernel,
            self.bus,
            cell_timeout=self.s.cell_timeout,
            run_deadline=self.deadline,
            max_output_bytes=self.s.max_output_bytes,
            stop=self.watch.token,
            stop_wait=min(5.0, self.s.stop_grace / 3),
        )
        self.log.info("execute_start", cells=len(executor.code_cells(self.nb)))
        self.bus.publish(self.record.run_started())
        with self.watch:
            if executor.run(self.nb):
                self.log.info("run_exited_early", reason="a cell called sys.exit(0)")

    def _publish_ended(self, stored: bool) -> None:
        """RunEnded, the last event; external listeners get a bounded time to take it (less
        after a stop: the results are stored, what is left of the grace ends the process)."""
        where = self.results.dest if stored else str(self.results.spool)
        ended = self.record.run_ended(where, stored, self.results.notebook_name)
        drain = events.DRAIN_S
        if self.token.requested:
            drain = min(drain, max(0.0, self.token.remaining(self.s.stop_grace) - 1.0))
        self.bus.close(ended, drain)

    # -- the end -------------------------------------------------------------------------------

    def _finish(self, error: NbjobError | None) -> int:
        stopping = self.token.requested
        self._fetch_artifacts(max(1.0, self.s.stop_grace / 3) if stopping else FINAL_WRITE_S / 5)
        if self.attempt is None and not is_local(self.s.output):  # not read, or unreadable
            if stopping:
                self._late_attempt(self.token.remaining(self.s.stop_grace) / 3)
            else:
                self._beside_earlier_attempts()
        error = self._close_record(error)
        if error is not None and not stopping:  # a failed run's kernel is not needed
            self.kernel.shutdown(grace=0)
        if self.s.identity.canonical and self.s.identity.multi:  # peers see this rank's end
            self.results.checkpoint(self.nb, self.record.to_json())  # while it waits for theirs
        ranks.record_ranks(self.record, self.storage, self.s, lambda: self.token.requested)
        ending = self._end_kernel(error)  # after the peers: this kernel may hold their store
        if stopping:
            deadline = time.monotonic() + max(1.0, self.token.remaining(self.s.stop_grace) - 1.0)
        else:
            deadline = time.monotonic() + FINAL_WRITE_S
        stored = self._store(deadline)
        report.write(
            self.results,
            self.nb,
            self.record,
            report.Budget(deadline, self.token, self.s.stop_grace),
            folder=self.nb_folder,
            enabled=not self.s.no_report,
            stored=stored,
        )
        self._report(stored, deadline)
        self._stop_kernel(ending)
        self._publish_ended(stored)
        logs.close()
        self._cleanup()
        return self.record.exit_code if self.record.exit_code is not None else 1

    def _beside_earlier_attempts(self) -> None:
        """The destination was never read: results go beside what it holds, never over it."""
        stamp = self.record.started_at.replace(":", "").replace("-", "")[:15]
        self.results.dest = join(self.s.output, f"{attempts.ATTEMPTS_DIR}/unread-{stamp}")
        self.results.stream = None
        self.log.warning("results_beside_earlier_attempts", output=self.results.dest)

    def _close_record(self, error: NbjobError | None) -> NbjobError | None:
        """The run's ending in the record (a stop wins) and the notebook's banners."""
        if self.token.requested:
            self.log.warning("stop_requested", signal=self.token.signal, grace_s=self.s.stop_grace)
            if not isinstance(error, StoppedError):
                reason = self.token.reason or "stopped"
                error = StoppedError(f"{reason} ({error.reason})" if error else reason)
        self.record.finished(error, self.results.artifact_names())
        if self.record.failed_index is not None and self.nb is not None:
            results.add_banners(self.nb, self.record.failed_index, self.record.reason or "")
        return error

    def _report(self, stored: bool, deadline: float) -> None:
        """run_end in the log, the log stored once more, the termination message."""
        r = self.record
        self.log.info(
            "run_end",
            status=r.status,
            exit_code=r.exit_code,
            reason=r.reason,
            cell=r.failed_index,
            duration_s=r.duration_s,
        )
        if stored:
            with contextlib.suppress(StoppedError):
                self._within_grace(
                    lambda: self.results.store_log(deadline - time.monotonic()), "the log upload"
                )
        else:
            self.results.keep_local_copy(self.nb, r.to_json())
        message = r.reason if r.exit_code else f"succeeded: {r.notebook}"
        platforms.write_termination_message(self.s.termination_log, logs.redact(message or ""))

    def _end_kernel(self, error: NbjobError | None) -> stop.Worker[None] | None:
        """A finished run's kernel shuts down (its exit handlers run) while the results are
        written, in the worker returned here. After a stop the results come first
        (``_stop_kernel``); a failed run's kernel is killed already."""
        if self.token.requested or error is not None:
            return None
        return stop.Worker(lambda: self.kernel.shutdown(3.0), "the kernel's shutdown")

    def _stop_kernel(self, ending: stop.Worker[None] | None) -> None:
        """The kernel's end, once the results are written: the graceful shutdown under way is
        waited for (a stop cuts it short); after a stop the kernel, perhaps still starting, is
        killed within what is left of the grace."""
        if ending is not None:
            try:
                ending.wait(self.token, "the kernel's shutdown")
                return
            except StoppedError:
                pass
            except Exception as exc:  # the results are stored: say so, and end as recorded
                self.log.warning("kernel_shutdown_failed", reason=str(exc)[:300])
        if self.token.requested:
            left = self.token.remaining(self.s.stop_grace) - 0.5  # a starting kernel may need more
            stop.bounded(lambda: self.kernel.shutdown(0), left, "the kernel's shutdown")

    def _store(self, deadline: float) -> bool:
        nb, data = self.nb, self.record.to_json()
        try:
            self._within_grace(
                lambda: self.results.final(nb, data, timeout=deadline - time.monotonic()),
                "the final write",
            )
        except StoppedError as exc:  # the grace ran out first
            return self._not_stored(
                StoppedError(f"{exc.reason}; a local copy is in {self.results.spool}")
            )
        except StorageError as exc:
            return self._not_stored(exc)
        return True

    def _not_stored(self, exc: StorageError | StoppedError) -> bool:
        self.keep_workdir = True
        self.log.error("results_not_stored", reason=exc.reason)
        self.record.not_stored(exc)
        if self.record.status == "storage_error" and "local copy" not in str(self.record.reason):
            self.record.reason = f"{self.record.reason}; a local copy is in {self.results.spool}"
        return False

    def _within_grace(self, work: Callable[[], None], what: str) -> None:
        """A final write: it may go on after a stop request, until just before the grace ends."""
        stop.within_grace(self.token, self.s.stop_grace - 0.5, work, what)

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


def run(
    settings: Settings,
    token: stop.StopToken | None = None,
    listeners: Sequence[events.Listener | events.Subscription] = (),
    *,
    install_signals: bool = False,
    configure_logging: bool = False,
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
    ``UsageError`` for an unknown plug-in, before any kernel starts.
    """
    from nbjob.listeners import plugins

    external = [*listeners, *plugins.load(settings.listeners, settings)]
    if token is None:
        token = stop.StopToken()
    if install_signals:
        stop.install(token, settings.stop_signals)
    return Job(settings, token, external, configure_logging).run()
