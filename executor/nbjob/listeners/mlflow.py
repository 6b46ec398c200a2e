"""MLflow: one MLflow run per nbjob run, which the notebook's own ``mlflow`` calls join.

Turned on by ``MLFLOW_TRACKING_URI`` (or ``--listener mlflow``; the tracking URI is then
mlflow's default). Rank 0 owns the run (the other ranks track nothing): the run is found by its
tag ``nbjob.run_id`` — so a later attempt of the same nbjob run continues it — or made in the
experiment ``--mlflow-experiment`` (else ``MLFLOW_EXPERIMENT_NAME``, else ``Default``), named
after the nbjob run id, tagged with the attempt, rank, platform, job id and source (credentials
removed). Once the kernel is ready it gets ``MLFLOW_RUN_ID`` and ``MLFLOW_TRACKING_URI``:
``mlflow.start_run()`` in the notebook adopts that run. The parameters become params, each
scrapbook metric a metric (a name glued again is the next step), and at the end the run gets
its status (FINISHED, KILLED after a stop, else FAILED) and the executed notebook, the report,
``run.json`` and ``executor.log`` as artifacts under ``nbjob/``.

The tracking server is not the run's: the listener is queued (a slow server never holds up a
cell), the run is looked up in the background while the kernel starts (the kernel's start waits
``OPEN_WAIT_S`` for it at most), the first error is logged once (``mlflow_unavailable``) and
ends the tracking, and at the end the queue gets a bounded time to drain. mlflow's own retry
settings apply (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``).
"""

from __future__ import annotations

import math
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nbjob import events, logs
from nbjob.delivery import one_line
from nbjob.layout import LOG, RUN_JSON
from nbjob.storage import Storage, join

if TYPE_CHECKING:
    from nbjob.config import Settings

CONNECT_S = 5.0  # the first connection to the tracking server, at most
OPEN_WAIT_S = 30.0  # how long the first cell waits for the MLflow run (importing mlflow: 1-8 s)
DEFAULT_EXPERIMENT = "Default"
ARTIFACT_PATH = "nbjob"  # where the run's results go among the MLflow run's artifacts
TAG = "nbjob.run_id"  # the tag a later attempt finds the MLflow run by
PARAM_CHARS = 6000  # MLflow's limit on a param's value
# nbjob's end → MLflow's: a stop is KILLED, any other failure FAILED
STATUS = {events.RunStatus.SUCCEEDED: "FINISHED", events.RunStatus.STOPPED: "KILLED"}
_KEY = re.compile(r"[^\w\-. /]")  # characters MLflow refuses in a metric's or param's name


def make(settings: Settings) -> events.Subscription:
    """The plug-in's factory (``--listener mlflow``): queued, only the events it uses."""
    wanted = frozenset({events.RunStarted, events.CellMetric, events.RunEnded})
    return events.Subscription(MlflowListener(settings), wanted, queued=True, name="mlflow")


def tags(settings: Settings) -> dict[str, str]:
    """The tags of the MLflow run: who ran it, where, from what (credentials removed)."""
    placed = settings.platform
    found = {
        TAG: settings.run_id,
        "nbjob.rank": str(settings.identity.rank),
        "nbjob.platform": placed.name,
        "nbjob.source": logs.redact(settings.source),
        "nbjob.output": logs.redact(settings.dest or settings.output),
        "mlflow.source.name": logs.redact(settings.source),  # the UI's "Source"
        "mlflow.source.type": "NOTEBOOK",
    }
    if placed.run_id:
        found["nbjob.job_id"] = placed.run_id
    if settings.attempt:
        found["nbjob.attempt"] = str(settings.attempt)
    return found


def metric_value(value: Any) -> float | None:
    """A scrapbook value as an MLflow metric: a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def key(name: str) -> str:
    """``name`` as MLflow accepts it (letters, digits, ``_ - . /`` and spaces)."""
    return _KEY.sub("_", str(name))[:250] or "_"


def reachable(uri: str | None, timeout: float = CONNECT_S) -> None:
    """``OSError`` when an http(s) tracking URI's port takes no connection: mlflow's client
    would retry for minutes (its backoff) before saying so."""
    parts = urlsplit(uri or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    socket.create_connection((parts.hostname, port), timeout=timeout).close()


class MlflowListener:
    """nbjob's run as one MLflow run (see the module's docstring)."""

    def __init__(
        self, settings: Settings, env: Mapping[str, str] | None = None, client: Any = None
    ) -> None:
        env = os.environ if env is None else env
        self.settings = settings
        self.uri = env.get("MLFLOW_TRACKING_URI") or None
        self.experiment = (
            settings.mlflow_experiment or env.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        )
        self.owner = settings.identity.canonical  # rank 0 owns the run
        self.client = client
        self.run_id: str | None = None
        self.params: dict[str, str] = {}  # those the MLflow run already has (an earlier attempt)
        self.steps: dict[str, int] = {}  # the next step of each metric
        self.error: str | None = None
        self._warned = threading.Lock()
        self._said = False
        self._opened = threading.Event()
        if self.owner:
            threading.Thread(target=self._open, name="mlflow run", daemon=True).start()
        else:
            self._opened.set()

    # -- the MLflow run, found or made while the kernel starts ---------------------------------

    def _open(self) -> None:
        try:
            if self.client is None:
                reachable(self.uri)  # a server that is down: known in ms, not after retries
                from mlflow.tracking import MlflowClient  # ~1 s to import: off the main thread

                self.client = MlflowClient(self.uri)
            self.run_id = self._find_or_create()
        except Exception as exc:  # the server's problem, never the run's
            self.error = one_line(exc)
        finally:
            self._opened.set()

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(self.experiment))
        except Exception:  # made meanwhile by another run
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return str(found.experiment_id)

    def _find_or_create(self) -> str:
        """The MLflow run tagged with this nbjob run's id (an earlier attempt's), else a new one."""
        experiment = self._experiment_id()
        quoted = self.settings.run_id.replace("'", "\\'")
        runs = self.client.search_runs(
            [experiment], filter_string=f"tags.`{TAG}` = '{quoted}'", max_results=1
        )
        if runs:
            run = runs[0]
            self.params = dict(run.data.params)
            self.steps = {k: self._next_step(run.info.run_id, k) for k in run.data.metrics}
            self.client.update_run(run.info.run_id, status="RUNNING")
            self.client.set_tag(run.info.run_id, "nbjob.rank", str(self.settings.identity.rank))
            return str(run.info.run_id)
        made = self.client.create_run(
            experiment, run_name=self.settings.run_id, tags=tags(self.settings)
        )
        return str(made.info.run_id)

    def _next_step(self, run_id: str, name: str) -> int:
        """The step after the last one an earlier attempt logged for metric ``name``."""
        return 1 + max((m.step for m in self.client.get_metric_history(run_id, name)), default=-1)

    def kernel_env(self) -> dict[str, str]:
        """What the kernel gets once it is ready: the MLflow run the notebook's calls join."""
        if not self._opened.wait(OPEN_WAIT_S):
            self._warn(f"no answer from the tracking server in {OPEN_WAIT_S:g} s", "mlflow_slow")
            return {}
        if self.run_id is None:
            self._warn(self.error)
            return {}
        env = {"MLFLOW_RUN_ID": self.run_id, "MLFLOW_EXPERIMENT_NAME": self.experiment}
        if self.uri:
            env["MLFLOW_TRACKING_URI"] = self.uri
        logs.get_logger(run_id=self.settings.run_id).info(
            "mlflow_run", mlflow_run_id=self.run_id, experiment=self.experiment
        )
        return env

    def _warn(self, error: str | None, event: str = "mlflow_unavailable") -> None:
        """Once per run: tracking is off from here, the run goes on."""
        with self._warned:
            if self._said:
                return
            self._said = True
        log = logs.get_logger(run_id=self.settings.run_id)
        log.warning(event, error=error, uri=logs.redact(self.uri or "default"))

    # -- the events (on the listener's own thread) ---------------------------------------------

    def on_event(self, event: events.Event) -> None:
        if not self.owner:
            return
        self._opened.wait()  # the listener's own thread: the run's end abandons it at worst
        if self.run_id is None or (self.error and not isinstance(event, events.RunEnded)):
            self._warn(self.error)
            return
        try:
            if isinstance(event, events.CellMetric):
                self._metric(event)
            elif isinstance(event, events.RunStarted):
                self._started(event)
            elif isinstance(event, events.RunEnded):
                self._ended(event)
        except Exception as exc:
            self.error = one_line(exc)
            self._warn(self.error)

    def _started(self, event: events.RunStarted) -> None:
        from mlflow.entities import Param, RunTag

        params = [
            Param(key(k), text)
            for k, v in event.parameters.items()
            if (text := str(v)[:PARAM_CHARS]) and self.params.get(key(k)) is None
        ]
        found = [RunTag("nbjob.attempt", str(event.attempt))]
        changed = [k for k, v in event.parameters.items() if self.params.get(key(k)) not in
                   (None, str(v)[:PARAM_CHARS])]  # fmt: skip
        if changed:  # an MLflow param never changes: the new values are tags
            found += [RunTag(f"nbjob.param.{key(k)}", str(event.parameters[k])[:5000])
                      for k in changed]  # fmt: skip
        for start in range(0, len(params), 100):  # MLflow takes 100 params a request
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        self.client.log_batch(self.run_id, tags=found)

    def _metric(self, event: events.CellMetric) -> None:
        value = metric_value(event.value)
        if value is None:
            return
        name = key(event.name)
        step = self.steps.get(name, 0)
        self.steps[name] = step + 1
        self.client.log_metric(self.run_id, name, value, int(time.time() * 1000), step)

    def _ended(self, event: events.RunEnded) -> None:
        """The status first (it is what matters), then the results as artifacts."""
        from mlflow.entities import RunTag

        found = {"nbjob.status": str(event.status), "nbjob.exit_code": str(event.exit_code)}
        if event.reason:
            found["nbjob.reason"] = logs.redact(event.reason)[:5000]
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in found.items()])
        self.client.set_terminated(self.run_id, STATUS.get(event.status, "FAILED"))
        names = [n for n in (event.notebook, event.report, RUN_JSON, LOG) if n]
        storage = Storage(self.settings.storage_options)
        with tempfile.TemporaryDirectory(prefix="nbjob-mlflow-") as tmp:
            for name in names:
                data = storage.get_bytes(join(event.output, name))
                if data is None:
                    continue
                path = Path(tmp) / Path(name).name
                path.write_bytes(data)
                self.client.log_artifact(self.run_id, str(path), ARTIFACT_PATH)
