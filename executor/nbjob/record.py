"""The run record: what becomes run.json, as typed data changed only through named steps.

``RunRecord.start`` opens it when the run starts; the run calls ``bundle_opened``,
``parameters_merged``, ``kernel_ready``, ``requirements_checked``, ``gpus_probed`` as
preparation goes; the cells follow the executor's events (``on_event``: CellsListed,
CellStarted, CellEnded, CellSkipped), and ``finished`` closes it. ``to_json`` gives run.json's
mapping (keys as users and tests read them).
"""

from __future__ import annotations

import os
import platform
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from typing import Any, overload

from nbjob import __version__, events, logs
from nbjob.errors import NbjobError, StoppedError
from nbjob.events import CellState, CellStatus, RunStatus

_NOT_FOR_THE_RECORD = (events.CellOutput, events.Tick)


@dataclass(frozen=True)
class KernelInfo:
    name: str
    language: str
    implementation: str | None = None
    implementation_version: str | None = None
    # The session's own facts (kind; a gateway's URL without credentials, kernel id, ...).
    session: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        session = data.pop("session")
        return {**data, **session}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    return {
        "nbjob": __version__,
        "python": platform.python_version(),
        **{d: _version(d) for d in ("jupyter_client", "ipykernel", "nbformat")},
    }


def host() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": system(),
        "cpus": os.cpu_count(),
    }


def system() -> str:
    """``platform.platform()``'s words (``Linux-6.1.0-x86_64-with-glibc2.36``) without the
    ``uname -p`` process it starts, a fork of nbjob before the kernel's launch."""
    u = platform.uname()  # its processor, the one ``uname -p`` gives, is read lazily: never here
    words = [u.system, u.release, u.machine]
    libc = os.confstr("CS_GNU_LIBC_VERSION") if "CS_GNU_LIBC_VERSION" in os.confstr_names else None
    if libc:
        words += ["with", libc.replace(" ", "")]
    return "-".join(w for w in words if w)


@dataclass
class RunRecord:
    run_id: str
    source: str
    output: str
    platform: dict[str, str]
    started_at: str = field(default_factory=logs.now_iso)
    status: RunStatus = RunStatus.RUNNING
    exit_code: int | None = None
    reason: str | None = None
    notebook: str | None = None
    failed_cell: dict[str, Any] | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    kernel: KernelInfo | None = None
    gpus: list[Any] = field(default_factory=list)
    gpu_probe: dict[str, Any] | None = None
    unmet_requirements: list[str] = field(default_factory=list)
    environment: dict[str, Any] | None = None  # --install-requirements (nbjob.environment)
    cells: dict[int, CellState] = field(default_factory=dict)  # by notebook index, in order
    artifacts: list[str] = field(default_factory=list)
    versions: dict[str, str | None] = field(default_factory=versions)
    host: dict[str, Any] = field(default_factory=host)
    attempt: int | None = 1  # None: an attempt that stopped before it had a number
    earlier_attempts: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    lease: dict[str, Any] | None = None  # this attempt's hold on its destination (nbjob.lease)
    traceback: str | None = None  # an internal error's (never in the notebook)
    log_dropped: dict[str, int] = field(default_factory=dict)  # log events lost, by place
    identity: dict[str, Any] = field(default_factory=dict)  # rank, world size, source
    shard: int | None = None
    ranks: list[dict[str, Any]] | None = None  # rank 0 of a multi-rank run: every rank's end
    first_failed_rank: int | None = None
    ranks_waited_s: float | None = None
    t0: float = field(default_factory=time.monotonic, repr=False)
    metrics: dict[str, Any] = field(default_factory=dict)  # scrapbook glue, by name
    running_since: float | None = field(default=None, repr=False)  # monotonic, running cell
    report: dict[str, Any] = field(
        default_factory=lambda: {"name": None, "reason": "written at the end of the run"}
    )  # the HTML report (nbjob.report): its name, or why there is none
    resources: dict[str, Any] | None = None  # nbjob.resources: limits, peaks, newest sample
    cell_resources: dict[int, dict[str, Any]] = field(default_factory=dict)  # by cell index

    @classmethod
    def start(
        cls, run_id: str, source: str, output: str, platform_name: str, info: dict[str, str]
    ) -> RunRecord:
        return cls(
            run_id=run_id,
            source=logs.redact(source),
            output=logs.redact(output),
            platform={"name": platform_name, **info},
        )

    # -- preparation ---------------------------------------------------------------------------

    def bundle_opened(self, notebook: str) -> None:
        self.notebook = notebook

    def requirements_checked(self, unmet: list[str]) -> None:
        self.unmet_requirements = list(unmet)

    def environment_prepared(self, environment: dict[str, Any]) -> None:
        self.environment = dict(environment)

    def parameters_merged(self, parameters: dict[str, Any]) -> None:
        self.parameters = dict(parameters)

    def kernel_ready(
        self, name: str, language: str, info: dict[str, Any], session: dict[str, Any]
    ) -> None:
        self.kernel = KernelInfo(
            name,
            language,
            info.get("implementation"),
            info.get("implementation_version"),
            dict(session),
        )

    def gpus_probed(self, probe: dict[str, Any]) -> None:
        self.gpus, self.gpu_probe = list(probe.get("gpus", [])), probe

    def placed(self, identity: dict[str, Any], shard: int | None, source: str | None) -> None:
        """Which rank of which shard this run is (the shard's source goes with the identity)."""
        self.identity, self.shard = dict(identity), shard
        if source is not None:
            self.identity["shard_source"] = source

    def ranks_gathered(
        self, entries: list[dict[str, Any]], first: int | None, waited: float
    ) -> None:
        self.ranks, self.first_failed_rank, self.ranks_waited_s = list(entries), first, waited

    def attempt_began(
        self, number: int, earlier: list[dict[str, Any]], resumed_from: int | None
    ) -> None:
        """This attempt's number, earlier attempts' summaries, the attempt it resumes."""
        self.attempt, self.earlier_attempts = number, list(earlier)
        self.resumed_from = resumed_from

    def lease_taken(self, facts: dict[str, Any]) -> None:
        """This attempt's lease on its destination: held (its generation), or why not."""
        self.lease = dict(facts)

    def stepped_aside(self) -> None:
        """Another attempt holds the destination: this one has no number (it never read it)."""
        self.attempt = None

    # -- cells (from the executor's events) ----------------------------------------------------

    def on_event(self, event: events.Event) -> None:
        if isinstance(event, _NOT_FOR_THE_RECORD):
            return  # the most frequent events, first
        if isinstance(event, events.CellStarted):
            cell = self._cell(event.index)
            self.cells[event.index] = replace(
                cell, status=CellStatus.RUNNING, started_at=event.started_at
            )
            self.running_since = time.monotonic()
        elif isinstance(event, events.CellEnded):
            self.cells[event.state.index] = event.state  # the executor's state, as it is
        elif isinstance(event, events.CellMetric):
            self.metrics[event.name] = event.value
        elif isinstance(event, events.CellSkipped):
            self.cells[event.index] = replace(self._cell(event.index), status=CellStatus.SKIPPED)
        elif isinstance(event, events.CellsListed):
            self.cells = {i: CellState(i) for i in event.indexes}

    def progress(self, counted: tuple[int, int | None] | None = None) -> dict[str, Any]:
        """For dashboards: cells done / total, the running cell and how long it has run
        (``counted``: cells done and the running cell, when the caller knows them)."""
        waiting = (CellStatus.PENDING, CellStatus.RUNNING)
        if counted is not None:
            done, running = counted
        else:
            done = sum(c.status not in waiting for c in self.cells.values())
            running = next(
                (c.index for c in self.cells.values() if c.status == CellStatus.RUNNING), None
            )
        seconds = None
        if running is not None and self.running_since is not None:
            seconds = round(time.monotonic() - self.running_since, 1)
        return {
            "cells_done": done,
            "cells_total": len(self.cells),
            "running_cell": running,
            "running_s": seconds,
            "updated_at": logs.now_iso(),
        }

    def _cell(self, index: int) -> CellState:
        """The cell's state so far (a pending one for a cell not listed)."""
        return self.cells.get(index) or CellState(index)

    # -- the end -------------------------------------------------------------------------------

    def finished(self, error: NbjobError | None, artifacts: list[str]) -> None:
        """Close the record: status, exit code, reason, failed cell, duration, artifacts."""
        self.artifacts = list(artifacts)
        self.ended_at = logs.now_iso()
        self.duration_s = round(time.monotonic() - self.t0, 3)
        self.failed_cell = None
        if error is None:
            self.status, self.exit_code, self.reason = RunStatus.SUCCEEDED, 0, "succeeded"
            return
        self.status, self.exit_code = RunStatus(error.status), error.exit_code
        self.reason = error.reason
        index = error.details.get("cell_index")
        if index is not None:
            cell = self.cells.get(index)
            self.failed_cell = {"index": index, **((cell.error if cell else None) or {})}
            if error.details.get("cause"):  # from evidence (nbjob.resources.death)
                self.failed_cell["cause"] = error.details["cause"]

    def run_started(self) -> events.RunStarted:
        """The event for the run's start: the facts gathered so far."""
        return events.RunStarted(
            self.run_id,
            self.attempt or 1,
            dict(self.identity),
            dict(self.parameters),
            self.notebook,
            self.kernel.to_json() if self.kernel else {},
        )

    def run_ended(self, output: str, stored: bool, notebook: str | None) -> events.RunEnded:
        """The event for the run's end: its outcome, and where its results are (``output``,
        redacted here; ``stored``: False when they could not be stored there)."""
        return events.RunEnded(
            self.status,
            self.exit_code if self.exit_code is not None else 1,
            self.reason,
            self.duration_s,
            logs.redact(output),
            stored,
            notebook,
            self.report.get("name"),
        )

    def report_written(self, name: str) -> None:
        self.report = {"name": name, "reason": None}

    def report_missing(self, reason: str) -> None:
        self.report = {"name": None, "reason": reason}

    def internal_error(self, trace: str) -> None:
        self.traceback = trace

    def not_stored(self, error: NbjobError) -> None:
        """The results could not be stored: a success must not be reported, nor a stop hidden."""
        if self.exit_code == 0 or isinstance(error, StoppedError):
            self.status, self.exit_code = RunStatus(error.status), error.exit_code
            self.reason = error.reason

    def errors(self) -> list[dict[str, Any]]:
        """Every cell that raised and was not expected to (``--allow-errors`` runs them all):
        its index, execution count (``In [n]``), ename and evalue."""
        return [
            {"index": c.index, "execution_count": c.execution_count, **c.error}
            for c in self.cells.values()
            if c.status == CellStatus.FAILED and c.error
        ]

    @property
    def failed_index(self) -> int | None:
        return None if self.failed_cell is None else int(self.failed_cell["index"])

    def _ranks_json(self) -> dict[str, Any]:
        if self.ranks is None:
            return {}
        return {
            "ranks": self.ranks,
            "first_failed_rank": self.first_failed_rank,
            "ranks_waited_s": self.ranks_waited_s,
        }

    def cell_json(self, cell: CellState) -> dict[str, Any]:
        """A cell's entry, with its resources when they were measured."""
        figures = self.cell_resources.get(cell.index)
        return cell.to_json() if figures is None else {**cell.to_json(), "resources": figures}

    def to_json(
        self,
        cells: Iterable[CellState] | None = None,
        counted: tuple[int, int | None] | None = None,
        errors: list[dict[str, Any]] | None = None,
        *,
        to_store: bool = False,
    ) -> dict[str, Any]:
        """run.json's mapping; key order as before the record was typed. ``cells``: those
        listed (every cell when None); mid-run, ``nbjob.cellsegments`` lists fewer, and gives
        ``progress``'s ``counted`` and ``errors`` as it counted them (not from every cell).
        ``to_store``: only to be stored (``stored.record_bytes``): its cells' entries are made
        as they are written, not all at once (~13 MiB for 20,000 cells)."""
        listed = self.cells.values() if cells is None else cells
        return {
            "run_id": self.run_id,
            "status": str(self.status),
            "exit_code": self.exit_code,
            "reason": self.reason,
            "source": self.source,
            "output": self.output,
            "notebook": self.notebook,
            "failed_cell": self.failed_cell,
            "errors": self.errors() if errors is None else errors,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": self.duration_s,
            "parameters": self.parameters,
            "kernel": self.kernel.to_json() if self.kernel else None,
            "gpus": self.gpus,
            "gpu_probe": self.gpu_probe,
            "unmet_requirements": self.unmet_requirements,
            "cells": CellEntries(self, listed) if to_store else [self.cell_json(c) for c in listed],
            "artifacts": self.artifacts,
            "report": self.report,
            "platform": self.platform,
            "versions": self.versions,
            "host": self.host,
            "progress": self.progress(counted),
            "heartbeat_at": logs.now_iso(),  # when this was written: a later attempt's clue
            "metrics": self.metrics,
            "attempt": self.attempt,
            "earlier_attempts": self.earlier_attempts,
            "resumed_from": self.resumed_from,
            "lease": self.lease,
            "identity": self.identity,
            "shard": self.shard,
            **self._ranks_json(),
            **({"resources": self.resources} if self.resources is not None else {}),
            **({"traceback": self.traceback} if self.traceback else {}),
            **({"log_dropped": self.log_dropped} if self.log_dropped else {}),
            **({"environment": self.environment} if self.environment else {}),
        }


class CellEntries(Sequence[dict[str, Any]]):
    """run.json's list of cells, each entry made when it is read (``RunRecord.to_json``)."""

    def __init__(self, record: RunRecord, cells: Iterable[CellState]) -> None:
        self._record, self._cells = record, list(cells)

    def __len__(self) -> int:
        return len(self._cells)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self._record.cell_json(c) for c in self._cells[index]]
        return self._record.cell_json(self._cells[index])
