"""A run's places at its destination, named once.

Every file and folder nbjob writes or reads at a destination is spelled here and nowhere else::

    <top>/                       the run's top: rank 0's results (a sweep's shard: shards/<s>/)
      run.json  executor.log  <notebook>.ipynb  <notebook>.html
      resources.jsonl            the resource samples over time (nbjob.resources)
      artifacts/                 what the notebook wrote to $NBJOB_ARTIFACTS_DIR
      log/<a>/<offset>.log       attempt a's live log, in segments written once (nbjob.livelog)
      cells/<a>/<first>.jsonl    attempt a's finished cells mid-run, written once (cellsegments)
      attempts/<n>/              an earlier attempt's results, kept before this one writes
      attempts/unread-<stamp>/   this attempt's results when the top could not be read
      attempts/concurrent-<stamp>/  an attempt's that found another alive (it ran no cell)
      .nbjob-lease/<g>.json      the lease of the attempt writing here (generation g)
      ranks/<r>/                 rank r > 0's results (the same set)

``Places`` says which folder is the run's *top* (``top``) and which is *this process's*
(``own``: the top for rank 0, ``ranks/<r>/`` for rank r), as ``config.resolve`` placed them.
``Destination`` is one such folder (a local path or a storage URL) and the names in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nbjob.storage import is_local, join, local_path

RUN_JSON = "run.json"
LOG = "executor.log"
RESOURCES = "resources.jsonl"  # the resource samples over time (nbjob.resources.timeline)
ARTIFACTS = "artifacts"  # files the notebook writes to $NBJOB_ARTIFACTS_DIR
ATTEMPTS = "attempts"
RANKS = "ranks"
SHARDS = "shards"
LOG_SEGMENTS = "log"  # the live log's segments, by attempt (nbjob.livelog)
CELL_SEGMENTS = "cells"  # finished cells' states mid-run, by attempt (nbjob.cellsegments)
LEASE = ".nbjob-lease"  # one writer per folder: the holder's lease, one file per generation


@dataclass(frozen=True)
class Destination:
    """One results folder: a local path or a storage URL (``s3://bucket/prefix``)."""

    url: str

    def __str__(self) -> str:
        return self.url

    def file(self, name: str) -> str:
        """The URL of ``name`` (a relative POSIX name) in this folder."""
        return join(self.url, name)

    @property
    def run_json(self) -> str:
        return self.file(RUN_JSON)

    @property
    def log(self) -> str:
        return self.file(LOG)

    def log_segment(self, attempt: int, offset: int) -> str:
        """The live log's segment of attempt ``attempt`` starting at byte ``offset`` of the
        whole log (``nbjob.livelog``): written once, never rewritten."""
        return self.file(f"{LOG_SEGMENTS}/{attempt}/{offset:015d}.log")

    def cell_segment(self, attempt: int, first: int) -> str:
        """Attempt ``attempt``'s finished cells from position ``first`` (0-based, among the
        run's code cells) on, as JSON lines (``nbjob.cellsegments``): written once."""
        return self.file(f"{CELL_SEGMENTS}/{attempt}/{first:09d}.jsonl")

    @property
    def artifacts(self) -> str:
        return self.file(ARTIFACTS)

    @property
    def ranks(self) -> str:
        """The folder holding every rank r > 0's folder."""
        return self.file(RANKS)

    @property
    def is_local(self) -> bool:
        return is_local(self.url)

    @property
    def path(self) -> Path:
        """The local folder (only for a local destination)."""
        return local_path(self.url)

    def attempt(self, number: int) -> Destination:
        """Where attempt ``number``'s results are kept once a later attempt starts."""
        return Destination(self.file(f"{ATTEMPTS}/{number}"))

    def unread(self, stamp: str) -> Destination:
        """Where an attempt goes that could not read this folder: beside it, never over it."""
        return Destination(self.file(f"{ATTEMPTS}/unread-{stamp}"))

    def concurrent(self, stamp: str) -> Destination:
        """Where an attempt goes that found another attempt alive here (``nbjob.lease``)."""
        return Destination(self.file(f"{ATTEMPTS}/concurrent-{stamp}"))

    @property
    def lease(self) -> str:
        """The folder of this folder's lease files (``nbjob.lease``)."""
        return self.file(LEASE)

    def lease_file(self, generation: int) -> str:
        """Generation ``generation``'s lease: created only if absent, removed at the end."""
        return self.file(f"{LEASE}/{generation}.json")

    def rank(self, rank: int) -> Destination:
        """Rank ``rank``'s folder under a run's top (rank 0's is the top itself)."""
        return self if rank == 0 else Destination(self.file(f"{RANKS}/{rank}"))

    def shard(self, shard: int) -> Destination:
        """A sweep's shard ``shard``: the top of that shard's run."""
        return Destination(self.file(f"{SHARDS}/{shard}"))


@dataclass(frozen=True)
class Places:
    """Where a process's run goes: ``top`` (the run's) and ``own`` (this process's)."""

    top: Destination  # rank 0's results; the top of a shard for a sweep
    own: Destination  # this process's results: the top, or ranks/<r>/ under it

    @classmethod
    def place(cls, base: str, shard: int | None, rank: int) -> Places:
        """``--output`` (``base``), the shard and the rank -> the places (see the module doc)."""
        top = Destination(base)
        if shard is not None:
            top = top.shard(shard)
        return cls(top, top.rank(rank))
