"""What a run leaves behind: the executed notebook, run.json and executor.log.

They go to this process's folder (``Settings.places.own``; the names are ``nbjob.layout``'s).

They are written while the run goes on and once more at the end, whatever happened:
``Results.checkpoint`` serializes a snapshot on the main thread at most every ``interval``
seconds (stretched when serializing or uploading is slow, so the total cost stays linear in the
run's length); a background thread uploads the newest snapshot and drops older ones.
``Results.final`` writes the last state with retries; if the destination cannot take it, a
local copy is kept and its path is in the ``StorageError``'s reason. To a remote destination
the log goes as it grows, in segments holding only new bytes (``nbjob.livelog``), and whole at
the end (``store_log``); the notebook at a pace that bounds its uploads (``nbjob.pacing``).
The HTML report of the
notebook is ``nbjob.report``'s, written once after ``final``. What is stored has the secrets
nbjob knows masked (``nbjob.mask``; the run's ``Masker``), in the thread that serializes it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbjob import cellsegments, livelog, logs, pacing
from nbjob.artifacts import ArtifactStream, is_temporary
from nbjob.errors import NbjobError, StorageError
from nbjob.layout import LOG, RUN_JSON, Destination
from nbjob.mask import Masker
from nbjob.stop import Budget, timebox
from nbjob.storage import Storage, local_path
from nbjob.stored import notebook_bytes, record_bytes

if TYPE_CHECKING:
    from nbjob.record import RunRecord

_AT_LEAST_S = 0.5  # a write is always given this long, whatever the budget says


# -- writing -----------------------------------------------------------------------------------


class Results:
    """The run's results at ``folder`` (this process's own folder, see ``nbjob.layout``)."""

    def __init__(
        self,
        storage: Storage,
        folder: Destination | str,
        notebook_name: str | None,
        log_path: Path,
        spool: Path,
        artifacts: Path,
        interval: float,
        masker: Masker | None = None,
    ) -> None:
        self.storage = storage
        self.masker = masker or Masker()  # the secrets masked in what is stored (nbjob.mask)
        self.folder = folder if isinstance(folder, Destination) else Destination(folder)
        self.notebook_name = notebook_name
        self.log_path = log_path
        self.spool = spool  # local copy of the newest results
        self.artifacts = artifacts  # see nbjob.start.artifacts_dir
        self.interval = interval
        self._next_due = 0.0
        self._pending: _Snapshot | None = None
        self.shipper = livelog.Shipper(storage, log_path)  # the live log (remote destinations)
        self._attempt = 1  # the attempt the live log's segments are stored for
        self.cells = cellsegments.Segments()  # a long notebook's finished cells, mid-run
        self._segments: list[cellsegments.Segment] = []  # cut, not stored yet (upload thread)
        self.pace = pacing.NotebookPace()  # when a remote destination's notebook is stored
        self._nb_due = 0.0  # a remote destination's notebook is serialized again from then
        self._nb_cost = 0.0  # what serializing it cost at this checkpoint
        # Other files stored with each checkpoint and at the end, after run.json: name ->
        # their contents now (resources.jsonl: nbjob.resources).
        self.extras: dict[str, Callable[[], bytes]] = {}
        # Told the notebook as stored at each checkpoint that serialized it (the report's).
        self.on_notebook: Callable[[bytes], None] | None = None
        self._paces: dict[str, pacing.NotebookPace] = {}  # the extras' byte budgets
        self._cond = threading.Condition()
        self._closed = False
        self._warned = False
        self._thread = threading.Thread(target=self._upload_loop, name="results", daemon=True)
        self._thread.start()
        # A local destination holds the artifacts folder itself; a remote one gets them streamed.
        self.stream: ArtifactStream | None = None
        if not self.folder.is_local:
            self.stream = ArtifactStream(storage, self.folder.artifacts, artifacts)

    def stream_artifacts(self, already_there: list[str]) -> None:
        """Start sending artifacts (after an earlier attempt's were restored, if any)."""
        if self.stream is not None:
            self.stream.start(already_there)

    def _notebook_bytes(self, nb: Any) -> bytes:
        """The notebook as stored: serialized, the known secrets masked (none: no cost)."""
        if nb is None:
            return b""
        data = notebook_bytes(nb)
        return self.masker.json_bytes(data) if self.masker else data

    def _record_bytes(self, record: dict[str, Any]) -> bytes:
        data = record_bytes(record)
        return self.masker.json_bytes(data) if self.masker else data

    def stored_notebook(self, nb: Any) -> bytes:
        """``nb`` as stored: serialized, masked (for the report's renderer)."""
        return self._notebook_bytes(nb)

    def masked(self, nb: Any) -> Any:
        """``nb`` as the stored notebook shows it (for the HTML report)."""
        return self.masker.notebook(nb) if nb is not None else nb

    def url(self, name: str) -> str:
        return self.folder.file(name)

    def move_to(self, folder: Destination) -> None:
        """Write everything to ``folder`` instead (before the final write; no stream then)."""
        self.folder, self.stream = folder, None

    def due(self) -> bool:
        """Whether a checkpoint should be written now (cheap: called after every message)."""
        return time.monotonic() >= self._next_due

    def hurry(self) -> None:
        """A checkpoint at the next chance, whenever the last one was (memory pressure)."""
        self._next_due = 0.0

    def _extras(self, paced: bool = False) -> dict[str, bytes]:
        """The extra files' contents now (none yet: no file); ``paced``: at a checkpoint, a
        remote destination's only when their byte budget allows (``pacing``, as the
        notebook's: a bounded timeline rewritten every 2 s would cost its size each time)."""
        found = {name: contents() for name, contents in self.extras.items()}
        found = {name: data for name, data in found.items() if data}
        if paced and not self.folder.is_local:
            found = {n: d for n, d in found.items() if self._pace(n).take(len(d))}
        return found

    def _pace(self, name: str) -> pacing.NotebookPace:
        return self._paces.setdefault(name, pacing.NotebookPace())

    def checkpoint(self, nb: Any, record: RunRecord | dict[str, Any]) -> None:
        """A snapshot for the upload thread: run.json, the notebook when it is due (see
        ``_paced_notebook``). The next checkpoint waits 20 times what this one cost (5 % of the
        main thread at most); with a remote destination the notebook's serialization is paced
        on its own (2.5 %), so a large notebook never slows run.json, the heartbeat. A
        ``RunRecord`` is cut by ``nbjob.cellsegments`` (a mapping is stored as it is)."""
        now = time.monotonic()
        notebook = self._paced_notebook(nb, now)
        if notebook and self.on_notebook is not None:  # the report's cells, rendered ahead
            self.on_notebook(notebook)
        extras = self._extras(paced=True)
        data, segment = self._cut(record)
        segments = [self._mask_segment(segment)] if segment else []
        snapshot = (notebook, self._record_bytes(data), _attempt(data), extras, segments)
        logs.flush()
        with self._cond:
            if self._pending is not None:  # what the one due had to send and did not yet
                was = self._pending
                snapshot = (
                    notebook or was[0],
                    snapshot[1],
                    snapshot[2],
                    {**was[3], **extras},
                    was[4] + segments,
                )
            self._pending = snapshot
            self._cond.notify()
        cost = time.monotonic() - now - self._nb_cost
        self._next_due = time.monotonic() + max(self.interval, 20 * cost)

    def _cut(
        self, record: RunRecord | dict[str, Any]
    ) -> tuple[dict[str, Any], cellsegments.Segment | None]:
        """run.json's mapping and a new cells segment (``nbjob.cellsegments``), if any."""
        if isinstance(record, dict):
            return record, None
        return self.cells.cut(record, self.folder, record.attempt or 1)

    def _mask_segment(self, segment: cellsegments.Segment) -> cellsegments.Segment:
        url, data = segment
        return url, self.masker.json_bytes(data) if self.masker else data

    def _paced_notebook(self, nb: Any, now: float) -> bytes:
        """The notebook's bytes if it is stored at this checkpoint, else b"". A local
        destination: always. A remote one: serialized at most every 40 times what that costs,
        stored when ``pacing.NotebookPace`` allows."""
        self._nb_cost = 0.0
        if self.folder.is_local:
            return self._notebook_bytes(nb)
        if now < self._nb_due:
            return b""
        notebook = self._notebook_bytes(nb)
        self._nb_cost = time.monotonic() - now
        self._nb_due = now + max(self.interval, 40 * self._nb_cost)
        return notebook if self.pace.take(len(notebook)) else b""

    def _upload_loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                snapshot, self._pending = self._pending, None
            assert snapshot is not None
            started = time.monotonic()
            try:
                self._write(*snapshot, live=True)
            except Exception as exc:  # the final write retries and reports
                if not self._warned:
                    logs.get_logger().warning("checkpoint_failed", reason=str(exc))
                    self._warned = True
            # Slow storage: checkpoint less often, so uploads never pile up.
            took = time.monotonic() - started
            self._next_due = max(self._next_due, time.monotonic() + 4 * took)
            del snapshot  # not kept while the next one is made: a long notebook's bytes

    def _write(
        self,
        nb_data: bytes,
        record_data: bytes,
        attempt: int,
        extras: dict[str, bytes] | None = None,
        segments: list[cellsegments.Segment] | None = None,
        live: bool = False,
    ) -> None:
        """run.json first (after the cells segments it counts, if any) and on its own (the small
        file with the reason gets through when the notebook cannot), then the notebook and the
        log: each is tried whatever happened to the others. ``StorageError`` naming each file
        that was not stored. The log goes as new segments during the run (``live``) and at the
        end to where they went, else whole (a folder no checkpoint wrote to, e.g.
        attempts/unread-*). A cells segment not stored is tried again at the next write."""
        self._segments.extend(segments or [])
        puts: list[tuple[str, Callable[[], None]]] = [
            ("cells", self._store_segments),
            (RUN_JSON, lambda: self.storage.put_bytes(self.folder.run_json, record_data)),
        ]
        if self.notebook_name and nb_data:
            url = self.url(self.notebook_name)
            puts.append(("the notebook", lambda: self.storage.put_bytes(url, nb_data)))
        for name, data in (extras or {}).items():
            puts.append((name, self._put(name, data)))
        if not self.folder.is_local and (live or self._shipping(attempt)):
            puts.append((LOG, lambda: self._ship(attempt)))
        elif not self._is_log_local():
            puts.append((LOG, lambda: self.storage.put_file(self.folder.log, self.log_path)))
        failed = []
        for name, put in puts:
            try:
                put()
            except Exception as exc:  # any failure: the next file is still tried
                failed.append(f"{name}: {_why(exc)}")
        if failed:
            raise StorageError("; ".join(failed))

    def _store_segments(self) -> None:
        """The cells segments cut and not stored yet, in order (the first failure stops)."""
        while self._segments:
            cellsegments.store(self.storage, self._segments[0])
            self._segments.pop(0)

    def _ship(self, attempt: int) -> None:
        self._attempt = attempt
        self.shipper.ship(self.folder, attempt)

    def _shipping(self, attempt: int) -> bool:
        """Whether checkpoints stored the live log's segments in this folder for ``attempt``."""
        return self.shipper.ships_to(self.folder, attempt)

    def _put(self, name: str, data: bytes) -> Callable[[], None]:
        return lambda: self.storage.put_bytes(self.url(name), data)

    def _is_log_local(self) -> bool:
        return self.folder.is_local and local_path(self.folder.log) == self.log_path

    def final(
        self, nb: Any, record: dict[str, Any], timeout: float, stored: bytes | None = None
    ) -> None:
        """Write the last state within ``timeout`` seconds; keep a local copy if that fails.
        ``stored``: ``nb`` as stored already (``stored_notebook``), not serialized again."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify()
        budget = Budget.within(timeout)
        self._thread.join(timeout=max(0.0, budget.share(0.5).left()))  # a checkpoint under way
        self._segments.clear()  # run.json lists every cell now
        nb_data = self._notebook_bytes(nb) if stored is None else stored
        record_data = self._record_bytes(record)
        extras = self._extras()
        logs.flush()

        def write() -> None:
            self._write(nb_data, record_data, _attempt(record), extras)
            if self.stream is not None:  # what the stream has not sent yet (big files first)
                self.stream.flush()

        if self.artifacts.is_dir() and not any(self.artifacts.iterdir()):
            self.artifacts.rmdir()  # no empty folder among the results
        left = budget.left()
        done = timebox(write, budget, "the final write", at_least=_AT_LEAST_S)
        if self.stream is not None:
            self.stream.close()
        if not done.ok:
            why = f"no answer within {left:.0f} s" if done.late else _why(done.error)
            copy = self.keep_local_copy(nb, record)
            raise StorageError(
                f"results not stored at {logs.redact(self.folder.url)} ({why}); {copy}"
            )

    def store_record(self, record: dict[str, Any]) -> None:
        """run.json once more (after the final write; the report's outcome is in it now)."""
        self.storage.put_bytes(self.folder.run_json, self._record_bytes(record))

    def store_log(self, budget: Budget) -> None:
        """Store the log once more, so the stored copy ends with the run's last event: its last
        segments, then executor.log whole."""
        logs.flush()
        if not self._is_log_local():
            timebox(self._put_log, budget, "the log upload")

    def _put_log(self) -> None:
        if not self.folder.is_local and self._shipping(self._attempt):
            self._ship(self._attempt)
        self.storage.put_file(self.folder.log, self.log_path)

    def artifact_names(self) -> list[str]:
        return sorted(
            p.relative_to(self.artifacts).as_posix()
            for p in self.artifacts.rglob("*")
            if p.is_file() and not is_temporary(p.relative_to(self.artifacts).as_posix())
        )

    def keep_local_copy(self, nb: Any, record: dict[str, Any]) -> str:
        """Results that could not be stored go to the spool folder, or where there is room
        (the temporary folder) when its disk is full; what happened, said for the reason."""
        errors = []
        for folder in (self.spool, Path(tempfile.gettempdir()) / f"nbjob-results-{os.getpid()}"):
            try:
                self._copy_to(folder, nb, record)
            except OSError as exc:
                errors.append(_why(exc))  # an earlier, whole copy there is kept
                continue
            self.spool = folder
            return f"a local copy is in {folder}"
        return f"no local copy either ({errors[-1]})"

    def _copy_to(self, folder: Path, nb: Any, record: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RUN_JSON).write_bytes(self._record_bytes(record))  # the reason first
        if self.notebook_name and nb is not None:
            (folder / self.notebook_name).write_bytes(self._notebook_bytes(nb))
        for name, data in self._extras().items():
            (folder / name).write_bytes(data)
        if self.log_path.exists() and self.log_path.parent != folder:
            shutil.copyfile(self.log_path, folder / LOG)


_Snapshot = tuple[bytes, bytes, int, dict[str, bytes], list[cellsegments.Segment]]


def _attempt(record: dict[str, Any]) -> int:
    """The attempt whose live log this is (run.json's; 1 before it is known)."""
    value = record.get("attempt")
    return value if isinstance(value, int) and value > 0 else 1


def _why(exc: BaseException | None) -> str:
    """One line for a failed write: the store's reason, or the OS's (no path: a temporary
    file's name says nothing)."""
    if isinstance(exc, NbjobError):
        return exc.reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__
