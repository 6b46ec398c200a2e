"""Structured logging with structlog, and the scrubbing that keeps credentials out of it.

Every event is one JSON object. It goes to each log file (``executor.log``, always JSON lines)
and to stderr: JSON lines for log collectors, or readable lines when stderr is a terminal.
Cell stream output is logged as it arrives, so ``kubectl logs`` shows it live.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import IO, Any

from nbjob.logplaces import Console, File, Output

# Query parameters that carry signatures or tokens in presigned URLs (AWS SigV2/V4, IBM COS,
# GCS, Azure SAS). Their values are replaced; the rest of the URL stays readable.
_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:x-amz-[a-z-]+|signature|awsaccesskeyid|x-goog-[a-z-]+|sig|se|sp|sv|sr|"
    r"token|access_token))=([^&\s'\"<>]*)"
)
# Environment variables whose values must never be written anywhere, besides the storage
# backends' (each backend declares its own ``credential_env``; ``nbjob.storage`` registers them
# here): the kernel gateway's token.
SECRET_ENV = (
    "NBJOB_GATEWAY_AUTH_TOKEN",
    "JUPYTER_GATEWAY_AUTH_TOKEN",
)
# Modules whose import registers their credentials (``register_secrets``): imported before the
# first scrub, so redaction never depends on what the process happened to import. Their
# declarations import no client library.
_PROVIDERS = ("nbjob.storage",)
# Credential values shorter than this are left alone, here and in ``nbjob.mask``: replacing
# every ``test`` (a local object store's dummy credentials) would garble ordinary output and
# hide nothing worth hiding. Real keys and tokens are far longer.
MIN_SECRET_LENGTH = 8


# Credential values to scrub: read from the environment once by configure() (a run's environment
# does not change; reading it on every redact cost ~1.5 ms a cell). None: not configured yet, so
# every redact reads the environment itself.
_secrets: list[str] | None = None


# Storage backends add theirs (``register_secrets``): a function that picks credential values
# out of an environment, and the names of URL / connection-string parameters that hold secrets
# (matched after any non-word character, e.g. ``AccountKey=`` in an Azure connection string).
_secret_sources: list[Callable[[Mapping[str, str]], Iterable[str]]] = []
_secret_params: set[str] = set()
_QUERY_NAMES = (  # the names in _SECRET_QUERY
    r"x-amz-[a-z-]+|signature|awsaccesskeyid|x-goog-[a-z-]+|sig|se|sp|sv|sr|token|access_token"
)
# Any of those names followed by '=', wherever it stands: matches wherever _SECRET_QUERY does.
_ANY_SECRET_PARAM = re.compile(f"(?i)(?:{_QUERY_NAMES})=")


def register_secrets(
    values: Callable[[Mapping[str, str]], Iterable[str]], params: Iterable[str] = ()
) -> None:
    """Scrub what ``values(environ)`` returns, and the values of the ``params`` parameters."""
    global _SECRET_QUERY, _ANY_SECRET_PARAM
    if values not in _secret_sources:
        _secret_sources.append(values)
    _secret_params.update(params)
    names = "|".join(re.escape(p) for p in sorted(_secret_params, key=len, reverse=True))
    extra = f"|(?<![\\w-])(?:{names})" if names else ""
    _SECRET_QUERY = re.compile(f"(?i)([?&](?:{_QUERY_NAMES}){extra})=([^&;\\s'\"<>]*)")
    _ANY_SECRET_PARAM = re.compile(f"(?i)(?:{_QUERY_NAMES}{'|' + names if names else ''})=")
    if _secrets is not None:
        _secrets[:] = _secret_values()


def _load_providers() -> None:
    for name in _PROVIDERS:
        if name not in sys.modules:
            importlib.import_module(name)


def _secret_values() -> list[str]:
    # Longest first: a connection string is replaced whole before the key inside it.
    return sorted(
        (v for v in secret_values(os.environ) if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True
    )


def secret_values(environ: Mapping[str, str]) -> set[str]:
    """Every credential value in ``environ``: the gateway token's and each storage backend's
    (``nbjob.mask`` masks them in the notebooks and reports nbjob stores)."""
    _load_providers()
    found = {v for k in SECRET_ENV if (v := environ.get(k, ""))}
    found.update(v for source in _secret_sources for v in source(environ))
    return found


def is_secret_param(name: str) -> bool:
    """Whether a URL or connection-string parameter called ``name`` holds a secret: one a
    storage backend declares (a presigned URL's signature or credential, a SAS signature, an
    account key) or a token. Not the parameters ``redact`` also hides that are not secret on
    their own (a SAS's expiry or permissions, ``X-Amz-Date``)."""
    _load_providers()
    low = name.lower()
    return low in ("token", "access_token") or low in {p.lower() for p in _secret_params}


_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://)([^/\s:@]*):([^/\s@]+)@")


def redact(text: str) -> str:
    """Remove signed-URL query secrets and known credential values from ``text``."""
    if _secrets is None:
        _load_providers()  # their secret parameters, before the first pattern is applied
    if "=" in text:
        text = _SECRET_QUERY.sub(r"\1=REDACTED", text)
    if "@" in text:  # user:password@ in any URL
        text = _USERINFO.sub(r"\1\2:REDACTED@", text)
    for secret in _secret_values() if _secrets is None else _secrets:
        if secret in text:
            text = text.replace(secret, "REDACTED")
    return text


def scrub(value: Any) -> Any:
    """``redact`` applied to every string inside dicts, lists and tuples."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def redacted_json(value: Any, **options: Any) -> str:
    """``json.dumps(value, **options)`` with ``redact`` applied to every string in ``value``,
    for a large document (run.json, rewritten at every checkpoint): its text made once, and
    ``value`` walked string by string (``scrub``) only when one pass over that text tells that a
    string in it can need redacting (almost never; 52 ms for a 1000-cell record)."""
    text = json.dumps(value, **options)
    return json.dumps(scrub(value), **options) if _may_need_redacting(text) else text


def _may_need_redacting(text: str) -> bool:
    """True whenever ``redact`` would change a string of the document whose JSON text is
    ``text``. JSON escapes a string character by character, so whatever ``redact`` finds in a
    string is in the text too, escaped the same way: a secret (or its escaped form, with or
    without ``ensure_ascii``), a secret
    parameter's ``name=`` (looked for without the prefix or look-behind ``redact`` needs), a
    ``scheme://user:password@`` (escapes keep the characters its classes accept)."""
    if _secrets is None:
        _load_providers()
    if "=" in text and _ANY_SECRET_PARAM.search(text):
        return True
    if "@" in text and _USERINFO.search(text):
        return True
    secrets = _secret_values() if _secrets is None else _secrets
    return any(s in text or any(f in text for f in _escaped(s)) for s in secrets)


def _escaped(secret: str) -> set[str]:
    """``secret`` as JSON text writes it inside a string, with and without ``ensure_ascii``."""
    return {json.dumps(secret, ensure_ascii=False)[1:-1], json.dumps(secret)[1:-1]}


def _scrub_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    return {k: scrub(v) for k, v in event.items()}


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def parse_iso(text: Any) -> dt.datetime | None:
    """A time as ``now_iso`` writes it (None: not a time, or one without its zone)."""
    try:
        when = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def age_s(text: Any) -> float | None:
    """Seconds since the time ``text`` (``parse_iso``) by this host's clock (None: not one)."""
    when = parse_iso(text)
    return None if when is None else (dt.datetime.now(dt.timezone.utc) - when).total_seconds()


def _timestamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["ts"] = now_iso()
    return event


class Sink:
    """The structlog 'logger': writes each finished event to the files and the console.

    A write that fails is dropped and counted (``dropped``); the first failure of each place
    is told once, as a ``log_write_failed`` warning, to the places that still take events;
    when a file takes events again it first gets a ``log_lines_dropped`` line with the count,
    so a reader knows where the gap is.
    """

    def __init__(self, console: IO[str], console_json: bool, files: Iterable[Output] = ()) -> None:
        self.console = Console(console, console_json)
        self.files = list(files)
        self._told: set[str] = set()  # places whose failure was told
        self._gap: dict[str, int] = {}  # place -> drops when its last gap was told

    @property
    def outputs(self) -> list[Output]:
        return [*self.files, self.console]

    def msg(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, default=str, ensure_ascii=False) + "\n"
        for out in self.outputs:
            self._resume(out)
            out.write(
                line if out is not self.console or self.console.json_lines else _readable(event)
            )
        for out in self.outputs:
            if out.error is not None and out.name not in self._told:
                self._told.add(out.name)
                self._tell(out, "log_write_failed", target=out.name, reason=out.error)

    debug = info = warning = warn = error = critical = exception = log = msg

    def _resume(self, out: Output) -> None:
        """A file that dropped events and may take them again: the gap, said in the file."""
        if out.dropped > self._gap.get(out.name, 0) and out is not self.console and not out.gone:
            gap = out.dropped - self._gap.get(out.name, 0)
            event = _warning("log_lines_dropped", target=out.name, dropped=gap)
            if out.write(json.dumps(event, ensure_ascii=False) + "\n"):
                self._gap[out.name] = out.dropped
            else:
                out.dropped -= 1  # the gap's own line is not one of the run's events

    def _tell(self, failed: Output, name: str, **fields: Any) -> None:
        event = _warning(name, **fields)
        for out in self.outputs:
            if out is failed or out.error is not None:
                continue
            text = json.dumps(event, ensure_ascii=False) + "\n"
            out.write(_readable(event) if out is self.console and not out.json_lines else text)

    def dropped(self) -> dict[str, int]:
        """Events each place could not take, for the places that lost any."""
        return {out.name: out.dropped for out in self.outputs if out.dropped}

    def flush(self) -> None:
        for f in self.files:
            f.flush()

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.files = []


def _warning(name: str, **fields: Any) -> dict[str, Any]:
    return {"event": name, **fields, "level": "warning", "ts": now_iso()}


def _readable(event: dict[str, Any]) -> str:
    name = event.get("event", "")
    if name == "stream":  # a cell's own output, as the user would see it
        return str(event.get("text", ""))
    rest = " ".join(
        f"{k}={v}" for k, v in event.items() if k not in ("event", "ts", "level", "text")
    )
    return f"{event.get('ts', '')[11:23]} {event.get('level', 'info'):7} {name} {rest}\n"


def _render(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> tuple[tuple[MutableMapping[str, Any]], dict[str, Any]]:
    return (event,), {}


_sink: Sink | None = None  # the open run's


def _console() -> Sink:
    """Where nbjob logs when no run's log is open: stderr only."""
    return Sink(sys.stderr, not sys.stderr.isatty())


class _Current:
    """What nbjob's loggers write to: the open run's sink (``configure``), else stderr."""

    def msg(self, event: dict[str, Any]) -> None:
        (_sink or _console()).msg(event)

    debug = info = warning = warn = error = critical = exception = log = msg


_CURRENT = _Current()


def _processors() -> list[Callable[..., Any]]:
    import structlog  # here, not at the top: nbjob starts the kernel before this import

    return [structlog.processors.add_log_level, _timestamp, _scrub_processor, _render]


def configure(
    log_format: str = "auto",
    files: Iterable[Path] = (),
    truncate: bool = False,
    *,
    global_structlog: bool = False,
) -> Sink:
    """Open the run's log: ``files`` receive JSON lines, stderr the ``log_format`` form.

    nbjob's loggers (``get_logger``) write there until ``close``, whatever the process's own
    logging is. ``global_structlog``: also make this structlog's configuration for the whole
    process (the command line does; an embedding program's structlog is left alone).
    """
    global _sink, _secrets
    if _sink is not None:
        _sink.close()
    _secrets = _secret_values()
    console_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    _sink = Sink(sys.stderr, console_json, [File(path, truncate) for path in files])
    if global_structlog:
        import structlog

        structlog.configure(
            processors=_processors(),
            logger_factory=lambda *_: _CURRENT,
            cache_logger_on_first_use=False,
        )
    return _sink


def get_logger(**bound: Any) -> Any:
    """A logger writing to the run's log (``configure``), with ``bound`` in every event; it
    uses nbjob's own processors, never structlog's global configuration."""
    import structlog

    return structlog.wrap_logger(
        _CURRENT,
        processors=_processors(),
        wrapper_class=structlog.BoundLogger,
        context_class=dict,
        cache_logger_on_first_use=False,
        **bound,
    )


def rebind(logger: Any, **values: Any) -> None:
    """Change values bound to ``logger`` (from ``get_logger``) in place, for every holder of
    it: a rerun learns the run id it continues only once the destination was read."""
    logger._context.update(values)


def dropped() -> dict[str, int]:
    """Events the open run's log could not write, by place (a file's path, ``stderr``): a full
    disk, a closed console. Empty when nothing was lost."""
    return _sink.dropped() if _sink is not None else {}


def flush() -> None:
    if _sink is not None:
        _sink.flush()


def close() -> None:
    global _sink
    if _sink is not None:
        _sink.close()
        _sink = None
