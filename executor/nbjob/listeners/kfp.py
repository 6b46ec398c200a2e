"""Kubeflow Pipelines v2: the run's outputs for a container component, in KFP's own format.

A KFP v2 container component gets its *executor input* through the ``{{$}}`` placeholder
(``--kfp-executor-input '{{$}}'``) and, not being KFP's Python executor, must write
``executor_output.json`` itself where the input says (``outputs.outputFile``; kfp's
``dsl/executor.py`` ``write_executor_output`` is the reference). At the run's end rank 0 writes
it, with the outputs the component declares:

- each ``system.Metrics`` artifact: the scrapbook metrics that are numbers (the last value of
  each name) in its ``metadata``, as ``Metrics.log_metric`` keeps them;
- each ``system.HTML`` artifact: the HTML report, written at the artifact's local path
  (``gs://`` → ``/gcs/``, ``s3://`` → ``/s3/``, ``minio://`` → ``/minio/``, as kfp maps them);
- each ``system.Markdown`` artifact: a summary (status, reason, duration, results, metrics);
- the output parameters ``status``, ``exit_code``, ``results_url``, ``reason`` and ``run_id``
  when declared, in ``parameterValues`` and in each parameter's ``outputFile``.

An inline listener: the file is written before the process exits (its exit code stays the
run's), within ``WRITE_S`` (``kfp_output_late`` past it; executor_output.json comes first, the
report, read from the results, last). A write that fails is logged (``kfp_output_failed``),
never raised into the run.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbjob import events, logs
from nbjob.delivery import one_line
from nbjob.errors import UsageError
from nbjob.listeners.mlflow import metric_value
from nbjob.storage import Storage, join

if TYPE_CHECKING:
    from nbjob.config import Settings

# kfp's mounts of a remote artifact URI (kfp dsl/types/artifact_types.py Artifact._get_path)
MOUNTS = {"gs://": "/gcs/", "s3://": "/s3/", "minio://": "/minio/"}
WRITE_S = 15.0  # the outputs' writing at the run's end, at most
METRICS, HTML, MARKDOWN = "system.Metrics", "system.HTML", "system.Markdown"


def make(settings: Settings) -> events.Subscription:
    """The plug-in's factory: on with ``--kfp-executor-input``; inline, two event types."""
    wanted = frozenset({events.CellMetric, events.RunEnded})
    return events.Subscription(KfpOutput(settings), wanted, name="kfp")


def executor_input(text: str | None) -> dict[str, Any]:
    """The executor input's JSON; ``UsageError`` when it is not one (a missing ``outputFile``)."""
    try:
        data = json.loads(text or "")
    except ValueError as exc:
        raise UsageError(f"--kfp-executor-input: not JSON ({exc})") from None
    if not isinstance(data, dict) or not data.get("outputs", {}).get("outputFile"):
        raise UsageError("--kfp-executor-input: no outputs.outputFile (is it KFP's {{$}}?)")
    return data


def local_path(uri: str) -> Path:
    """Where kfp mounts an artifact's URI in the container (a plain path stays as it is)."""
    for prefix, mount in MOUNTS.items():
        if uri.startswith(prefix):
            return Path(mount + uri[len(prefix) :])
    return Path(uri)


def parameters(settings: Settings, event: events.RunEnded) -> dict[str, Any]:
    """The output parameters nbjob can fill, by the names a component declares."""
    return {
        "status": str(event.status),
        "exit_code": event.exit_code,
        "results_url": event.output,
        "reason": event.reason or "",
        "run_id": settings.run_id,
    }


def summary(settings: Settings, event: events.RunEnded, metrics: Mapping[str, float]) -> str:
    """The Markdown summary KFP's UI shows for the task."""
    rows = [
        ("status", f"{event.status} (exit {event.exit_code})"),
        ("reason", event.reason or ""),
        ("duration", f"{event.duration_s:.1f} s" if event.duration_s is not None else ""),
        ("results", event.output),
        ("notebook", event.notebook or ""),
    ]
    lines = [f"# nbjob run `{settings.run_id}`: {event.status}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in rows if v]
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {_cell(k)} | {v:g} |" for k, v in metrics.items()]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


class KfpOutput:
    """Collects the metrics; at the end writes ``executor_output.json`` (rank 0 only)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.input = executor_input(settings.kfp_executor_input)
        self.metrics: dict[str, float] = {}

    @property
    def log(self) -> Any:
        """The run's log (made when used: the log is set up after the plug-ins are made)."""
        return logs.get_logger(run_id=self.settings.run_id)

    def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.CellMetric):
            value = metric_value(event.value)
            if value is not None:
                self.metrics[event.name] = value
        elif isinstance(event, events.RunEnded) and self.settings.identity.canonical:
            # bounded: the report may come from a slow store; the process must still end
            writer = threading.Thread(target=self._write, args=(event,), name="kfp", daemon=True)
            writer.start()
            writer.join(WRITE_S)
            if writer.is_alive():
                self.log.warning("kfp_output_late", seconds=WRITE_S)

    def _write(self, event: events.RunEnded) -> None:
        try:
            self.write(event)
        except Exception as exc:  # the file KFP reads is lost, never the run's outcome
            self.log.warning("kfp_output_failed", error=one_line(exc))

    def write(self, event: events.RunEnded) -> Path:
        """executor_output.json and the parameters' and summary's files, then the report's
        (read from the results, maybe remote: last)."""
        outputs = self.input["outputs"]
        result: dict[str, Any] = {}
        declared = outputs.get("parameters") or {}
        values = parameters(self.settings, event)
        found = {n: values[n] for n in declared if n in values}
        for name, value in found.items():
            path = declared[name].get("outputFile")
            if path:
                _write(Path(path), str(value).encode())
        if found:
            result["parameterValues"] = found
        pages: list[str] = []  # the HTML artifacts' URIs
        artifacts = {
            name: {
                "artifacts": [self._artifact(a, event, pages) for a in spec.get("artifacts", [])]
            }
            for name, spec in (outputs.get("artifacts") or {}).items()
        }
        if artifacts:
            result["artifacts"] = artifacts
        target = Path(outputs["outputFile"])
        _write(target, json.dumps(result).encode())
        self.log.info("kfp_output", path=str(target), artifacts=sorted(artifacts))
        if pages and event.report:
            page = Storage(self.settings.storage_options).get_bytes(
                join(event.output, event.report)
            )
            for uri in pages:
                if page is not None:
                    _write(local_path(uri), page)
        return target

    def _artifact(
        self, artifact: Mapping[str, Any], event: events.RunEnded, pages: list[str]
    ) -> dict[str, Any]:
        """One output artifact as executor_output.json holds it; the summary written, an HTML
        artifact's URI added to ``pages``."""
        kind = artifact.get("type", {}).get("schemaTitle", "")
        metadata = dict(artifact.get("metadata") or {})
        uri = str(artifact.get("uri", ""))
        if kind == METRICS:
            metadata.update(self.metrics)
        elif kind == HTML:
            pages.append(uri)
        elif kind == MARKDOWN:
            _write(local_path(uri), summary(self.settings, event, self.metrics).encode())
        return {"name": artifact.get("name", ""), "uri": uri, "metadata": metadata}


def _write(path: Path, data: bytes) -> None:
    """``data`` at ``path``, whole (a temporary file renamed), folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)
