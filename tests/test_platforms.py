"""Platforms as one package: detection order, Volcano, launchers, plug-ins, recorded variables.

The plug-in tests install a real distribution (a module, ``NAME.dist-info/METADATA`` and
``entry_points.txt``) in a temporary folder and put it on the import path, as ``pip install``
would put it in site-packages.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from nbjob import config, platforms
from support import make_notebook, read_json
from support import run_nbjob as nbjob

KUBERNETES = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "job-0"}


def volcano(**more: str) -> dict[str, str]:
    """What a Volcano Job's pod sees: Kubernetes, the env plugin, the svc plugin."""
    env = {**KUBERNETES, "VC_TASK_INDEX": "1", "VK_TASK_INDEX": "1", "VC_WORKER_NUM": "2"}
    return {**env, "VC_WORKER_HOSTS": "job-worker-0.job,job-worker-1.job", **more}


# -- the built-in platforms ---------------------------------------------------------------------


def test_a_volcano_job_is_volcano_not_kubernetes() -> None:
    placed = platforms.resolve(volcano())
    assert (placed.name, placed.identity.rank, placed.identity.world_size) == ("volcano", 1, 2)
    assert placed.identity.source == "VC_TASK_INDEX"
    assert placed.info["VC_WORKER_NUM"] == "2" and placed.info["VK_TASK_INDEX"] == "1"
    assert placed.termination_log == "/dev/termination-log"
    # Only the older name (VK_TASK_INDEX), or only the svc plugin (no env plugin): still Volcano.
    assert platforms.resolve({**KUBERNETES, "VK_TASK_INDEX": "0"}).name == "volcano"
    svc_only = {**KUBERNETES, "VC_MASTER_NUM": "1", "VC_MASTER_HOSTS": "job-master-0.job"}
    assert platforms.resolve(svc_only).name == "volcano"
    # A variable that merely looks like the svc plugin's does not make a Volcano job.
    assert platforms.resolve({**KUBERNETES, "VC_WORKER_NUM": "2"}).name == "kubernetes"


def test_volcano_pytorch_plugin_is_volcano_and_its_rank_is_torchrun_s() -> None:
    """Volcano's pytorch plugin sets Kubeflow's variables too: the platform is Volcano, and
    the launcher's RANK overrides the platform's index, as the documented order says."""
    env = volcano(MASTER_ADDR="job-master-0.job", MASTER_PORT="23456", WORLD_SIZE="3", RANK="2")
    placed = platforms.resolve(env)
    assert placed.name == "volcano"
    assert (placed.identity.rank, placed.identity.world_size, placed.identity.source) == (
        2,
        3,
        "RANK",
    )


@pytest.mark.parametrize(
    ("env", "name"),
    [
        # FfDL first, as before: its learners run on Kubernetes, maybe through Volcano.
        ({"RESULT_DIR": "/r", "TRAINING_ID": "t", "VC_TASK_INDEX": "0", **KUBERNETES}, "ffdl"),
        ({"SLURM_JOB_ID": "7", "VC_TASK_INDEX": "0"}, "slurm"),
        ({"MASTER_ADDR": "m", "WORLD_SIZE": "2", "RANK": "0", **KUBERNETES}, "kubeflow"),
        (KUBERNETES, "kubernetes"),
        ({"RAY_JOB_ID": "r"}, "ray"),
        ({}, "local"),
    ],
)
def test_the_most_specific_platform_wins(env: dict[str, str], name: str) -> None:
    assert platforms.resolve(env).name == name


def test_the_termination_message_file_is_the_platform_s(tmp_path: Path) -> None:
    assert platforms.resolve(KUBERNETES).termination_log == "/dev/termination-log"
    assert platforms.resolve({"SLURM_JOB_ID": "7"}).termination_log is None
    assert platforms.resolve({}).termination_log is None
    s = config.resolve({"source": "a.ipynb"}, KUBERNETES)
    assert s.termination_log == "/dev/termination-log"
    given = str(tmp_path / "reason")
    assert (
        config.resolve({"source": "a.ipynb", "termination_log": given}, KUBERNETES).termination_log
        == given
    )
    assert (
        config.resolve({"source": "a.ipynb"}, {"NBJOB_TERMINATION_LOG": given}).termination_log
        == given
    )


def test_recorded_variables_are_the_platforms_and_never_credentials() -> None:
    env = {
        **volcano(),
        "CUDA_VISIBLE_DEVICES": "0,1",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": {"env_vars": {"X": "s3cr3t"}}}),
        "UNRELATED": "x",
    }
    info = platforms.resolve(env).info
    assert info["CUDA_VISIBLE_DEVICES"] == "0,1" and info["HOSTNAME"] == "job-0"
    assert "UNRELATED" not in info and "s3cr3t" not in json.dumps(info)


def test_public_surface() -> None:
    assert sorted(platforms.__all__) == [
        "ENTRY_POINT_GROUP",
        "Identity",
        "KUBERNETES_TERMINATION_LOG",
        "Placement",
        "Platform",
        "resolve",
        "write_termination_message",
    ]


# -- plug-ins -----------------------------------------------------------------------------------

PLUGIN = '''
from nbjob.platforms import Identity, Platform


class Acme(Platform):
    """Acme's scheduler, which runs on Kubernetes."""

    name = "acme"
    recorded = ("ACME_JOB", "ACME_QUEUE", "ACME_API_TOKEN")

    def detected(self):
        return "ACME_JOB" in self.env

    def run_id(self):
        return self.env["ACME_JOB"]

    def rank(self):
        if "ACME_INDEX" not in self.env:
            return None
        return Identity(int(self.env["ACME_INDEX"]), int(self.env["ACME_COUNT"]), "ACME_INDEX")

    def attempt(self):
        return int(self.env["ACME_TRY"]) if "ACME_TRY" in self.env else None


Acme.termination_log = {termination!r}
'''


def install(site: Path, name: str, entry_points: str, module: str | None = None) -> Path:
    """A distribution in ``site``, as an installer leaves it: module, METADATA, entry points."""
    site.mkdir(parents=True, exist_ok=True)
    if module is not None:
        (site / f"{name}.py").write_text(textwrap.dedent(module))
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[nbjob.platforms]\n{entry_points}\n")
    return site


@pytest.fixture
def acme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The Acme plug-in installed on sys.path; its termination-message file, made."""
    termination = tmp_path / "acme-termination"
    termination.write_text("")
    module = PLUGIN.format(termination=str(termination))
    site = install(tmp_path / "site", "acme_nbjob", "acme = acme_nbjob:Acme", module)
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("acme_nbjob", None)


def test_a_plug_in_platform_is_asked_before_the_built_in_ones(acme: Path) -> None:
    env = {**KUBERNETES, "ACME_JOB": "acme-42", "ACME_INDEX": "1", "ACME_COUNT": "2"}
    env |= {"ACME_API_TOKEN": "s3cr3t", "ACME_QUEUE": "gpu", "ACME_TRY": "3"}
    env |= {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_RESTART_COUNT": "0"}
    placed = platforms.resolve(env)
    assert (placed.name, placed.run_id, placed.attempt) == ("acme", "acme-42", 3)
    assert placed.identity == platforms.Identity(1, 2, "ACME_INDEX")
    assert placed.info["ACME_QUEUE"] == "gpu" and "ACME_API_TOKEN" not in placed.info
    # Its rank and attempt come before the built-in platforms' (Slurm's here); the flags and
    # the launchers still come before any platform's rank.
    assert platforms.resolve({**env, "RANK": "0", "WORLD_SIZE": "4"}).identity.source == "RANK"
    # Not detected: the built-in platforms answer as without it.
    assert platforms.resolve(KUBERNETES).name == "kubernetes"


def test_a_broken_plug_in_is_left_out_with_a_warning(acme: Path, tmp_path: Path) -> None:
    broken = install(tmp_path / "broken", "broken_nbjob", "broken = no_such_module:Nope")
    sys.path.insert(0, str(broken))
    try:
        with pytest.warns(UserWarning, match="'broken' not loaded"):
            placed = platforms.resolve({"ACME_JOB": "a"})
    finally:
        sys.path.remove(str(broken))
    assert placed.name == "acme"


def test_a_run_on_a_plug_in_platform_records_it(acme: Path, tmp_path: Path) -> None:
    """``nbjob run`` finds the plug-in on PYTHONPATH: run.json names it, and the reason of the
    failed run goes to the plug-in's termination-message file."""
    nb = make_notebook(tmp_path / "nb.ipynb", [("code", "raise ValueError('acme')")])
    paths = [str(acme), os.environ.get("PYTHONPATH", "")]
    env = {"PYTHONPATH": os.pathsep.join(p for p in paths if p), "ACME_JOB": "acme-7"}
    proc = nbjob("run", nb, "--output", tmp_path / "out", env=env)
    assert proc.returncode == 1, proc.stderr
    record = read_json(tmp_path / "out" / "run.json")
    assert record["platform"]["name"] == "acme" and record["run_id"] == "acme-7"
    assert record["platform"]["ACME_JOB"] == "acme-7"
    reason = (tmp_path / "acme-termination").read_text().strip()
    assert reason == "In [1] (cell 0) raised ValueError: acme"


def test_a_volcano_run_is_recorded_as_volcano(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", [("code", "print('hi')")])
    env = {"VC_TASK_INDEX": "0", "VC_WORKER_NUM": "1", "VC_WORKER_HOSTS": "w-0"}
    proc = nbjob("run", nb, "--output", tmp_path / "out", env=env)
    assert proc.returncode == 0, proc.stderr
    record = read_json(tmp_path / "out" / "run.json")
    assert record["platform"]["name"] == "volcano"
    assert record["platform"]["VC_TASK_INDEX"] == "0"
    assert record["identity"] == {
        "rank": 0,
        "world_size": 1,
        "source": "VC_TASK_INDEX",
        "canonical": True,
    }
