"""MLflow tracking: one MLflow run per nbjob run, against a real ``mlflow server`` on loopback.

The server (sqlite in a temp folder, ``--serve-artifacts``) is started once for the module; each
test reads what landed with mlflow's own client, as a user looking at the UI would: the
parameters, the notebook's own ``mlflow.log_metric`` and nbjob's scrapbook metric in one run,
the results as artifacts, the status; a second attempt continues the run; a tracking server
killed mid-run (a spare one, started with the first) leaves the exit code as it was.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import (
    ServerProcess,
    free_port,
    log_events,
    make_notebook,
    read_json,
    run_nbjob,
    serves,
    start_nbjob,
    start_server,
    wait_ready,
    wait_until,
)

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient

GLUE = (
    "from IPython.display import display\n"
    "def glue(name, value):\n"
    "    display({'application/scrapbook.scrap.json+json':\n"
    "             {'name': name, 'data': value, 'encoder': 'json', 'version': 1}},\n"
    "            raw=True, metadata={'scrapbook': {'name': name}})\n"
)
OWN_RUN = "import mlflow\nrun = mlflow.start_run()\nmlflow.log_metric('own_loss', 0.25)"


@dataclass
class Tracking:
    """A tracking server the tests started: its URL and process."""

    url: str
    server: ServerProcess


def _start(folder: Path) -> Tracking:
    """``mlflow server`` on a free loopback port, sqlite and artifacts in ``folder`` (started,
    not waited for)."""
    port = free_port()
    argv = [
        Path(sys.executable).with_name("mlflow"), "server", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", folder / "artifacts", "--serve-artifacts",
    ]  # fmt: skip
    server = start_server("mlflow", argv, folder / "mlflow.log", group=True)  # its workers too
    return Tracking(f"http://127.0.0.1:{port}", server)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Tracking, Tracking]]:
    """The module's tracking server and a spare one the last test kills, started together
    (each takes 10-40 s to start on a loaded machine)."""
    started = [_start(tmp_path_factory.mktemp("mlflow")) for _ in range(2)]
    try:
        for t in started:
            wait_ready(functools.partial(serves, t.url + "/health"), 120, "mlflow ready", t.server)
        yield started[0], started[1]
    finally:
        for t in started:
            t.server.stop(grace=5)


@pytest.fixture(scope="module")
def tracking(servers: tuple[Tracking, Tracking]) -> str:
    return servers[0].url


def _env(url: str, experiment: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": url, "MLFLOW_EXPERIMENT_NAME": experiment}


def _runs(url: str, experiment: str) -> list[Any]:
    client = MlflowClient(url)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def _one(url: str, experiment: str, stderr: str) -> Any:
    """The experiment's one run (the notebook's own ``start_run()`` joined nbjob's)."""
    runs = _runs(url, experiment)
    assert len(runs) == 1, [line for line in stderr.splitlines() if "mlflow" in line]
    return runs[0]


def _artifacts(url: str, run_id: str) -> set[str]:
    return {f.path for f in MlflowClient(url).list_artifacts(run_id, "nbjob")}


def test_a_run_shows_params_both_metrics_artifacts_and_finished(
    tracking: str, tmp_path: Path
) -> None:
    nb = make_notebook(
        tmp_path / "nb.ipynb",
        [("code", "lr = 0.1\nepochs = 2", ["parameters"]), OWN_RUN,
         GLUE + "for acc in (0.5, 0.75, 0.9):\n    glue('accuracy', acc)", "glue('note', 'text')"],
    )  # fmt: skip
    out = tmp_path / "out"
    result = run_nbjob("run", nb, "--output", out, "--run-id", "mlf-ok", "-p", "lr", "0.2",
                       env=_env(tracking, "nbjob-tests"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run,) = [r for r in _runs(tracking, "nbjob-tests") if r.info.run_name == "mlf-ok"]
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.2"}  # the parameters given, as run.json's
    assert run.data.metrics == {"own_loss": 0.25, "accuracy": 0.9}  # 'note' is no number
    history = MlflowClient(tracking).get_metric_history(run.info.run_id, "accuracy")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.75), (2, 0.9)]
    tags = run.data.tags
    assert tags["nbjob.run_id"] == "mlf-ok" and tags["nbjob.attempt"] == "1"
    assert (tags["nbjob.rank"], tags["nbjob.platform"], tags["nbjob.status"]) == (
        "0", "local", "succeeded")  # fmt: skip
    assert tags["nbjob.source"] == tags["mlflow.source.name"] == str(nb)
    assert _artifacts(tracking, run.info.run_id) == {
        "nbjob/nb.ipynb", "nbjob/nb.html", "nbjob/run.json", "nbjob/executor.log"}  # fmt: skip
    logged = [e for e in log_events(out) if e["event"].startswith("mlflow")]
    assert [e["event"] for e in logged] == ["mlflow_run"]


def test_a_failing_notebook_is_failed_and_a_second_attempt_continues_the_run(
    tracking: str, tmp_path: Path
) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", [OWN_RUN, GLUE + "glue('step', 1)", "1 / 0"])
    out, env = tmp_path / "out", _env(tracking, "nbjob-attempts")
    first = run_nbjob("run", nb, "--output", out, "--run-id", "mlf-again", env=env)
    assert first.returncode == 1, first.stderr
    run = _one(tracking, "nbjob-attempts", first.stderr)
    assert (run.info.status, run.data.tags["nbjob.status"]) == ("FAILED", "failed")

    fixed = make_notebook(tmp_path / "nb.ipynb", [OWN_RUN, GLUE + "glue('step', 2)"])
    second = run_nbjob("run", fixed, "--output", out, "--run-id", "mlf-again", env=env)
    assert second.returncode == 0, second.stderr
    again = _one(tracking, "nbjob-attempts", second.stderr)
    assert again.info.run_id == run.info.run_id
    assert (again.info.status, again.data.tags["nbjob.attempt"]) == ("FINISHED", "2")
    assert read_json(out / "run.json")["attempt"] == 2
    steps = MlflowClient(tracking).get_metric_history(run.info.run_id, "step")
    assert [(m.step, m.value) for m in steps] == [(0, 1.0), (1, 2.0)]  # the history goes on


def test_a_stopped_run_is_killed(tracking: str, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    nb = make_notebook(
        tmp_path / "nb.ipynb",
        [OWN_RUN, f"open({str(marker)!r}, 'w').close()\nimport time\ntime.sleep(60)"],
    )
    proc = start_nbjob("run", nb, "--output", tmp_path / "out", "--run-id", "mlf-stop",
                       env=_env(tracking, "nbjob-stop"))  # fmt: skip
    wait_until(marker.exists, timeout=90)
    proc.proc.send_signal(signal.SIGTERM)
    result = proc.wait(60)
    assert result.returncode == 143, result.stderr
    run = _one(tracking, "nbjob-stop", result.stderr)
    assert (run.info.status, run.data.tags["nbjob.status"]) == ("KILLED", "stopped")
    assert run.data.metrics == {"own_loss": 0.25}


def test_a_tracking_server_killed_mid_run_leaves_the_outcome(
    servers: tuple[Tracking, Tracking], tmp_path: Path
) -> None:
    spare = servers[1]
    marker, go = tmp_path / "started", tmp_path / "go"
    nb = make_notebook(
        tmp_path / "nb.ipynb",
        [GLUE + "glue('before', 1)", f"open({str(marker)!r}, 'w').close()",
         f"import os, time\nwhile not os.path.exists({str(go)!r}):\n    time.sleep(0.1)",
         "glue('after', 2)", "1 / 0"],
    )  # fmt: skip
    out = tmp_path / "out"
    proc = start_nbjob("run", nb, "--output", out, "--run-id", "mlf-down",
                       env=_env(spare.url, "nbjob-down"))  # fmt: skip
    wait_until(marker.exists, timeout=90)
    os.killpg(spare.server.pid, signal.SIGKILL)  # the server and its workers, at once
    spare.server.proc.wait(10)
    go.touch()
    result = proc.wait(90)
    assert result.returncode == 1, result.stderr  # the notebook's own failure, as without MLflow
    record = read_json(out / "run.json")
    assert (record["status"], record["metrics"]) == ("failed", {"before": 1, "after": 2})
    said = [e["event"] for e in log_events(out) if e["event"].startswith(("mlflow_", "listener_"))]
    assert said[0] == "mlflow_run" and said[1:]  # the tracking's loss is in the log
    assert set(said[1:]) <= {"mlflow_unavailable", "listener_abandoned"}, said


def test_a_tracking_server_down_from_the_start_is_one_warning(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", [GLUE + "glue('accuracy', 0.5)", "print('done')"])
    out, closed = tmp_path / "out", f"http://127.0.0.1:{free_port()}"
    result = run_nbjob("run", nb, "--output", out, env=_env(closed, "nowhere"))
    assert result.returncode == 0, result.stderr
    warned = [e for e in log_events(out) if e["event"].startswith(("mlflow", "listener"))]
    assert [e["event"] for e in warned] == ["mlflow_unavailable"]
    assert "ConnectionRefusedError" in warned[0]["error"] and warned[0]["uri"] == closed
    assert read_json(out / "run.json")["status"] == "succeeded"


def test_tags_hold_no_credentials_and_only_numbers_are_metrics() -> None:
    from nbjob import config
    from nbjob.listeners import mlflow as listener

    signed = "https://b.s3.amazonaws.com/nb.zip?X-Amz-Signature=abc123&X-Amz-Credential=AKIA"
    for source in (signed, "https://u:secret@store.example/nb.zip"):
        flags = {"source": source, "output": "s3://b/runs/r1", "run_id": "r1", "attempt": 2}
        made = listener.tags(config.resolve(flags, {}))
        assert "abc123" not in str(made) and "secret" not in str(made), made
        assert made["nbjob.source"].startswith("https://")
    assert (made["nbjob.run_id"], made["nbjob.attempt"], made["nbjob.rank"]) == ("r1", "2", "0")
    assert [listener.metric_value(v) for v in (0.5, 3, True, "1", float("nan"), None)] == [
        0.5, 3.0, None, None, None, None]  # fmt: skip
    assert listener.key("loss@val[1]") == "loss_val_1_"


def test_mlflow_is_on_with_a_tracking_uri_and_kfp_with_an_executor_input() -> None:
    from nbjob import config
    from nbjob.listeners import plugins

    settings = config.resolve({"source": "nb.ipynb", "listeners": "mlflow,other"}, {})
    assert plugins.wanted(settings, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}) == [
        "mlflow", "other"]  # fmt: skip
    plain = config.resolve({"source": "nb.ipynb"}, {})
    assert plugins.wanted(plain, {}) == []
    assert plugins.wanted(plain, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}) == ["mlflow"]
    off = config.resolve({"source": "nb.ipynb"}, {"NBJOB_NO_MLFLOW": "1"})
    assert plugins.wanted(off, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}) == []
    kfp = config.resolve({"source": "nb.ipynb"}, {"NBJOB_KFP_EXECUTOR_INPUT": "{}"})
    assert plugins.wanted(kfp, {}) == ["kfp"]
    assert {"mlflow", "kfp"} <= set(plugins.installed())  # without entry-point metadata too
