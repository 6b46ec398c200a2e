"""``--notify URL``: a JSON summary POSTed to each URL when the run ends, whatever the ending.

The body holds the run id, attempt, status, exit code, reason, duration, the metrics glued so
far, where the results are (``output``, the notebook's and report's URLs) and a ``text`` line,
which Slack and Microsoft Teams incoming webhooks show as the message as it is.

It is an external listener (``nbjob.delivery``) on a queue thread of its own: it is told
``RunEnded`` in the "tell the listeners" step of the end (``finish``), and its POSTs are
bounded (``NOTIFY_S`` for all URLs together, within that step's share of the end's budget;
each try at most ``TRY_S``), retried on connection errors, 429 and 5xx answers, and never
change the run's outcome: a URL that never answers is abandoned, one line in the log.

A webhook URL is a credential (Slack's and Teams' secret is their path): the log names a
URL by its scheme and host only (``shown``), and the URLs are registered with the log's
redaction, so a line that quotes one anyway (an error message) shows ``REDACTED``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from nbjob import events, logs, mask
from nbjob.delivery import one_line
from nbjob.storage import join

if TYPE_CHECKING:
    from nbjob.config import Settings

NOTIFY_S = 4.0  # all URLs, every try: under events.DRAIN_S, what the end gives its listeners
TRY_S = 2.0  # one POST, at most
BACKOFF_S = (0.2, 0.5, 1.0)  # between tries
_RETRIED = frozenset({408, 425, 429, 500, 502, 503, 504})


def subscriptions(settings: Settings) -> list[events.Subscription]:
    """The notifier for ``settings.notify`` (none when no URL is given)."""
    if not settings.notify:
        return []
    notifier = Notifier(settings.notify, settings.run_id)
    wanted = {events.RunStarted, events.CellMetric, events.RunEnded}
    return [events.Subscription(notifier, event_types=wanted, queued=True, name="notify")]


def shown(url: str) -> str:
    """How the log names ``url``: its scheme and host, never its user, path or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def secrets_of(urls: Sequence[str]) -> list[str]:
    """What of ``urls`` is secret: each whole URL, its password and token parameters, and a
    path long enough to be a webhook's key."""
    found = []
    for url in urls:
        path = urlsplit(url).path
        found += [url, *mask.url_secrets(url), *([path] if len(path) >= 20 else [])]
    return found


class Notifier:
    """Collects the run id, attempt and metrics; POSTs the summary on ``RunEnded``."""

    def __init__(self, urls: Sequence[str], run_id: str, log: Any = None) -> None:
        self.urls = list(urls)
        self.run_id = run_id
        self.attempt = 1
        self.metrics: dict[str, Any] = {}
        self.log = log
        hidden = tuple(secrets_of(self.urls))
        logs.register_secrets(lambda _env: hidden)

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.CellMetric):
            self.metrics[event.name] = event.value
        elif isinstance(event, events.RunStarted):
            self.run_id, self.attempt = event.run_id, event.attempt
        elif isinstance(event, events.RunEnded):
            self.send(summary(event, self.run_id, self.attempt, self.metrics))

    def send(self, body: dict[str, Any]) -> None:
        """POST ``body`` to every URL at once (one never answering does not starve the
        others), all within ``NOTIFY_S``."""
        data = json.dumps(body, default=str).encode()
        deadline = time.monotonic() + NOTIFY_S
        threads = [
            threading.Thread(target=self._one, args=(url, data, deadline), daemon=True)
            for url in self.urls
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) + 0.5)

    def _one(self, url: str, data: bytes, deadline: float) -> None:
        log = self.log or logs.get_logger()
        status, why = post(url, data, deadline)
        if status is not None and status < 300:
            log.info("notified", url=shown(url), status=status)
        else:
            log.warning("notify_failed", url=shown(url), reason=logs.redact(why))


def post(url: str, data: bytes, deadline: float) -> tuple[int | None, str]:
    """POST ``data`` until an answer that is not worth retrying, or ``deadline``:
    (the last HTTP status or None, why it failed)."""
    status: int | None = None
    why = "no time left"
    for pause in (0.0, *BACKOFF_S):
        if time.monotonic() + pause >= deadline:
            break
        time.sleep(pause)
        status, why = _try(url, data, min(TRY_S, deadline - time.monotonic()))
        if status is not None and status not in _RETRIED:
            break
    return status, why


def _request(url: str, data: bytes) -> urllib.request.Request:
    """The POST; a ``user:password@`` in the URL becomes HTTP basic authentication."""
    parts = urlsplit(url)
    headers = {"Content-Type": "application/json", "User-Agent": "nbjob"}
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        netloc = parts.netloc.rpartition("@")[2]
        url = urlunsplit(parts._replace(netloc=netloc))
    return urllib.request.Request(url, data=data, method="POST", headers=headers)


def _try(url: str, data: bytes, timeout: float) -> tuple[int | None, str]:
    request = _request(url, data)
    try:
        with urllib.request.urlopen(request, timeout=max(0.1, timeout)) as reply:
            return int(reply.status), ""
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:  # refused, reset, timed out, a bad URL
        return None, one_line(exc)


def summary(
    ended: events.RunEnded, run_id: str, attempt: int, metrics: dict[str, Any]
) -> dict[str, Any]:
    """The JSON body: the run's end, where its results are, and a ``text`` line."""
    where = ended.output
    body = {
        "run_id": run_id,
        "attempt": attempt,
        "status": str(ended.status),
        "exit_code": ended.exit_code,
        "reason": ended.reason,
        "duration_s": ended.duration_s,
        "metrics": dict(metrics),
        "output": where,
        "stored": ended.stored,
        "notebook": join(where, ended.notebook) if ended.notebook else None,
        "report": join(where, ended.report) if ended.report else None,
    }
    return {**body, "text": text(body)}


def text(body: dict[str, Any]) -> str:
    """One line a chat shows: what ended how, why, the metrics and where the results are."""
    took = f" in {body['duration_s']:.1f} s" if body.get("duration_s") is not None else ""
    line = f"nbjob run {body['run_id']} {body['status']} (exit {body['exit_code']}){took}"
    if body.get("exit_code") and body.get("reason"):
        line += f": {body['reason']}"
    if body["metrics"]:
        line += " · " + ", ".join(f"{k}={v}" for k, v in body["metrics"].items())
    return f"{line} · results: {body['notebook'] or body['output']}"
