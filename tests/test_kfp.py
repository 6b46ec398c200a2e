"""Kubeflow Pipelines v2: the recipe's container component, compiled offline with the kfp SDK,
run with the executor input KFP's driver would give it; executor_output.json read back as the
KFP launcher (the ``ExecutorOutput`` proto) and the SDK (its artifact classes) read it.
"""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import log_events, make_notebook, run_nbjob

kfp = pytest.importorskip("kfp")
from google.protobuf import json_format  # noqa: E402
from kfp import compiler, dsl  # noqa: E402
from kfp.dsl.executor import create_artifact_instance  # noqa: E402
from kfp.pipeline_spec import pipeline_spec_pb2  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "platforms" / "kfp-pipeline.py"
GLUE = (
    "from IPython.display import display\n"
    "def glue(name, value):\n"
    "    display({'application/scrapbook.scrap.json+json':\n"
    "             {'name': name, 'data': value, 'encoder': 'json', 'version': 1}},\n"
    "            raw=True, metadata={'scrapbook': {'name': name}})\n"
)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The recipe's pipeline, compiled by the SDK (offline) to its IR YAML."""
    recipe = runpy.run_path(str(RECIPE))
    target = tmp_path_factory.mktemp("kfp") / "pipeline.yaml"
    compiler.Compiler().compile(recipe["pipeline"], str(target))
    return dict(yaml.safe_load(target.read_text()))


def _executor_input(ir: dict[str, Any], inputs: dict[str, str], root: Path) -> dict[str, Any]:
    """What KFP's driver hands the container for the component's outputs: a file per output
    parameter, a URI per output artifact, and where executor_output.json goes."""
    outputs = ir["components"]["comp-nbjob-notebook"]["outputDefinitions"]
    artifacts = {
        name: {"artifacts": [{"name": name, "type": spec["artifactType"], "metadata": {},
                              "uri": str(root / "artifacts" / name)}]}
        for name, spec in outputs["artifacts"].items()
    }  # fmt: skip
    parameters = {n: {"outputFile": str(root / "parameters" / n)} for n in outputs["parameters"]}
    return {
        "inputs": {"parameterValues": inputs},
        "outputs": {
            "parameters": parameters,
            "artifacts": artifacts,
            "outputFile": str(root / "kfp_outputs" / "executor_output.json"),
        },
    }


def _argv(ir: dict[str, Any], executor_input: dict[str, Any]) -> list[str]:
    """The container's command after ``nbjob`` and its args with KFP's placeholders filled, as
    its launcher fills them."""
    container = ir["deploymentSpec"]["executors"]["exec-nbjob-notebook"]["container"]
    assert container["command"] == ["nbjob", "run"]
    argv = container["command"][1:]
    for arg in container["args"]:
        for name, value in executor_input["inputs"]["parameterValues"].items():
            arg = arg.replace(f"{{{{$.inputs.parameters['{name}']}}}}", value)
        argv.append(arg.replace("{{$}}", json.dumps(executor_input)))
    return argv


def _run(ir: dict[str, Any], tmp_path: Path, cells: list[Any]) -> tuple[int, Any, Path, Any]:
    """nbjob run as the component; its exit code, executor output, outputs' folder, input."""
    nb = make_notebook(tmp_path / "nb.ipynb", cells)
    out = tmp_path / "out"
    given = _executor_input(ir, {"source": str(nb), "output": str(out)}, tmp_path / "kfp")
    result = run_nbjob(*_argv(ir, given), "--run-id", "kfp-1")
    target = Path(given["outputs"]["outputFile"])
    assert target.exists(), result.stderr
    return result.returncode, json.loads(target.read_text()), tmp_path / "kfp", given


def test_the_recipe_compiles_to_a_component_reading_the_executor_input(
    compiled: dict[str, Any],
) -> None:
    container = compiled["deploymentSpec"]["executors"]["exec-nbjob-notebook"]["container"]
    assert container["args"][-2:] == ["--kfp-executor-input", "{{$}}"]
    outputs = compiled["components"]["comp-nbjob-notebook"]["outputDefinitions"]
    kinds = {n: a["artifactType"]["schemaTitle"] for n, a in outputs["artifacts"].items()}
    assert kinds == {"metrics": "system.Metrics", "report": "system.HTML",
                     "summary": "system.Markdown"}  # fmt: skip
    assert set(outputs["parameters"]) == {"status", "exit_code", "results_url"}
    task = compiled["root"]["dag"]["tasks"]["nbjob-notebook"]
    assert task["cachingOptions"] == {}  # a notebook run is never taken from the cache


def test_a_run_writes_the_executor_output_kfp_reads(
    compiled: dict[str, Any], tmp_path: Path
) -> None:
    code, output, root, given_input = _run(compiled, tmp_path, [
        GLUE + "glue('accuracy', 0.5)\nglue('accuracy', 0.9)\nglue('epochs', 3)",
        "glue('note', 'not a number')\nprint('trained')",
    ])  # fmt: skip
    assert code == 0
    proto = json_format.Parse(json.dumps(output), pipeline_spec_pb2.ExecutorOutput())
    assert set(proto.artifacts) == {"metrics", "report", "summary"}
    values = output["parameterValues"]  # the proto holds numbers as doubles: 0.0 == 0
    assert values == {"status": "succeeded", "exit_code": 0, "results_url": str(tmp_path / "out")}
    assert json_format.MessageToDict(proto)["parameterValues"] == values
    for name in ("status", "exit_code", "results_url"):
        assert (root / "parameters" / name).read_text() == str(values[name])

    made = {}  # the SDK's artifacts: the type from the input, the rest as nbjob wrote it
    for name, written in output["artifacts"].items():
        (given,) = given_input["outputs"]["artifacts"][name]["artifacts"]
        (artifact,) = written["artifacts"]
        assert (artifact["name"], artifact["uri"]) == (given["name"], given["uri"])
        made[name] = create_artifact_instance({**given, **artifact})
    assert isinstance(made["metrics"], dsl.Metrics)
    assert made["metrics"].metadata == {"accuracy": 0.9, "epochs": 3}
    assert isinstance(made["report"], dsl.HTML) and isinstance(made["summary"], dsl.Markdown)
    report = Path(made["report"].path).read_text()
    assert report.startswith("<!DOCTYPE html>") and "trained" in report
    summary = Path(made["summary"].path).read_text()
    assert "succeeded (exit 0)" in summary and "| accuracy | 0.9 |" in summary
    logged = [e["path"] for e in log_events(tmp_path / "out") if e["event"] == "kfp_output"]
    assert logged == [given_input["outputs"]["outputFile"]]


def test_a_failing_notebook_still_writes_its_outputs(
    compiled: dict[str, Any], tmp_path: Path
) -> None:
    code, output, root, _ = _run(compiled, tmp_path, ["raise ValueError('bad data')"])
    assert code == 1
    assert output["parameterValues"]["status"] == "failed"
    assert output["parameterValues"]["exit_code"] == 1
    assert "ValueError" in (root / "artifacts" / "summary").read_text()


def test_an_executor_input_that_is_not_one_is_a_usage_error(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", ["open('ran', 'w').close()"])
    result = run_nbjob("run", nb, "--output", tmp_path / "out", "--kfp-executor-input", "{}",
                       cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert "outputs.outputFile" in result.stderr and not (tmp_path / "ran").exists()


def test_only_rank_0_writes_and_remote_uris_map_to_kfp_mounts(tmp_path: Path) -> None:
    from nbjob import config, events
    from nbjob.listeners import kfp as kfp_listener

    target = tmp_path / "executor_output.json"
    given = json.dumps({"outputs": {"outputFile": str(target)}})
    ended = events.RunEnded(events.RunStatus.SUCCEEDED, 0, None, 1.0, "out", True, None, None)
    for rank in (1, 0):
        flags = {"source": "nb.ipynb", "kfp_executor_input": given, "output": str(tmp_path / "o"),
                 "rank": rank, "world_size": 2}  # fmt: skip
        kfp_listener.make(config.resolve(flags, {})).listener.on_event(ended)  # type: ignore[union-attr]
        assert target.exists() == (rank == 0)
    assert json.loads(target.read_text()) == {}
    assert kfp_listener.local_path("gs://b/x/report") == Path("/gcs/b/x/report")
    assert kfp_listener.local_path("minio://b/x") == Path("/minio/b/x")
    assert kfp_listener.local_path("s3://b/x") == Path("/s3/b/x")
    shutil.rmtree(tmp_path / "o", ignore_errors=True)
