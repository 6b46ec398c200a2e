"""Batch-platform conventions turned into plain settings. The only module that knows platforms.

Each platform tells a job where things are through its own environment variables. This module
reads them once and answers: where is the bundle, where do results go, what is the run id,
where do logs go. Nothing else in nbjob looks at them, except ``identity``, which reads the rank
and shard variables.

- FfDL learner: ``RESULT_DIR``, ``MODEL_DIR``, ``LOG_DIR``, ``TRAINING_ID``, ``LEARNER_ID``
  (1-based), ``NUM_LEARNERS``; the submitted zip lies at ``$RESULT_DIR/_submitted_code/model.zip``.
- Kubeflow PyTorchJob / torchrun: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``.
- Kubeflow TFJob: ``TF_CONFIG`` (cluster and task type/index).
- Slurm: ``SLURM_JOB_ID``, ``SLURM_ARRAY_TASK_ID``, ``SLURM_PROCID``, ``SLURM_NTASKS``.
- Kubernetes: ``KUBERNETES_SERVICE_HOST``; the termination message goes to /dev/termination-log.
- Ray Jobs: the submission id, from ``RAY_JOB_SUBMISSION_ID`` (KubeRay) or the job config Ray
  gives the entrypoint (``RAY_JOB_CONFIG_JSON_ENV_VAR``: ``metadata.job_submission_id``; the
  config itself is never recorded: its ``env_vars`` may hold secrets), else ``RAY_JOB_ID``.
- Attempts: ``SLURM_RESTART_COUNT`` (Slurm requeues), ``NBJOB_RESTART_COUNT`` (any platform; a
  Kubernetes Indexed Job passes its pod annotation ``batch.kubernetes.io/job-index-failure-count``
  through the downward API): restarts so far, so the attempt is that + 1.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

DEFAULT_TERMINATION_LOG = "/dev/termination-log"

# Variables recorded in run.json["platform"] when present (never credentials).
_RECORDED = (
    "TRAINING_ID", "LEARNER_ID", "NUM_LEARNERS", "GPU_COUNT",
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "PET_NNODES", "MASTER_ADDR", "MASTER_PORT", "TF_CONFIG",
    "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "SLURM_NTASKS",
    "SLURM_JOB_NODELIST", "SLURM_RESTART_COUNT", "NBJOB_RESTART_COUNT", "JOB_COMPLETION_INDEX",
    "VC_TASK_INDEX", "VK_TASK_INDEX",
    "KUBERNETES_SERVICE_HOST", "HOSTNAME", "RAY_JOB_ID", "RAY_JOB_SUBMISSION_ID",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
)  # fmt: skip


@dataclass(frozen=True)
class Platform:
    """What the platform around this process says, as plain settings (None: not said)."""

    name: str = "local"
    source: str | None = None
    output: str | None = None
    run_id: str | None = None
    log_dir: str | None = None
    # This attempt's number (1-based) when the platform counts restarts.
    attempt: int | None = None
    info: dict[str, str] = field(default_factory=dict)


def write_termination_message(path: str, reason: str) -> None:
    """Kubernetes shows this file's text (at most 4 KB) as the pod's termination message.

    Written only when the file exists and is writable, as it is inside a Kubernetes container.
    """
    if path and os.path.exists(path) and os.access(path, os.W_OK):
        with contextlib.suppress(OSError), open(path, "w", encoding="utf-8") as f:
            f.write(reason[:4000] + "\n")


def _int(env: Mapping[str, str], name: str) -> int | None:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        return None


def attempt(env: Mapping[str, str]) -> int | None:
    """The attempt number a platform's restart count gives (None: it keeps no count)."""
    for name in ("SLURM_RESTART_COUNT", "NBJOB_RESTART_COUNT"):
        if (count := _int(env, name)) is not None and count >= 0:
            return count + 1
    return None


# -- detectors: each looks at the environment and returns its Platform, or None --------------


def _ffdl(env: Mapping[str, str], info: dict[str, str]) -> Platform | None:
    if "RESULT_DIR" not in env or not {"TRAINING_ID", "LEARNER_ID", "MODEL_DIR"} & env.keys():
        return None
    result_dir = env["RESULT_DIR"]
    submitted = os.path.join(result_dir, "_submitted_code", "model.zip")
    return Platform(
        name="ffdl",
        source=submitted if os.path.exists(submitted) else env.get("MODEL_DIR"),
        output=result_dir,
        run_id=env.get("TRAINING_ID"),
        log_dir=env.get("LOG_DIR"),
        info=info,
    )


def _slurm(env: Mapping[str, str], info: dict[str, str]) -> Platform | None:
    if "SLURM_JOB_ID" not in env:
        return None
    run_id = env["SLURM_JOB_ID"]
    if "SLURM_ARRAY_TASK_ID" in env:
        run_id = f"{env.get('SLURM_ARRAY_JOB_ID', run_id)}_{env['SLURM_ARRAY_TASK_ID']}"
    return Platform(name="slurm", run_id=run_id, info=info)


def _kubeflow(env: Mapping[str, str], info: dict[str, str]) -> Platform | None:
    if "TF_CONFIG" in env or ("MASTER_ADDR" in env and "WORLD_SIZE" in env):
        return Platform(name="kubeflow", info=info)
    return None


def _kubernetes(env: Mapping[str, str], info: dict[str, str]) -> Platform | None:
    if "KUBERNETES_SERVICE_HOST" in env:
        return Platform(name="kubernetes", info=info)
    return None


def _ray_submission_id(env: Mapping[str, str]) -> str | None:
    """A Ray Job's submission id: Ray gives its entrypoint only in RAY_JOB_CONFIG_JSON_ENV_VAR."""
    try:
        config = json.loads(env.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "null")
        value = config["metadata"]["job_submission_id"]
    except (ValueError, TypeError, KeyError):
        return None
    return value if isinstance(value, str) and value else None


def _ray(env: Mapping[str, str], info: dict[str, str]) -> Platform | None:
    # The submission id is the one a submitter chooses (``submission_id``); KubeRay's submitter
    # sets RAY_JOB_SUBMISSION_ID, the Jobs API passes it to the entrypoint in its job config.
    run_id = env.get("RAY_JOB_SUBMISSION_ID") or _ray_submission_id(env) or env.get("RAY_JOB_ID")
    if run_id:
        if "RAY_JOB_SUBMISSION_ID" not in info and run_id != env.get("RAY_JOB_ID"):
            info = {**info, "RAY_JOB_SUBMISSION_ID": run_id}
        return Platform(name="ray", run_id=run_id, info=info)
    return None


def _local(env: Mapping[str, str], info: dict[str, str]) -> Platform:
    return Platform(info=info)


Detector = Callable[[Mapping[str, str], dict[str, str]], Platform | None]

# In order: the first detector that answers wins (FfDL runs on Kubernetes, so it comes first).
DETECTORS: tuple[Detector, ...] = (_ffdl, _slurm, _kubeflow, _kubernetes, _ray, _local)


def detect(env: Mapping[str, str] | None = None) -> Platform:
    """Read the platform conventions from ``env`` (default: this process's environment)."""
    env = os.environ if env is None else env
    info = {k: env[k] for k in _RECORDED if k in env}
    for detector in DETECTORS:
        if (platform := detector(env, info)) is not None:
            return replace(platform, attempt=attempt(env))
    raise AssertionError("the last detector always answers")  # pragma: no cover
