"""Settings precedence and platform conventions (FfDL, Kubeflow, Slurm, Kubernetes)."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
from nbjob import config, errors, params, platforms
from nbjob.errors import ParameterError, UsageError
from nbjob.platforms import Identity, _registry
from support import log_events as events
from support import notebook, results
from support import run_nbjob as nbjob


def resolve(flags: dict[str, object] | None = None, **env: str) -> config.Settings:
    return config.resolve({"source": None, **(flags or {})}, env)


def test_flag_beats_environment_beats_default() -> None:
    s = resolve(
        {"source": "a.ipynb", "cell_timeout": "30"}, NBJOB_CELL_TIMEOUT="10", NBJOB_TIMEOUT="100"
    )
    assert (s.cell_timeout, s.timeout, s.stop_grace) == (30.0, 100.0, 10.0)
    assert s.output == f"nbjob-output/{s.run_id}"


def test_source_and_parameters_from_environment() -> None:
    s = resolve(
        NBJOB_SOURCE="s3://b/k.zip",
        NBJOB_PARAMETERS="lr: 0.1\nname: x",
        NBJOB_OUTPUT="s3://b/out",
        NBJOB_REQUIRE_GPU="true",
    )
    assert s.source == "s3://b/k.zip" and s.output == "s3://b/out" and s.require_gpu
    assert params.merge(s.parameters) == {"lr": 0.1, "name": "x"}


def test_parameter_precedence_manifest_file_environment_flags(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text("a: file\nb: file\nc: file\n")
    s = config.resolve(
        {"source": "a.ipynb", "parameters_file": str(file)},
        {"NBJOB_PARAMETERS": '{"b": "env", "c": "env"}'},
        (("c", "flag"),),
    )
    manifest = {"a": "manifest", "z": "manifest"}
    assert params.merge(s.parameters, manifest) == {
        "a": "file",
        "z": "manifest",
        "b": "env",
        "c": "flag",
    }


@pytest.mark.parametrize(
    ("sources", "manifest", "needle"),
    [
        (params.ParameterSources(env_text="[1, 2]"), {}, "mapping"),
        (params.ParameterSources(env_text="a: [1"), {}, "not valid YAML"),
        (params.ParameterSources(env_text="bad-name: 1"), {}, "'bad-name' is not a valid"),
        (params.ParameterSources(flags=(("bad-name", 1),)), {}, "command line: 'bad-name'"),
        (params.ParameterSources(flags=(("class", 1),)), {}, "'class' is not a valid"),
        (params.ParameterSources(), {"1x": 2}, "bundle manifest: '1x'"),
        (params.ParameterSources(file="/no/such/file.yaml"), {}, "parameters file /no/such"),
        (params.ParameterSources(env_text="when: 2024-01-01"), {}, "unsupported type date"),
    ],
)
def test_every_bad_parameter_is_a_parameter_error(
    sources: params.ParameterSources, manifest: dict[str, object], needle: str
) -> None:
    config.resolve({"source": "a.ipynb"}, {})  # collecting them never fails
    with pytest.raises(ParameterError, match=needle) as info:
        params.merge(sources, manifest)
    assert info.value.exit_code == 3 and "\n" not in info.value.reason


def test_bad_values_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="NBJOB_STOP_GRACE"):
        resolve({"source": "a"}, NBJOB_STOP_GRACE="0")
    with pytest.raises(UsageError, match="--log-format"):
        resolve({"source": "a", "log_format": "xml"})
    with pytest.raises(UsageError, match="no notebook source"):
        resolve()


def test_ffdl_learner_conventions(tmp_path: Path) -> None:
    result_dir = tmp_path / "result"
    (result_dir / "_submitted_code").mkdir(parents=True)
    env = {
        "RESULT_DIR": str(result_dir),
        "MODEL_DIR": str(tmp_path / "model"),
        "LOG_DIR": str(tmp_path / "logs"),
        "TRAINING_ID": "training-abc",
        "LEARNER_ID": "1",
    }
    s = config.resolve({}, env)
    assert s.platform.name == "ffdl" and s.source == str(tmp_path / "model")
    assert (s.output, s.run_id, s.log_dir) == (
        str(result_dir),
        "training-abc",
        str(tmp_path / "logs"),
    )
    (result_dir / "_submitted_code" / "model.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    s = config.resolve({}, {**env, "NUM_LEARNERS": "2", "LEARNER_ID": "2"})
    assert s.source == str(result_dir / "_submitted_code" / "model.zip")
    # Learner 2 is rank 1: beside learner 1's canonical results, under ranks/1/.
    assert s.output == str(result_dir / "ranks" / "1") and s.dest == str(result_dir)
    assert s.identity == Identity(rank=1, world_size=2, source="LEARNER_ID")


def test_platform_detectors_are_an_ordered_table() -> None:
    names = [p.name for p in _registry.DETECTION]
    assert names == ["ffdl", "slurm", "volcano", "kubeflow", "ray", "kubernetes", "local"]
    # First match wins: a Slurm job inside Kubernetes is a Slurm job.
    env = {"SLURM_JOB_ID": "7", "KUBERNETES_SERVICE_HOST": "h", "RAY_JOB_ID": "r"}
    assert platforms.resolve(env).name == "slurm"
    assert platforms.resolve({"RAY_JOB_ID": "r"}).run_id == "r"
    # A KubeRay pod is in Kubernetes: it is a Ray job, with Kubernetes' termination file.
    kuberay = platforms.resolve({"KUBERNETES_SERVICE_HOST": "h", "RAY_JOB_SUBMISSION_ID": "s"})
    assert (kuberay.name, kuberay.run_id) == ("ray", "s")
    assert kuberay.termination_log == "/dev/termination-log"
    assert platforms.resolve({"RAY_JOB_ID": "r", "RAY_JOB_SUBMISSION_ID": "s"}).run_id == "s"
    # What a Ray Job's entrypoint gets (checked on a real cluster in tests/clusters/test_ray.py).
    config = {"runtime_env": {"env_vars": {"SECRET": "x"}}, "metadata": {"job_submission_id": "j"}}
    ray = platforms.resolve({"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(config)})
    assert (ray.name, ray.run_id, ray.info) == ("ray", "j", {"RAY_JOB_SUBMISSION_ID": "j"})
    for broken in ("{", "[]", '{"metadata": {"job_submission_id": 3}}', "null"):
        assert platforms.resolve({"RAY_JOB_CONFIG_JSON_ENV_VAR": broken}).name == "local"


def test_attempt_numbers_from_platform_restart_counts() -> None:
    assert platforms.resolve({}).attempt is None
    assert platforms.resolve({"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "2"}).attempt == 3
    assert platforms.resolve({"NBJOB_RESTART_COUNT": "0"}).attempt == 1
    assert platforms.resolve({"NBJOB_RESTART_COUNT": "x"}).attempt is None
    settings = config.resolve(
        {"source": "nb.ipynb"}, {"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "1"}
    )
    assert (settings.attempt, settings.run_id) == (2, "7")
    given = {"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "1", "NBJOB_ATTEMPT": "5"}
    assert config.resolve({"source": "nb.ipynb"}, given).attempt == 5


def test_defaults_are_written_once() -> None:
    """The option table is the Settings dataclass: same names, same defaults."""
    fields = {f.name: f.default for f in config.fields(config.Settings)}
    for opt in config.OPTIONS:
        assert fields[opt.name] == opt.default, opt.name
    s = resolve({"source": "a"})
    assert (s.stop_grace, s.checkpoint_interval, s.stop_signals) == (
        10.0,
        2.0,
        ("SIGTERM", "SIGINT"),
    )
    assert resolve({"source": "a"}, NBJOB_STOP_SIGNALS="term,usr1").stop_signals == (
        "SIGTERM",
        "SIGUSR1",
    )
    with pytest.raises(UsageError, match="NBJOB_STOP_SIGNALS"):
        resolve({"source": "a"}, NBJOB_STOP_SIGNALS="KILL")


@pytest.mark.parametrize(
    ("env", "name", "rank_dir"),
    [
        ({"MASTER_ADDR": "m", "WORLD_SIZE": "4", "RANK": "3"}, "kubeflow", "ranks/3"),
        ({"MASTER_ADDR": "m", "WORLD_SIZE": "1", "RANK": "0"}, "kubeflow", None),
        (
            {
                "TF_CONFIG": json.dumps(
                    {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}
                )
            },
            "kubeflow",
            "ranks/1",
        ),
        ({"SLURM_JOB_ID": "42", "SLURM_NTASKS": "2", "SLURM_PROCID": "1"}, "slurm", "ranks/1"),
        ({"SLURM_JOB_ID": "42", "SLURM_NTASKS": "2", "SLURM_PROCID": "0"}, "slurm", None),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "kubernetes", None),
        ({}, "local", None),
    ],
)
def test_platform_detection(env: dict[str, str], name: str, rank_dir: str | None) -> None:
    assert platforms.resolve(env).name == name
    s = config.resolve({"source": "a.ipynb", "output": "s3://b/p"}, env)
    assert s.output == ("s3://b/p/" + rank_dir if rank_dir else "s3://b/p")
    assert s.dest == "s3://b/p"  # the canonical rank's folder, whatever this rank is


def test_slurm_array_run_id() -> None:
    env = {"SLURM_JOB_ID": "43", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "3"}
    assert config.resolve({"source": "a"}, env).run_id == "40_3"


def test_ffdl_run_without_arguments(tmp_path: Path) -> None:
    """A learner started with no arguments finds its bundle and writes where FfDL collects."""
    src = notebook(tmp_path / "src" / "train.ipynb", "import os\nprint(os.environ['LEARNER_ID'])")
    result_dir, log_dir = tmp_path / "result", tmp_path / "logs"
    (result_dir / "_submitted_code").mkdir(parents=True)
    with zipfile.ZipFile(result_dir / "_submitted_code" / "model.zip", "w") as zf:
        zf.write(src, "train.ipynb")
    proc = nbjob(
        "run",
        env={
            "RESULT_DIR": str(result_dir),
            "LOG_DIR": str(log_dir),
            "MODEL_DIR": str(tmp_path / "model"),
            "TRAINING_ID": "training-7",
            "LEARNER_ID": "1",
            "NUM_LEARNERS": "1",
        },
    )
    assert proc.returncode == 0, proc.stderr
    executed, record = results(result_dir, "train.ipynb")
    assert record["run_id"] == "training-7" and record["platform"]["name"] == "ffdl"
    assert executed.cells[0].outputs[0].text == "1\n"
    assert events(log_dir)[-1]["event"] == "run_end"


ROOT = Path(__file__).parent.parent


def test_docs_document_every_option() -> None:
    # The manual's "Running a notebook" page holds the options table and the exit codes.
    page = (ROOT / "docs" / "running" / "index.md").read_text()
    for opt in config.OPTIONS:
        assert f"`{opt.flag}" in page, opt.flag
        assert opt.env in page, opt.env
    for code in (0, *errors.EXIT_CODES):  # every code nbjob can exit with
        assert f"\n| {code} |" in page, code


def _anchors(markdown: str) -> set[str]:
    """The heading anchors GitHub (and the docs site, mkdocs.yml's slugify) makes."""
    headings = re.findall(r"^#{1,6} +(.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_readme_links_resolve() -> None:
    # README.md is the front page: every relative link leads to a file of the repository and,
    # with a #fragment, to one of its headings (mkdocs build --strict checks those in docs/).
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    relative = [link.partition("#") for link in links if "://" not in link]
    assert ("docs/running/index.md", "#", "exit-codes") in relative
    for path, _, anchor in relative:
        target = ROOT / path
        assert target.exists(), path
        if anchor:
            assert anchor in _anchors(target.read_text()), f"{path}#{anchor}"
