"""How often a remote destination's notebook is rewritten during a run: a byte budget.

Each checkpoint stores run.json (the heartbeat: small, every time) and the log's new bytes
(``nbjob.livelog``). The notebook is one object rewritten whole, so storing it at every
checkpoint costs (its size x the checkpoints): 6-14x its final size on a minute-long run, far
more on a long one. ``NotebookPace`` stores it only while the bytes its checkpoints uploaded,
this one included, stay within ``BUDGET`` times its size now. A notebook that grows is then
rewritten each time its size reaches what was uploaded so far (about each doubling, early on
at every checkpoint), and the run's uploads of it stay within ``BUDGET`` + 1 (the final write)
times its final size, however long the run, plus the checkpoints it had while it was small.
What is new in between is in the live log and run.json (the cells' progress). A notebook up
to ``FREE_BYTES`` is stored at every checkpoint and not counted: it costs little, and a small
notebook's changes (an execution count, a short line) do not make it grow much. A local
destination's notebook is written at every checkpoint (a disk write, not an upload).
"""

from __future__ import annotations

__all__ = ["BUDGET", "FREE_BYTES", "NotebookPace"]

BUDGET = 2.0  # the notebook's uploads during the run, at most, in multiples of its size now
FREE_BYTES = 64 * 1024  # a notebook this small is stored at every checkpoint, uncounted


class NotebookPace:
    """Says at each checkpoint whether the notebook is stored (see the module's docstring)."""

    def __init__(self, budget: float = BUDGET, free: int = FREE_BYTES) -> None:
        self.budget = budget
        self.free = free
        self.spent = 0  # bytes of notebook the counted checkpoints uploaded

    def take(self, size: int) -> bool:
        """Whether a notebook of ``size`` bytes is stored now; counted when it is."""
        if size <= self.free:
            return True
        if self.spent + size > self.budget * size:
            return False
        self.spent += size
        return True
