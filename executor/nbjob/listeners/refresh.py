"""A report that stays fresh: the HTML report re-rendered during the run (``--report-interval``).

At most every ``interval`` seconds, on a cell's event or a tick, the notebook as stored is handed
to the report's renderer child (``nbjob.renderer``), never while it still renders a page; a page
that came back is stored from a thread of its own (never while the previous one is still on its
way). The run pays the serialization on its own thread (a checkpoint's) and the child's render
on another core: the next render waits at least ``SPACING`` times what the last one took (render
and serialization), so the refreshes cost at most ~5 % of the run's time (issue 18). The final
page is ``nbjob.report``'s, stored after ``close`` (no older page can land on it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbjob import events, logs, report
from nbjob.renderer import Renderer
from nbjob.results import Results

SPACING = 20  # the next render waits at least this many times what the last one took
_CHANCES = (events.CellStarted, events.CellEnded, events.Tick)


class ReportRefresher:
    """Re-renders and stores the report during the run, at most every ``interval`` seconds."""

    def __init__(
        self,
        results: Results,
        notebook: Callable[[], Any],
        folder: Callable[[], Path | None],
        renderer: Renderer,
        interval: float,
    ) -> None:
        self.results, self.notebook, self.folder = results, notebook, folder
        self.renderer = renderer
        self.interval = interval
        self.next_due = time.monotonic() + interval
        self.cost_s = 0.0  # what the last refresh cost this process (serializing, asking)
        self.stored = 0  # pages stored during the run
        self._upload: threading.Thread | None = None
        self._closed = False

    def on_event(self, event: events.Event) -> None:
        if self._closed or not isinstance(event, _CHANCES):
            return
        now = time.monotonic()
        if self.renderer.ready_page_waiting():
            self._store(now)
        if now >= self.next_due and self.renderer.start() and self.renderer.idle:
            self._ask(now)  # the first refresh starts the renderer child

    def _ask(self, now: float) -> None:
        nb = self.notebook()
        if nb is None or not self.results.notebook_name:
            return
        data = self.results.stored_notebook(nb)
        self.renderer.submit(data, self.folder(), report.title_for(self.results))
        self.cost_s = time.monotonic() - now
        self.next_due = now + max(self.interval, SPACING * self.cost_s)

    def _store(self, now: float) -> None:
        done = self.renderer.ready()
        if done is None:
            return
        page, why = done
        took = self.renderer.last_s + self.cost_s  # the child's render and this process's part
        self.next_due = max(self.next_due, now + SPACING * took)
        if page is None:
            logs.get_logger().warning("report_not_refreshed", reason=logs.redact(why or "")[:300])
            return
        if self._upload is not None and self._upload.is_alive():
            return  # the previous page is still on its way: this one is dropped
        self._upload = threading.Thread(target=self._put, args=(page,), daemon=True)
        self._upload.start()

    def _put(self, page: bytes) -> None:
        try:
            report.put_page(self.results, page)
            self.stored += 1
        except Exception as exc:  # the final report is what counts; say it once
            logs.get_logger().warning("report_not_refreshed", reason=logs.redact(str(exc))[:300])

    def close(self, timeout: float) -> None:
        """No refresh from now on; a page on its way is waited for at most ``timeout`` s."""
        self._closed = True
        if self._upload is not None:
            self._upload.join(max(0.0, timeout))
