"""The end of a run: ordered steps that share one time budget.

Whatever happened before (success, a failed cell, a stop, a bug in nbjob), ``Finish.run``
takes the same steps, in this order (``Finish.steps``): bring a remote kernel's artifacts
back, read a remote destination that was not read yet, close the record (the notebook's
banners), checkpoint for the peer ranks, wait for them (rank 0), start the kernel's shutdown,
hand the notebook to the report's renderer, store the results, write the report, log
``run_end`` and store the log once more with the termination message, stop the kernel, end
the processes the run left behind (``nbjob.reaper``), tell the listeners (``RunEnded``), close
the log, clean up.

They share one ``stop.Budget``: nothing pressing, each step may take its calm limit (the final
write ``FINAL_WRITE_S``); after a stop, what is left of the stop's grace. A step declares its
share of what is left when it starts and the reserve it leaves to the steps after it, so the
results are stored first, the report only with time left, and the run ends within the grace.
A new step (a tracker upload, a resource flush) is one more line in ``steps``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nbjob import attempts, banners, events, logs, platforms, ranks, reaper, report, stop
from nbjob.errors import ConcurrentAttemptError, NbjobError, StoppedError, StorageError
from nbjob.events import RunStatus
from nbjob.stop import Budget

if TYPE_CHECKING:
    from nbjob.job import Job

FINAL_WRITE_S = 300.0  # how long the final write may take when nothing else is pressing
FETCH_S = FINAL_WRITE_S / 5  # how long a remote kernel's artifacts may take to come back
KEEP_S = 0.5  # of a stop's grace: kept after the writes for the kernel's kill and the exit
REPORT_KEEP_S = 1.5  # of a stop's grace: kept after the report for run.json, the log, the kill
ORPHANS_S = 5.0  # how long ending what the run left behind may take when nothing is pressing


def run_level(status: RunStatus) -> str:
    """The log level of ``run_end``: a success at ``info``, a stop (the platform's wish) at
    ``warning``, every other ending at ``error`` (log collectors alert on it)."""
    if status == RunStatus.SUCCEEDED:
        return "info"
    return "warning" if status == RunStatus.STOPPED else "error"


@dataclass(frozen=True)
class Step:
    """One step of the end: ``run(budget)``, its budget ``share`` of what is left of the
    end's when it starts (``at_least`` seconds; ``calm`` at most when no stop came), less
    ``reserve`` seconds kept for the steps after it."""

    name: str
    run: Callable[[Budget], None]
    share: float = 1.0
    reserve: float = 0.0
    at_least: float = 0.0
    calm: float = math.inf

    def budget(self, end: Budget) -> Budget:
        return end.less(self.reserve).share(self.share, self.at_least, self.calm)


class Finish:
    """The end of one job (``job``): its outcome recorded, its results stored."""

    def __init__(self, job: Job, error: NbjobError | None) -> None:
        self.job, self.error = job, error
        self.end = Budget(token=job.token, grace=job.s.stop_grace)
        self.stopping = job.token.requested  # a stop came before the end began
        self.stored = False
        self.keep_workdir = False
        self.ending: stop.Worker[None] | None = None  # the kernel's graceful shutdown
        self.report_asked = False  # the final notebook is with the report's renderer
        self.notebook: bytes | None = None  # the final notebook as stored, once serialized

    def steps(self) -> list[Step]:
        return [
            Step("fetch remote artifacts", self.fetch_artifacts, 1 / 3, at_least=1, calm=FETCH_S),
            Step("read a late attempt", self.late_attempt, 1 / 3),
            Step("stop the sampler", self.stop_sampler),
            Step("close the record", self.close_record),
            Step("checkpoint for peers", self.checkpoint_for_peers),
            Step("wait for ranks", self.wait_for_ranks, calm=self.job.s.ranks_wait),
            Step("start the kernel's shutdown", self.start_kernel_shutdown),
            Step("start the report", self.start_report),
            Step("final store", self.store, reserve=KEEP_S),
            Step("report", self.report, reserve=REPORT_KEEP_S, calm=FINAL_WRITE_S),
            Step("run end", self.run_end, reserve=KEEP_S, calm=FINAL_WRITE_S),
            Step("release the lease", self.release_lease, 1 / 2, KEEP_S, 0.5, calm=30),
            Step("stop the kernel", self.stop_kernel, reserve=KEEP_S),
            Step("end orphans", self.end_orphans, reserve=REPORT_KEEP_S, calm=ORPHANS_S),
            Step("tell the listeners", self.tell_listeners, reserve=1.0, calm=events.DRAIN_S),
            Step("close the log", self.close_log),
            Step("clean up", self.cleanup),
        ]

    def run(self) -> int:
        """Every step in order; the process's exit code."""
        for step in self.steps():
            step.run(step.budget(self.end))
        code = self.job.record.exit_code
        return code if code is not None else 1

    # -- before the results are stored ---------------------------------------------------------

    def fetch_artifacts(self, budget: Budget) -> None:
        """A remote kernel's artifacts come back into the local artifacts folder."""
        job = self.job
        try:
            if names := job.kernel.fetch_artifacts(job.artifacts, timeout=budget.left()):
                job.log.info("artifacts_fetched", files=len(names))
        except (NbjobError, OSError, ValueError, TimeoutError) as exc:
            job.log.warning("artifacts_not_fetched", reason=str(exc)[:300])

    def late_attempt(self, budget: Budget) -> None:
        """The run ended (a stop, say) before a remote destination was read: read it now,
        within ``budget``, so the results go on top as usual; if it cannot be read in time
        (or was unreadable), they go beside whatever it holds, never over it."""
        job = self.job
        if isinstance(self.error, ConcurrentAttemptError) or (job.attempt and job.attempt.lost):
            self.step_aside()
            return
        if job.attempt is not None or job.s.places.own.is_local:
            return
        if self.stopping:  # the read a stop interrupted goes on (never a second lease)
            reading = job.reading or stop.Worker(job.read_attempt, "reading earlier attempts")
            found = reading.within(budget, at_least=0.5)
            if isinstance(found.value, attempts.Attempt):
                job.take_attempt(found.value)
                job.record.attempt_began(found.value.number, found.value.earlier, None)
                attempts.announce(found.value, job.record, job.log)
                return
            if isinstance(found.value, ConcurrentAttemptError):
                self.step_aside()
                return
        self.beside_earlier_attempts()

    def beside_earlier_attempts(self) -> None:
        """The destination was never read: results go beside what it holds, never over it."""
        job = self.job
        stamp = job.record.started_at.replace(":", "").replace("-", "")[:15]
        job.results.move_to(job.s.places.own.unread(stamp))
        job.log.warning("results_beside_earlier_attempts", output=job.results.folder.url)

    def step_aside(self) -> None:
        """Another attempt holds the destination (or took it over): this one's results go
        beside it, never over it, and never among its artifacts."""
        job = self.job
        stamp = job.record.started_at.replace(":", "").replace("-", "")[:15]
        job.results.move_to(job.s.places.own.concurrent(stamp))
        job.results.artifacts = job.workdir / "own-artifacts"
        job.results.artifacts.mkdir(exist_ok=True)
        if job.attempt is None:
            job.record.stepped_aside()
        where = logs.redact(job.results.folder.url)
        if isinstance(self.error, ConcurrentAttemptError):  # the one line says where it is
            self.error = ConcurrentAttemptError(f"{self.error.reason}; its record: {where}")
        job.log.warning("results_beside_another_attempt", output=where)

    def stop_sampler(self, _: Budget) -> None:
        """The resource sampler stops; a dead kernel's cause (or a GPU's out-of-memory) from
        evidence, in the reason (``nbjob.resources``)."""
        job = self.job
        self.error = job.resources.end(self.error, job.record.cells)

    def close_record(self, _: Budget) -> None:
        """The run's ending in the record (a stop wins) and the notebook's banners; a failed
        run's kernel is not needed any more."""
        job, error = self.job, self.error
        if job.token.requested:
            job.log.warning("stop_requested", signal=job.token.signal, grace_s=job.s.stop_grace)
            if not isinstance(error, StoppedError):
                reason = job.token.reason or "stopped"
                error = StoppedError(f"{reason} ({error.reason})" if error else reason)
        job.record.finished(error, job.results.artifact_names())
        job.record.log_dropped = logs.dropped()  # again at run_end: the final write may add some
        if job.record.failed_index is not None and job.nb is not None:
            banners.add(job.nb, job.record.failed_index, job.record.reason or "")
        self.error = error
        if error is not None and not self.stopping:
            job.kernel.shutdown(grace=0)

    def checkpoint_for_peers(self, _: Budget) -> None:
        """Rank 0 of several: the peers see this rank's end while it waits for theirs."""
        job = self.job
        if job.s.identity.canonical and job.s.identity.multi:
            job.results.checkpoint(job.nb, job.record.to_json())

    def wait_for_ranks(self, budget: Budget) -> None:
        """Rank 0 of several: the other ranks' ends, waited for at most ``--ranks-wait``."""
        job = self.job
        gone = job.watch.stale if job.watch is not None else None  # frozen: not waited for
        ranks.record_ranks(job.record, job.storage, job.s, budget, gone)

    def start_kernel_shutdown(self, _: Budget) -> None:
        """A finished run's kernel shuts down (its exit handlers run) while the results are
        written; after the peers, as this kernel may hold their store. After a stop the
        results come first (``stop_kernel``); a failed run's kernel is killed already."""
        if self.job.token.requested or self.error is not None:
            return
        self.ending = stop.Worker(lambda: self.job.kernel.shutdown(3.0), "the kernel's shutdown")

    # -- the results -----------------------------------------------------------------------------

    def store(self, budget: Budget) -> None:
        """The final write, bounded by its own timeout (``FINAL_WRITE_S`` when calm, else
        just short of the budget) and by the budget: it goes on after a stop while the grace
        allows, then the results stay in the local copy."""
        job = self.job
        nb, data = job.nb, job.record.to_json(to_store=True)
        timeout = min(FINAL_WRITE_S, max(1.0, budget.left() - KEEP_S))
        stored = self.notebook
        done = stop.timebox(
            lambda: job.results.final(nb, data, timeout, stored), budget, "the final write"
        )
        self.notebook = None  # stored: its bytes not held while the report is stored
        if done.late:  # the grace ran out first
            reason = f"{job.token.reason or 'stopped'} during the final write"
            self._not_stored(StoppedError(f"{reason}; a local copy is in {job.results.spool}"))
        elif isinstance(done.error, StorageError):
            self._not_stored(done.error, budget)
        elif isinstance(done.error, OSError):  # any OSError there is a storage error too
            why = done.error.strerror or str(done.error)
            self._not_stored(StorageError(f"results not stored: {why}"), budget)
        elif done.error is not None:
            raise done.error
        else:
            self.stored = True

    def _not_stored(self, exc: StorageError | StoppedError, budget: Budget | None = None) -> None:
        """The results are in the local copy; the destination's run.json, written first, is
        told the final outcome once more (``budget`` allowing), so it never says less."""
        job = self.job
        self.keep_workdir = True
        job.log.error("results_not_stored", reason=exc.reason)
        job.record.not_stored(exc)
        reason = str(job.record.reason)
        if job.record.status == RunStatus.STORAGE_ERROR and "local copy" not in reason:
            job.record.reason = f"{reason}; a local copy is in {job.results.spool}"
        if budget is not None:
            data = job.record.to_json(to_store=True)
            stop.timebox(lambda: job.results.store_record(data), budget, "run.json", at_least=0.5)

    def start_report(self, _: Budget) -> None:
        """The report's page is rendered by its child process while the results are stored."""
        job = self.job
        if job.refresher is not None:  # no refresh from now on
            job.refresher.close(0)
        if not job.s.no_report:
            asked = report.ask(job.renderer, job.results, self._stored, job.nb_folder, job.record)
            self.report_asked = asked
        here = not self.report_asked and not job.renderer.running and job.results.notebook_name
        if not job.s.no_report and here and job.nb is not None:  # rendered here, on a thread
            title = report.title_for(job.results)
            if report.by_chunks(job.nb):  # from the JSON stored, not a masked copy of the cells
                chart = report.chart(job.results, job.record)  # the sampler has stopped
                job.local_report.submit(None, job.nb_folder, title, self._stored(), chart)
            else:
                job.local_report.submit(job.results.masked(job.nb), job.nb_folder, title)

    def _stored(self) -> bytes | None:
        """The final notebook as stored (masked; its banners in), serialized once: for the
        report's renderer, then the final write (0.26 s a time at 20,000 cells)."""
        if self.notebook is None and self.job.nb is not None:
            self.notebook = self.job.results.stored_notebook(self.job.nb)
        return self.notebook

    def report(self, budget: Budget) -> None:
        job = self.job
        refreshed = 0
        if job.refresher is not None:  # a fresher page on its way lands before the final one
            job.refresher.close(budget.share(0.5).left())
            refreshed = job.refresher.stored
        try:
            report.write(
                job.results,
                job.nb,
                job.record,
                budget,
                folder=job.nb_folder,
                enabled=not job.s.no_report,
                stored=self.stored,
                renderer=job.renderer,
                asked=self.report_asked,
                refreshed=refreshed,
                local=job.local_report,
            )
        finally:
            job.renderer.close()

    def run_end(self, budget: Budget) -> None:
        """run_end in the log, the log stored once more, the termination message."""
        job, r = self.job, self.job.record
        r.log_dropped = logs.dropped()
        log = getattr(job.log, run_level(r.status))
        log(
            "run_end",
            status=r.status,
            exit_code=r.exit_code,
            reason=r.reason,
            cell=r.failed_index,
            duration_s=r.duration_s,
            **({"log_dropped": r.log_dropped} if r.log_dropped else {}),
        )
        if self.stored:
            job.results.store_log(budget)
        else:
            job.results.keep_local_copy(job.nb, r.to_json(to_store=True))
        message = r.reason if r.exit_code else f"succeeded: {r.notebook}"
        platforms.write_termination_message(job.s.termination_log, logs.redact(message or ""))

    def release_lease(self, budget: Budget) -> None:
        """The destination is free for the next attempt once the results are stored (after
        run_end, the log's last line: a lease that cannot be removed goes stale instead;
        when the store failed the final write, it is not tried again)."""
        job = self.job
        held = job.attempt.lease if job.attempt is not None else None
        if held is not None:
            left, stored = budget.left(), self.stored
            stop.timebox(lambda: held.release(left, remove=stored), budget, "the lease's release")

    # -- after ----------------------------------------------------------------------------------

    def stop_kernel(self, budget: Budget) -> None:
        """The kernel's end, once the results are written: the graceful shutdown under way is
        waited for (a stop cuts it short); after a stop the kernel, perhaps still starting, is
        killed within what is left of the grace."""
        job = self.job
        if self.ending is not None:
            try:
                self.ending.wait(job.token, "the kernel's shutdown")
                return
            except StoppedError:
                pass
            except Exception as exc:  # the results are stored: say so, and end as recorded
                job.log.warning("kernel_shutdown_failed", reason=str(exc)[:300])
        if job.token.requested:  # a starting kernel may need more than what is left
            stop.timebox(
                lambda: job.kernel.shutdown(0), budget, "the kernel's shutdown", at_least=0.5
            )

    def end_orphans(self, budget: Budget) -> None:
        """Once the kernel is gone, what the run left below nbjob (a cell's daemon, reparented
        to nbjob as the subreaper) is ended — TERM, a short wait, KILL — and named in the log,
        stored once more when something was ended (the kernel's group too, after a stop)."""
        job = self.job
        if job.orphans is None:
            return
        ended, killed = job.orphans.end(max(0.0, min(reaper.TERM_WAIT_S, budget.left() / 2)))
        if ended:
            job.log.warning("orphans_ended", where="below nbjob", **reaper.summary(ended, killed))
        if self.stored and (ended or job.token.requested):
            job.results.store_log(budget)

    def tell_listeners(self, budget: Budget) -> None:
        """RunEnded, the last event: external listeners get their share of the time left to
        take it (their queues drain, then are abandoned)."""
        job = self.job
        where = job.results.folder.url if self.stored else str(job.results.spool)
        ended = job.record.run_ended(where, self.stored, job.results.notebook_name)
        job.bus.close(ended, max(0.0, budget.left()))

    def close_log(self, _: Budget) -> None:
        """The results are stored and the log is about to close: the run's last words."""
        logs.close()

    def cleanup(self, _: Budget) -> None:
        job = self.job
        job.renderer.close()
        if job.s.workdir:
            return  # the user's folder: leave it
        if self.keep_workdir:
            shutil.rmtree(job.workdir / "bundle", ignore_errors=True)
            shutil.rmtree(job.workdir / "download", ignore_errors=True)
        else:
            shutil.rmtree(job.workdir, ignore_errors=True)
