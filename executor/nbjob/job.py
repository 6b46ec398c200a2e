"""One job, start to end: prepare → execute → finish (``nbjob.finish``), driven by a stop token.

``Job.run`` never raises: every ending becomes a run.json status, a one-line reason and one of
the documented exit codes, and the results already produced are stored before it returns. The
kernel starts first and boots while ``prepare`` fetches and unpacks. The run publishes events
(``nbjob.events``: RunStarted, the cells', RunEnded) to a bus; the record, the log and the
checkpointer listen inline, external listeners (plug-ins, ``run(listeners=...)``) isolated. A stop
signal sets the ``StopToken`` (``nbjob.stop``); every step checks it, and the results are stored
within ``stop_grace`` seconds of the signal. This module orchestrates; the end of the run, its
steps and their time budget, is ``nbjob.finish``'s; where things go, ``nbjob.layout``'s.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbjob import (
    attempts,
    events,
    layout,
    logs,
    mask,
    prepare,
    ranks,
    reaper,
    renderer,
    report,
    report_thread,
    resources,
    results,
    start,
    stop,
)
from nbjob import kernel as kernels
from nbjob.config import Settings
from nbjob.errors import (
    ConcurrentAttemptError,
    EnvironmentUnfitError,
    InternalError,
    NbjobError,
    RunTimeoutError,
    StorageError,
)
from nbjob.finish import Finish
from nbjob.record import RunRecord
from nbjob.storage import Storage, local_path

if TYPE_CHECKING:
    from nbjob.environment import Overlay, Report


class Job:
    def __init__(
        self,
        settings: Settings,
        token: stop.StopToken,
        listeners: Sequence[events.Listener | events.Subscription] = (),
        configure_logging: bool = False,
        started: start.Start | None = None,
    ) -> None:
        self.s = settings
        self.token = token
        self.listeners = list(listeners)  # external consumers of events (plug-ins, embedders)
        self.configure_logging = configure_logging  # structlog's global configuration too
        self.t0 = time.monotonic()
        self.deadline = self.t0 + settings.timeout if settings.timeout else None
        self.storage = Storage(settings.storage_options)
        # The kernel first (nbjob.start): it boots on another core while nbjob fetches and
        # unpacks; the notebook may still ask for another kernel or folder (_kernel_at).
        started = started or start.launch(settings)
        self.workdir, self.artifacts = started.workdir, started.artifacts
        self.kernel = started.kernel
        self.overlay: Overlay | None = None  # --install-requirements
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
        self.nb: Any = None
        self.nb_folder: Path | None = None  # the notebook's folder in the bundle (its images)
        self.attempt: attempts.Attempt | None = None
        self.watch: ranks.PeerWatch | None = None  # the peers' records, while cells run
        self.orphans: reaper.Orphans | None = None  # what was below nbjob when it began
        self.log: Any = None  # the run's logger, once its log is open (``_open_results``)
        # A remote destination's read, kept: a stop may abandon it, the end waits on it again.
        self.reading: stop.Worker[attempts.Attempt | NbjobError] | None = None
        # The report's page: rendered in this process at the end, unless pages are refreshed
        # during the run (--report-interval): then by the renderer child the first refresh starts.
        self.renderer = renderer.Renderer(self.workdir / "report")
        self.local_report = report_thread.InProcess(self.workdir / "report")
        self.refresher: Any = None  # nbjob.listeners.refresh.ReportRefresher, when refreshing

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
        return Finish(self, error).run()

    def _open_results(self) -> NbjobError | None:
        """The log, the results writer and the event bus; the error if the output is unusable."""
        error: NbjobError | None = None
        try:
            log_files = [self._log_path()]
        except StorageError as exc:  # the results folder cannot be made: still log, exit 6
            log_files, error = [self.workdir / layout.LOG], exc
        if error is None and self.s.places.own.is_local:  # before the log file is truncated
            error = self._begin_attempt()
        if isinstance(error, ConcurrentAttemptError):  # never the log another attempt holds
            log_files = [self.workdir / layout.LOG]
        if self.s.log_dir:
            log_files.append(Path(self.s.log_dir) / layout.LOG)
        logs.configure(
            self.s.log_format, log_files, truncate=True, global_structlog=self.configure_logging
        )
        self.log = logs.get_logger(run_id=self.s.run_id)
        self.results = results.Results(
            self.storage,
            self.s.places.own,
            None,
            log_files[0],
            self.workdir / "results",
            self.artifacts,
            self.s.checkpoint_interval,
            masker=mask.for_run(self.s),
        )
        from nbjob.listeners import Checkpointer, LogListener  # nbformat: after the kernel launch

        checkpointer = Checkpointer(self.results, lambda: self.nb, self.record)
        self.resources = resources.Resources(
            self.s.resource_interval, self.record, self.results.hurry, self.log
        )
        if self.resources.on:
            self.results.extras[layout.RESOURCES] = self.resources.timeline
        own: list[events.Listener] = [
            self.record, LogListener(self.log), self.resources, checkpointer
        ]  # fmt: skip
        if self.s.report_interval and not self.s.no_report:  # a report that stays fresh
            from nbjob.listeners.refresh import ReportRefresher

            # its renderer child, once a refresh started it, renders the cells ahead
            self.results.on_notebook = self._prepare_report

            self.refresher = ReportRefresher(
                self.results,
                lambda: self.nb,
                lambda: self.nb_folder,
                self.renderer,
                self.s.report_interval,
            )
            own.append(self.refresher)
        self.bus = events.Bus(own, log=self.log)
        for listener in self.listeners:  # isolated: their errors never reach the run
            self.bus.subscribe(listener)
        return error

    def _begin_attempt(self) -> NbjobError | None:
        """Take the destination's lease, keep an earlier attempt's results under attempts/<n>/
        and learn this one's number."""
        found = self.read_attempt()
        if isinstance(found, NbjobError):
            return found
        self.take_attempt(found)
        return None

    def take_attempt(self, a: attempts.Attempt) -> None:
        """This attempt's facts, once the destination was read. A rerun by hand (no run id
        given) continues the destination's run: its run id from now on, in the record and
        the log."""
        self.attempt = a
        if a.run_id and a.run_id != self.s.run_id:
            self.s = dataclasses.replace(self.s, run_id=a.run_id)
            self.record.run_id = a.run_id
            if self.log is not None:
                logs.rebind(self.log, run_id=a.run_id)

    def read_attempt(self) -> attempts.Attempt | NbjobError:
        """The lease and the destination's earlier attempts (``nbjob.attempts``); here and at
        the end."""
        r = self.record
        return attempts.read(self.storage, self.s, self.artifacts, r.started_at, self.token)

    def _resume(self) -> list[str]:
        """Attempt n > 1: the earlier attempt's artifacts, restored before the first cell."""
        a = self.attempt or attempts.Attempt()
        self.record.attempt_began(a.number, a.earlier, a.resume_from)
        restored: list[str] = []
        if a.resume_from is not None:
            restored = attempts.restore(self.storage, self.s.places.own, self.artifacts)
        return restored

    def _log_path(self) -> Path:
        """This process's log file: in a local destination, else beside the bundle (stored
        with the results)."""
        own = self.s.places.own
        if own.is_local:
            self.storage.check_writable(own.url)
            return local_path(own.log)
        return self.workdir / layout.LOG

    def _new_kernel(self, name: str, cwd: Path) -> kernels.KernelSession:
        return start.session(self.s, name, cwd, self.workdir, self.artifacts, self.overlay)

    def _prepare(self) -> None:
        from nbjob.execute import code_cells

        s = self.s
        if self.attempt is None:  # a remote destination: read while a stop may come
            self.token.check("before reading earlier attempts")
            self.reading = stop.Worker(self.read_attempt, "reading earlier attempts")
            found = self.reading.wait(self.token, "reading earlier attempts")
            if isinstance(found, NbjobError):
                raise found
            self.take_attempt(found)
        assert self.attempt is not None
        restored = stop.wait_for(self.token, self._resume, "restoring artifacts")
        self.results.stream_artifacts(restored)
        self.log.info(
            "attempt",
            attempt=self.attempt.number,
            earlier=len(self.attempt.earlier),
            resumed_from=self.attempt.resume_from,
            restored=len(restored),
            resume=self.attempt.why,
        )
        attempts.announce(self.attempt, self.record, self.log)
        bundle = prepare.open_source(s, self.storage, self.workdir, self.token, self.log)
        self.results.notebook_name = bundle.notebook.name
        self.nb_folder = bundle.notebook.parent
        self.record.bundle_opened(bundle.relative_notebook)
        self.nb = prepare.read_notebook(bundle.notebook, self.log)
        if not s.no_report:  # the report warmed beside the kernel's start, on a thread
            self.local_report.warm(dict(self.nb.metadata))
        installed = stop.wait_for(self.token, self.kernel.kernelspecs, "the kernel list")
        name = kernels.choose(self.nb.metadata, s.kernel or bundle.kernel, installed)
        language = prepare.use_kernel(self.nb, name, installed)  # the kernel that runs
        if s.install_requirements:
            self._install_requirements(bundle.root, name, installed[name], bundle.notebook)
        merged = prepare.inject_parameters(self.nb, bundle, s, self.log, language)
        self.record.parameters_merged(merged)
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
        self.resources.start(kernel)  # the sampler, from now to the end (nbjob.resources)
        attempt = str(self.record.attempt)  # may be known only now (the destination's)
        stop.wait_for(
            self.token, lambda: kernel.set_env("NBJOB_ATTEMPT", attempt), "the attempt number"
        )
        self._listeners_env(kernel)
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

    def _install_requirements(
        self, root: Path, name: str, spec: dict[str, Any], notebook: Path
    ) -> None:
        """The overlay environment with the bundle's requirements (``nbjob.environment``),
        recorded; the kernel then starts from it."""
        if kernels.session_kind(self.s) != "local":
            raise EnvironmentUnfitError("--install-requirements needs a local kernel")

        from nbjob import environment  # only when asked for

        def make() -> tuple[Overlay | None, Report]:
            argv = list(spec.get("argv") or [])
            return environment.prepare(root, argv, self.s.env_cache, self.storage, self.log)

        self.overlay, report = stop.wait_for(self.token, make, "the requirements install")
        self.record.environment_prepared(report.to_json())
        self.log.info("environment", **report.to_json())
        self.kernel = self._new_kernel(name, notebook.parent.resolve())
        self.kernel.start_in_background()

    def _listeners_env(self, kernel: kernels.KernelSession) -> None:
        """The variables external listeners ask for in the kernel (an MLflow run's id)."""
        from nbjob.listeners import plugins

        if not self.listeners:
            return
        wanted = stop.wait_for(
            self.token,
            lambda: plugins.kernel_env(self.listeners, self.log),
            "the listeners' variables",
        )
        for name, value in wanted.items():
            stop.wait_for(
                self.token, partial(kernel.set_env, name, value), "the listeners' variables"
            )

    def _replace_kernel(self, name: str, cwd: Path) -> kernels.KernelSession:
        """Another kernel (not started yet), the job's from now on: a stop shuts it down."""
        self.kernel = self._new_kernel(name, cwd)
        return self.kernel

    def _prepare_report(self, notebook: bytes) -> None:
        report.prepare(self.renderer, notebook, self.results, self.nb_folder)

    def _execute(self) -> None:
        from nbjob.execute import Executor

        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise RunTimeoutError("the run took longer than its time limit before cells ran")
        own = self.record.to_json(cells=())  # its id and start: not a list of pending cells
        self.watch = ranks.PeerWatch(self.storage, self.s, self.token, own, self.kernel)
        executor = Executor(
            self.kernel,
            self.bus,
            cell_timeout=self.s.cell_timeout,
            run_deadline=self.deadline,
            max_output_bytes=self.s.max_output_bytes,
            stop=self.watch.token,
            stop_wait=min(5.0, self.s.stop_grace / 3),
            allow_errors=self.s.allow_errors,
            on_reply=self.resources.cell_replied if self.resources.on else None,
        )
        self.log.info("execute_start", cells=len(executor.code_cells(self.nb)))
        self.bus.publish(self.record.run_started())
        with self.watch:
            if executor.run(self.nb):
                self.log.info("run_exited_early", reason="a cell called sys.exit(0)")
