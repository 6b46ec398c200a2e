"""A cell's outputs as JupyterLab shows them, built as messages arrive, in bounded memory.

Streams (``Stream``): consecutive outputs of the same stream merge; ``\\r`` returns to the start
of the line and later characters overwrite in place (``"12345\\rab"`` → ``ab345``); ``\\b``
deletes the previous character, never a newline; ANSI escapes are kept (JupyterLab renders
them). Only completed lines are stored; the line being rewritten is one short string, so a
progress bar updated 200,000 times costs one line.

The cap (``CellOutputs``): when a cell's stream text passes ``max_bytes``, the stream that went
over keeps its head and its newest ``max_bytes / 2`` bytes (the tail), with one visible marker
between them. Other streams, displays and later outputs are still kept (a stream output started
after the cap shows its own tail); ``clear_output`` starts afresh.

Pager payloads (``pager_outputs``: ``len?``, ``obj??``) become display outputs, as JupyterLab
shows them; ``timestamp`` gives a message's date as nbclient writes ``metadata.execution``.

Display ids (``Displays``): ``update_display_data`` changes every output shown with that id,
in any cell of the run.

The nbformat output dicts are brought up to date by ``CellOutputs.sync`` (before a checkpoint
and at the end of the cell), not on every message: joining a megabyte per message would cost
more than the kernel's output itself.
"""

from __future__ import annotations

import re
from collections import deque
from datetime import datetime, timezone
from typing import Any

import nbformat

_CONTROL = re.compile(r"(\r|\n|\x08+)")  # a run of backspaces is one part
LINE_LIMIT = 64 * 1024  # a line longer than this (no newline, cursor at its end) is committed
PAGER_MIMES = ("text/plain", "text/html")  # what of a pager payload a cell's output keeps
TIMING_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # metadata.execution's dates, as nbclient writes them


def marker(left_out: int) -> str:
    return f"[… {left_out:,} bytes left out; executor.log has them]\n"


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


class LineFolder:
    """The terminal model of one line: ``\\r`` and ``\\b`` as JupyterLab applies them.

    ``feed`` returns the lines completed by the text (each ending in ``\\n``); the line being
    written stays in ``line`` (``cursor`` is where the next character goes).
    """

    def __init__(self) -> None:
        self.line = ""
        self.cursor = 0

    def feed(self, text: str) -> list[str]:
        if self.cursor == len(self.line) and "\r" not in text and "\b" not in text:
            return self._plain(text)  # the common case, at C speed
        done: list[str] = []
        for part in _CONTROL.split(text):
            if not part:
                continue
            if part == "\n":
                done.append(self.line + "\n")
                self.line, self.cursor = "", 0
            elif part == "\r":
                self.cursor = 0
            elif part[0] == "\b":
                start = max(0, self.cursor - len(part))
                self.line = self.line[:start] + self.line[self.cursor :]
                self.cursor = start
            else:
                end = self.cursor + len(part)
                self.line = self.line[: self.cursor] + part + self.line[end:]
                self.cursor = end
        if len(self.line) > LINE_LIMIT and self.cursor == len(self.line):
            done.append(self.line)  # an endless line: keep memory bounded
            self.line, self.cursor = "", 0
        return done

    def _plain(self, text: str) -> list[str]:
        *lines, last = text.split("\n")
        if lines:
            lines[0] = self.line + lines[0]
            done = [line + "\n" for line in lines]
            self.line = last
        else:
            done, self.line = [], self.line + last
        self.cursor = len(self.line)
        if len(self.line) > LINE_LIMIT:
            done.append(self.line)
            self.line, self.cursor = "", 0
        return done


class Stream:
    """One stream output of a cell: head, a marker when something was left out, tail, line."""

    def __init__(self, name: str, node: Any) -> None:
        self.name = name
        self.node = node  # the nbformat output in cell.outputs
        self.folder = LineFolder()
        self.head: list[str] = []
        self.head_bytes = 0
        self.capped = False
        self.tail: deque[str] = deque()
        self.tail_bytes = 0
        self.left_out = 0
        self.dirty = True

    def text(self) -> str:
        middle = marker(self.left_out) if self.left_out else ""
        return "".join(self.head) + middle + "".join(self.tail) + self.folder.line

    def cap(self, head_room: int) -> None:
        """From now on new lines go to the tail; the head keeps at most ``head_room`` bytes."""
        self.capped = True
        while self.head and self.head_bytes > head_room:
            line = self.head.pop()
            self.head_bytes -= _size(line)
            self.tail.appendleft(line)
            self.tail_bytes += _size(line)

    def to_tail(self, line: str, size: int, room: int) -> None:
        self.tail.append(line)
        self.tail_bytes += size
        while self.tail_bytes > room and self.tail:
            first = self.tail[0]
            first_size = _size(first)
            excess = self.tail_bytes - room
            if first_size <= excess:
                self.tail.popleft()
                self.tail_bytes -= first_size
                self.left_out += first_size
            else:  # cut the front of the oldest piece (one huge line)
                cut = first.encode("utf-8", "surrogatepass")[excess:].decode("utf-8", "ignore")
                self.tail[0] = cut
                self.tail_bytes -= first_size - _size(cut)
                self.left_out += first_size - _size(cut)


class CellOutputs:
    """The outputs of one running cell (``outputs``: the cell's nbformat list, kept in step)."""

    def __init__(self, outputs: list[Any], max_bytes: int, displays: Displays) -> None:
        self.outputs = outputs
        self.max_bytes = max(max_bytes, 2)
        self.displays = displays
        self.streams: list[Stream] = []
        self.kept = 0  # bytes of stream text kept in heads
        self.truncated = False
        self.clear_pending = False

    def _before_output(self) -> None:
        if self.clear_pending:
            self.clear(wait=False)

    def stream(self, name: str, text: str) -> None:
        self._before_output()
        last = self.outputs[-1] if self.outputs else None
        current = self.streams[-1] if self.streams else None
        if current is None or last is not current.node or current.name != name:
            node = nbformat.v4.new_output("stream", name=name, text="")
            self.outputs.append(node)
            current = Stream(name, node)
            self.streams.append(current)
        current.dirty = True
        for line in current.folder.feed(text):
            self._commit(current, line)

    def _commit(self, stream: Stream, line: str) -> None:
        size = _size(line)
        if not stream.capped and self.kept + size <= self.max_bytes:
            stream.head.append(line)
            stream.head_bytes += size
            self.kept += size
            return
        if not stream.capped:
            others = self.kept - stream.head_bytes
            before = stream.head_bytes
            stream.cap(max(0, self.max_bytes // 2 - others))
            self.kept -= before - stream.head_bytes
            self.truncated = True
        stream.to_tail(line, size, self.max_bytes - self.max_bytes // 2)
        if stream.left_out:
            self.truncated = True

    def add(self, output: Any, display_id: str | None = None) -> None:
        self._before_output()
        self.outputs.append(output)
        if display_id:
            self.displays.add(display_id, output)

    def clear(self, wait: bool) -> None:
        if wait:
            self.clear_pending = True
            return
        self.outputs.clear()
        self.streams.clear()
        self.kept = 0
        self.clear_pending = False

    def sync(self) -> None:
        """Write each changed stream's text into its nbformat output."""
        for stream in self.streams:
            if stream.dirty:
                stream.node["text"] = stream.text()
                stream.dirty = False

    def finish(self) -> None:
        """The cell ended: drop stream outputs left empty (a lone ``\\r``), write the rest."""
        self.sync()
        empty = {id(s.node) for s in self.streams if not s.node["text"]}
        if empty:
            self.outputs[:] = [o for o in self.outputs if id(o) not in empty]


class Displays:
    """display_id → the outputs shown with it, across the run's cells."""

    def __init__(self) -> None:
        self._by_id: dict[str, list[Any]] = {}

    def add(self, display_id: str, output: Any) -> None:
        self._by_id.setdefault(display_id, []).append(output)

    def update(self, content: dict[str, Any]) -> None:
        display_id = (content.get("transient") or {}).get("display_id")
        for output in self._by_id.get(display_id or "", []):
            output["data"] = nbformat.from_dict(content.get("data", {}))
            output["metadata"] = nbformat.from_dict(content.get("metadata", {}))


def timestamp(msg: dict[str, Any]) -> str:
    """The message's date (its header's, set by the kernel) in UTC, as nbclient writes it
    (``TIMING_FORMAT``); now when the message has none."""
    date = (msg.get("header") or {}).get("date")
    if isinstance(date, str):
        try:
            date = datetime.fromisoformat(date.replace("Z", "+00:00"))
        except ValueError:
            date = None
    if not isinstance(date, datetime):
        date = datetime.now(timezone.utc)
    elif date.tzinfo is not None:
        date = date.astimezone(timezone.utc)
    return date.strftime(TIMING_FORMAT)


def pager_outputs(content: dict[str, Any]) -> list[Any]:
    """The reply's pager payloads (``len?``, ``obj??``, ``%pdoc``) as display outputs, the
    text and HTML JupyterLab shows for them as the cell's output."""
    outputs = []
    for payload in content.get("payload") or []:
        if not isinstance(payload, dict) or payload.get("source") != "page":
            continue
        data = payload.get("data") or {"text/plain": payload.get("text", "")}
        kept = {m: data[m] for m in PAGER_MIMES if isinstance(data.get(m), str) and data[m]}
        if kept:
            outputs.append(nbformat.v4.new_output("display_data", data=kept))
    return outputs
