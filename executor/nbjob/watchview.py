"""How ``nbjob watch`` shows a run: plain lines, a terminal with a live footer, or JSON lines.

``PlainView`` prints one line per thing that happened (log collectors, CI); ``TerminalView``
prints the same lines and keeps a footer under them — a progress bar with cells done of
total, the running cell (``In [*]``, its first source line, how long it has run), its newest
progress line (a bar rewritten with ``\\r``: only its last state) and each rank's state —
redrawn in place after every poll; ``JsonView`` prints every ``watch.Update`` as one JSON line.
``view_for(stream, json_lines)`` picks one.
"""

from __future__ import annotations

import datetime as dt
import shutil
from typing import Any, TextIO

from nbjob.watch import Progress, Update

BAR = 24  # the progress bar's width in characters
OUTPUT_INDENT = "    "


def view_for(stream: TextIO, json_lines: bool) -> PlainView:
    """The view for ``stream``: JSON lines if asked, a live footer on a terminal, else plain."""
    if json_lines:
        return JsonView(stream)
    if _isatty(stream):
        return TerminalView(stream)
    return PlainView(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class PlainView:
    """One line per update, nothing redrawn."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def show(self, update: Update) -> None:
        for line in lines(update):
            self._write(line + "\n")

    def footer(self, progress: Progress) -> None:
        """Plain lines have no footer."""

    def close(self) -> None:
        self._write("")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class JsonView(PlainView):
    """``--json``: each update as one JSON object per line (``{"event": kind, ...}``)."""

    def show(self, update: Update) -> None:
        self._write(update.to_json() + "\n")


class TerminalView(PlainView):
    """Plain lines scrolling above a footer redrawn in place (ANSI: cursor up, erase down)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.drawn = 0  # the footer's lines on screen now
        self.last: Progress | None = None

    def show(self, update: Update) -> None:
        if update.kind == "output" and update.data.get("partial"):
            return  # a line still being rewritten: the footer shows its latest state
        self._erase()
        super().show(update)
        if self.last is not None and update.kind not in ("end", "lost"):
            self._draw(self.last)

    def footer(self, progress: Progress) -> None:
        self._erase()
        self.last = progress
        self._draw(progress)

    def close(self) -> None:
        self._erase()

    def _erase(self) -> None:
        if self.drawn:
            self._write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def _draw(self, progress: Progress) -> None:
        width = max(20, shutil.get_terminal_size((100, 24)).columns - 1)
        rows = [row[:width] for row in footer_lines(progress)]
        self._write("".join(row + "\n" for row in rows))
        self.drawn = len(rows)


def footer_lines(p: Progress, now: dt.datetime | None = None) -> list[str]:
    """The footer: the bar with cells done of total and the run's time, the running cell,
    its progress line, the ranks."""
    now = now or dt.datetime.now(dt.timezone.utc)
    filled = round(BAR * p.done / p.total) if p.total else 0
    bar = "█" * filled + "░" * (BAR - filled)
    elapsed = _clock((now - p.started).total_seconds()) if p.started else "-"
    rows = [f"[{bar}] {p.done}/{p.total} cells · {elapsed}"]
    if p.running is not None:
        took = f" · {_clock((now - p.since).total_seconds())}" if p.since else ""
        rows.append(_named(f"In [*] cell {p.running}{took}", p.source))
        if p.partial:
            rows.append(OUTPUT_INDENT + p.partial)
    if p.resources:
        rows.append(p.resources)
    rows.extend(f"rank {r}: {state}" for r, state in sorted(p.ranks.items()))
    return rows


def lines(update: Update) -> list[str]:
    """An update as the lines plain and terminal views print."""
    d = update.data
    kind = update.kind
    if kind == "output":
        text = str(d.get("text", "")).rstrip("\n")
        return [OUTPUT_INDENT + line for line in text.split("\n")]
    if kind == "cell_start":
        return [_named(f"In [*] cell {d['cell']}", d.get("source"))]
    if kind == "cell_end":
        return [_cell_end(d)]
    return _OTHERS.get(kind, _unknown)(d)


def _cell_end(d: dict[str, Any]) -> str:
    count = d.get("execution_count")
    name = f"In [{count if count is not None else ' '}] cell {d.get('cell')}"
    took = f" in {_seconds(d['duration_s'])}" if d.get("duration_s") is not None else ""
    line = f"{name} {d.get('status')}{took}"
    error = d.get("error")
    if isinstance(error, dict) and error.get("ename"):
        line += f": {error.get('ename')}: {error.get('evalue', '')}"
    return line


def _summary(d: dict[str, Any]) -> list[str]:
    took = f" in {_seconds(d['duration_s'])}" if d.get("duration_s") is not None else ""
    reason = d.get("reason") if d.get("reason") != d.get("status") else None
    rows = [_named(f"run {d.get('status')} (exit {d.get('exit_code')}){took}", reason)]
    failed = d.get("failed_cell")
    if isinstance(failed, dict):
        error = f"{failed.get('ename')}: {failed.get('evalue', '')}" if failed.get("ename") else ""
        rows.append(_named(f"  failed cell {failed.get('index')}", error))
    for name, value in (d.get("metrics") or {}).items():
        rows.append(f"  metric {name} = {value}")
    if d.get("peaks"):
        rows.append(f"  peaks: {d['peaks']}")
    for what in ("notebook", "report"):
        if d.get(what):
            rows.append(f"  {what}: {d[what]}")
    return rows


def _named(head: str, text: Any) -> str:
    """``head: text``, or ``head`` alone when there is no text."""
    return f"{head}: {text}" if text else head


def _unknown(d: dict[str, Any]) -> list[str]:
    return [" ".join(f"{k}={v}" for k, v in d.items())]


_OTHERS: dict[str, Any] = {
    "waiting": lambda d: [f"waiting for a run at {d.get('dest')}"],
    "run": lambda d: [
        f"watching run {d.get('run_id')} (attempt {d.get('attempt')}) at {d.get('dest')}:"
        f" {d.get('notebook')}, {d.get('cells')} cells"
        + (f", {d.get('world_size')} ranks" if (d.get("world_size") or 1) > 1 else "")
    ],
    "attempt": lambda d: [f"attempt {d.get('attempt')} began"],
    "metric": lambda d: [f"metric {d.get('name')} = {d.get('value')}"],
    "rank": lambda d: [f"rank {d.get('rank')}: {d.get('state')}"],
    "end": _summary,
    "lost": lambda d: [f"run lost (exit {d.get('exit_code')}): {d.get('reason')}"],
}


def _seconds(value: Any) -> str:
    try:
        return f"{float(value):.1f} s"
    except (TypeError, ValueError):
        return str(value)


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
