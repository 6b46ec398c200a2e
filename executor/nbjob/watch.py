"""``nbjob watch DEST``: follow a run from outside, from what it writes at its destination.

The watcher waits for the run's ``run.json`` (``--wait-start``), then polls it every ``--poll``
seconds through the one typed reader (``runfile.RunView``) and turns what changed into
``Update``s — a cell started or ended, a metric, a rank's state — with the cells' new output
lines from the live log (``follow.LogFollower``: only the new bytes). A view
(``nbjob.watchview``) shows them: plain lines, a terminal with a progress footer, or JSON lines.

It ends with the run: a final ``run.json`` gives a summary and the run's own exit code (on a
run already over: the summary at once). A run still ``running`` whose heartbeat stopped is
**lost** (``RunLostError``, exit 9): its ``run.json`` was not rewritten for ``--lost-after``
seconds (by its ``heartbeat_at`` and by this watcher's own clock) and its lease shows no life
either (its holder's process is gone from this host, or it was not renewed for
``lease.STALE_MIN_S``). A run that does not appear within ``--wait-start`` is exit 9 too.

Cost of a poll: run.json once (a few kB; once per rank for a multi-rank run) and the log's
new bytes (a watcher that joins a run under way starts ``TAIL_BYTES`` before the log's end);
the checkpointed notebook is read only when a cell starts whose source is not known yet
(normally once).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from nbjob import lease, runfile
from nbjob.errors import RunLostError, StorageError
from nbjob.follow import LogFollower
from nbjob.layout import Destination
from nbjob.logs import age_s, parse_iso
from nbjob.resources.words import peaks_line, resources_line
from nbjob.runfile import RunView
from nbjob.storage import Options as StorageOptions
from nbjob.storage import Storage

POLL_S = 2.0  # as often as a run checkpoints by default
WAIT_START_S = 300.0
LOST_AFTER_S = lease.STALE_MIN_S
TAIL_BYTES = 64 * 1024  # joining a run under way: its output from the log's last 64 kB only
SOURCE_CHARS = 72  # a cell's first source line, shown at most this long


@dataclass(frozen=True)
class WatchSettings:
    """What ``nbjob watch`` was asked: where, how often, how long to wait, when a run is lost."""

    dest: str
    poll: float = POLL_S
    wait_start: float = WAIT_START_S
    lost_after: float = LOST_AFTER_S
    storage: StorageOptions = field(default_factory=StorageOptions)


@dataclass(frozen=True)
class Update:
    """One thing the watcher saw: ``kind`` and its facts (a JSON line in ``--json``)."""

    kind: str
    data: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps({"event": self.kind, **self.data}, default=str)


@dataclass
class Progress:
    """What a terminal's footer shows: where the run is now."""

    done: int = 0
    total: int = 0
    running: int | None = None  # the running cell's index
    since: dt.datetime | None = None  # when it started
    source: str = ""  # its first source line
    partial: str = ""  # its newest line still being rewritten (a progress bar)
    started: dt.datetime | None = None  # the run's start
    ranks: dict[int, str] = field(default_factory=dict)  # rank -> 'running 2/5', 'succeeded'
    resources: str = ""  # the newest sample in words (run.json's resources.last_sample)


class View(Protocol):
    def show(self, update: Update) -> None: ...
    def footer(self, progress: Progress) -> None: ...
    def close(self) -> None: ...


class Watcher:
    """Polls one run's destination and tells ``view`` what changed; ``run()`` -> exit code."""

    def __init__(
        self,
        settings: WatchSettings,
        view: View,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.s, self.view, self.sleep = settings, view, sleep
        self.dest = Destination(settings.dest.rstrip("/"))
        self.storage = Storage(settings.storage)
        self.log = LogFollower(self.storage, self.dest, tail=TAIL_BYTES)
        self.stored = runfile.CellFollower(self.storage, self.dest)  # finished cells, mid-run
        self.progress = Progress()
        self.cells: dict[int, dict[str, Any]] = {}  # index -> the cell as last seen
        self.metrics: dict[str, Any] = {}
        self.sources: dict[int, str] = {}  # index -> first source line
        self.held: dict[int, list[dict[str, Any]]] = {}  # output of cells not seen started
        self.ranks: dict[int, str] = {}
        self.attempt = 0
        self.notebook: str | None = None  # the executed notebook's name at the destination
        self.polls = 0
        self.bytes_read = 0
        self.changed_at = time.monotonic()  # when run.json last changed, by this clock
        self._last_raw = b""

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        view = self._wait_for_start()
        if _over(view):
            return self._end(view)
        self.view.show(Update("run", _run_facts(view, self.dest.url)))
        while True:
            self._observe(view)
            if _over(view):
                return self._end(view)
            if self._lost(view):
                return self._lose(view)
            self.sleep(self.s.poll)
            view = self._poll() or view

    def _wait_for_start(self) -> RunView:
        deadline = time.monotonic() + self.s.wait_start
        announced = False
        while True:
            view = self._poll()
            if view is not None:
                return view
            if time.monotonic() >= deadline:
                reason = f"no run appeared at {self.dest.url} within {self.s.wait_start:g} s"
                self.view.show(Update("lost", {"reason": reason, "exit_code": 9}))
                raise RunLostError(reason)
            if not announced:
                self.view.show(Update("waiting", {"dest": self.dest.url}))
                announced = True
            self.sleep(min(self.s.poll, max(0.05, deadline - time.monotonic())))

    def _poll(self) -> RunView | None:
        """run.json read once (None: none yet, or unreadable this time)."""
        self.polls += 1
        raw = self.storage.get_bytes(self.dest.run_json)
        if raw is None:
            return None
        self.bytes_read += len(raw)
        if raw != self._last_raw:
            self._last_raw, self.changed_at = raw, time.monotonic()
        view = runfile.parse(raw)
        if not view.readable:
            return None
        try:  # a long run's finished cells, from the segments new since the last poll
            return self.stored.whole(view)
        except (StorageError, OSError):
            return view if view.cells_stored is None else None

    # -- what changed --------------------------------------------------------------------------

    def _observe(self, view: RunView) -> None:
        if view.attempt != self.attempt:
            self._new_attempt(view)
        self.notebook = view.notebook
        before = self.log.bytes_read
        outputs = self._outputs()
        self.bytes_read += self.log.bytes_read - before
        for cell in view.cells():
            index = cell.get("index")
            self._cell(cell, outputs.pop(index, []) if isinstance(index, int) else [])
        for index, lines in outputs.items():  # cells run.json does not show started yet
            self.held.setdefault(index, []).extend(lines)
        self._metrics(view)
        self._ranks(view)
        self._footer(view)

    def _new_attempt(self, view: RunView) -> None:
        if self.attempt:
            self.view.show(Update("attempt", {"attempt": view.attempt}))
        self.attempt = view.attempt
        self.cells, self.held, self.sources = {}, {}, {}
        started = parse_iso(view.started_at)
        self.progress = Progress(started=started)

    def _outputs(self) -> dict[int, list[dict[str, Any]]]:
        """The log's new output lines, by cell (none this time when the log cannot be read:
        the next poll reads them)."""
        found: dict[int, list[dict[str, Any]]] = {}
        try:
            new = self.log.read_new(self.attempt or 1)
        except (StorageError, OSError):
            return found
        for event in new:
            if event.get("event") == "stream" and isinstance(event.get("cell"), int):
                found.setdefault(event["cell"], []).append(event)
        return found

    def _cell(self, cell: dict[str, Any], outputs: list[dict[str, Any]]) -> None:
        index = cell.get("index")
        if not isinstance(index, int):
            return
        seen = self.cells.get(index, {})
        status = cell.get("status")
        if status != "pending" and seen.get("status") in (None, "pending"):
            self.view.show(Update("cell_start", {"cell": index, "source": self._source(index)}))
        if status != "pending":
            outputs = self.held.pop(index, []) + outputs
            for event in outputs:
                self._output(index, event)
        elif outputs:
            self.held.setdefault(index, []).extend(outputs)
        if status not in ("pending", "running") and seen.get("status") != status:
            self.view.show(Update("cell_end", _cell_end(cell)))
        self.cells[index] = cell

    def _output(self, index: int, event: dict[str, Any]) -> None:
        text = str(event.get("text", ""))
        partial = bool(event.get("partial"))
        self.progress.partial = text.rstrip("\n").rpartition("\n")[2] if partial else ""
        data = {"cell": index, "name": event.get("name"), "text": text, "partial": partial}
        self.view.show(Update("output", data))

    def _metrics(self, view: RunView) -> None:
        metrics = view.get("metrics")
        for name, value in (metrics if isinstance(metrics, dict) else {}).items():
            if self.metrics.get(name, _NONE) != value:
                self.metrics[name] = value
                self.view.show(Update("metric", {"name": name, "value": value}))

    def _ranks(self, view: RunView) -> None:
        """Every other rank's state, from its own run.json (``ranks/<r>/``)."""
        world = view.identity.get("world_size")
        if not isinstance(world, int) or world <= 1:
            return
        for rank in range(1, world):
            url = self.dest.rank(rank).run_json
            raw = self._peek(url)
            peer = runfile.parse(raw) if raw is not None else None
            state = _rank_state(peer)
            if self.ranks.get(rank) != state:
                self.ranks[rank] = state
                self.view.show(Update("rank", {"rank": rank, "state": state}))
        self.progress.ranks = dict(self.ranks)

    def _gathered_ranks(self, view: RunView) -> None:
        """Rank 0's final record says how every rank ended (``ranks``): the last word."""
        for entry in view.get("ranks") or []:
            rank = entry.get("rank") if isinstance(entry, dict) else None
            if not isinstance(rank, int) or rank == 0:
                continue
            code = entry.get("exit_code")
            state = f"{entry.get('status')}" + (f" (exit {code})" if code is not None else "")
            if self.ranks.get(rank) != state:
                self.ranks[rank] = state
                self.view.show(Update("rank", {"rank": rank, "state": state}))

    def _peek(self, url: str) -> bytes | None:
        try:
            raw = self.storage.get_bytes(url)
        except Exception:  # a peer's file that cannot be read now: shown as unknown
            return None
        self.bytes_read += len(raw or b"")
        return raw

    def _footer(self, view: RunView) -> None:
        p = self.progress
        cells = view.cells()
        p.total = view.cells_total
        p.done = sum(c.get("status") not in ("pending", "running") for c in cells)
        running = next((c for c in cells if c.get("status") == "running"), None)
        index = running.get("index") if running else None
        if index != p.running:
            p.partial = ""
        p.running = index if isinstance(index, int) else None
        p.since = parse_iso(running.get("started_at")) if running else None
        p.source = self.sources.get(p.running, "") if p.running is not None else ""
        p.started = p.started or parse_iso(view.started_at)
        p.resources = resources_line(view.get("resources"))
        self.view.footer(replace(p, ranks=dict(p.ranks)))  # a snapshot: the view may keep it

    def _source(self, index: int) -> str:
        """The cell's first source line, from the checkpointed notebook: read when a cell
        starts whose source is not known yet (normally once: it holds every cell)."""
        if index not in self.sources and self.notebook:
            self._read_sources(self.dest.file(self.notebook))
        return self.sources.get(index, "")

    def _read_sources(self, url: str) -> None:
        raw = self._peek(url)
        try:
            cells = json.loads(raw or b"{}").get("cells", [])
        except (ValueError, AttributeError):
            return
        for i, cell in enumerate(cells if isinstance(cells, list) else []):
            source = cell.get("source", "") if isinstance(cell, dict) else ""
            text = "".join(source) if isinstance(source, list) else str(source)
            lines = [line for line in text.splitlines() if line.strip()]
            self.sources[i] = _short(lines[0].strip() if lines else "")

    # -- the end -------------------------------------------------------------------------------

    def _end(self, view: RunView) -> int:
        code = view.exit_code if view.exit_code is not None else 1
        self._gathered_ranks(view)
        self.view.show(Update("end", self._summary(view, code)))
        return code

    def _summary(self, view: RunView, code: int) -> dict[str, Any]:
        failed = view.get("failed_cell")
        return {
            "status": str(view.status),
            "exit_code": code,
            "reason": view.reason,
            "duration_s": view.get("duration_s"),
            "failed_cell": failed if isinstance(failed, dict) else None,
            "metrics": view.get("metrics") or {},
            "peaks": peaks_line(view.get("resources")),
            "notebook": self.dest.file(view.notebook) if view.notebook else None,
            "report": self.dest.file(view.report) if view.report else None,
            "run_id": view.run_id,
            "attempt": view.attempt,
            "polls": self.polls,
            "bytes_read": self.bytes_read,
        }

    def _lost(self, view: RunView) -> bool:
        """No sign of life for ``lost_after``: run.json's heartbeat (and its bytes, by this
        watcher's clock) and the lease (see the module's doc)."""
        age = age_s(view.get("heartbeat_at"))
        unchanged = time.monotonic() - self.changed_at
        if (age is None or age <= self.s.lost_after) and unchanged <= self.s.lost_after:
            return False
        return not lease.shows_life(self.storage, self.dest)

    def _lose(self, view: RunView) -> int:
        beat = view.get("heartbeat_at")
        reason = f"the run's heartbeat stopped (last {beat}); it is lost"
        data = {**self._summary(view, RunLostError.exit_code), "status": "lost", "reason": reason}
        self.view.show(Update("lost", data))
        return RunLostError.exit_code


_NONE = object()


def _over(view: RunView) -> bool:
    """The run is over: its record is final, and for a multi-rank run it holds every rank's
    end (rank 0 shows its own end to its peers first, then waits for theirs)."""
    world = view.identity.get("world_size")
    multi = isinstance(world, int) and world > 1
    return view.final and (not multi or isinstance(view.get("ranks"), list))


def _run_facts(view: RunView, dest: str) -> dict[str, Any]:
    return {
        "dest": dest,
        "run_id": view.run_id,
        "attempt": view.attempt,
        "notebook": view.notebook,
        "cells": view.cells_total,
        "world_size": view.identity.get("world_size", 1),
        "started_at": view.started_at,
    }


def _cell_end(cell: dict[str, Any]) -> dict[str, Any]:
    return {
        "cell": cell.get("index"),
        "execution_count": cell.get("execution_count"),
        "status": cell.get("status"),
        "duration_s": cell.get("duration_s"),
        "error": cell.get("error"),
    }


def _rank_state(peer: RunView | None) -> str:
    if peer is None:
        return "not started"
    if not peer.readable:
        return "unreadable"
    if peer.final:
        return f"{peer.status} (exit {peer.exit_code})"
    progress = peer.get("progress") or {}
    return f"running {progress.get('cells_done', 0)}/{progress.get('cells_total', 0)}"


def _short(line: str) -> str:
    return line if len(line) <= SOURCE_CHARS else line[: SOURCE_CHARS - 1] + "…"
