"""Which rank of a multi-process job this process is, and which shard of a sweep.

One resolver, one fixed order; the first source that answers wins and is recorded in run.json
(``identity.source``):

1. ``--rank`` / ``--world-size`` (``NBJOB_RANK`` / ``NBJOB_WORLD_SIZE``)
2. ``RANK`` / ``WORLD_SIZE`` (Kubeflow PyTorchJob, torchrun). Without ``LOCAL_RANK`` nbjob runs
   once per node: ``RANK`` is the node rank and the node count is ``PET_NNODES`` when set.
3. ``TF_CONFIG`` (Kubeflow TFJob): tasks ordered chief, master, worker, ps, evaluator; the
   chief (or master) is rank 0, else worker 0.
4. ``SLURM_PROCID`` / ``SLURM_NTASKS`` (``srun``)
5. ``VC_TASK_INDEX`` (or ``VK_TASK_INDEX``; Volcano), world size from the svc plugin's single
   ``VC_<TASK>_NUM`` (unknown with several tasks)
6. ``LEARNER_ID`` / ``NUM_LEARNERS`` (FfDL; learner 1 is rank 0)
7. none: rank 0 of 1.

Rank 0 is the canonical rank: it writes the results at the top of the destination. A shard
index (``--shard``, then ``SLURM_ARRAY_TASK_ID``, then ``JOB_COMPLETION_INDEX``) is not a rank:
each shard is a run of its own, under ``shards/<index>/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from nbjob.errors import UsageError

TF_ORDER = ("chief", "master", "worker", "ps", "evaluator")


@dataclass(frozen=True)
class Identity:
    rank: int = 0
    world_size: int | None = 1  # None: the platform does not say
    source: str = "default"
    task: str | None = None  # TF_CONFIG's "type:index"

    @property
    def canonical(self) -> bool:
        return self.rank == 0

    @property
    def multi(self) -> bool:
        return self.world_size is None or self.world_size > 1

    def to_json(self) -> dict[str, Any]:
        data = {**asdict(self), "canonical": self.canonical}
        return {k: v for k, v in data.items() if v is not None or k == "world_size"}


def _int(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{name}={text!r} is not an integer") from None


def _checked(rank: int, world: int | None, source: str, task: str | None = None) -> Identity:
    if rank < 0 or (world is not None and not 0 <= rank < world):
        raise UsageError(f"rank {rank} does not fit world size {world} (from {source})")
    return Identity(rank, world, source, task)


def _flags(flags: Mapping[str, Any]) -> Identity | None:
    rank, world = flags.get("rank"), flags.get("world_size")
    if rank is None and world is None:
        return None
    if rank is None or world is None:
        raise UsageError("--rank and --world-size go together (or NBJOB_RANK/NBJOB_WORLD_SIZE)")
    return _checked(int(rank), int(world), "flags")


def _torch(env: Mapping[str, str]) -> Identity | None:
    rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
    if rank is None or world is None:
        return None
    if "LOCAL_RANK" not in env and (nodes := _int(env, "PET_NNODES")) is not None:
        return _checked(rank, nodes, "RANK (node rank; PET_NNODES)")
    return _checked(rank, world, "RANK")


def _tf_config(env: Mapping[str, str]) -> Identity | None:
    if not env.get("TF_CONFIG"):
        return None
    try:
        config = json.loads(env["TF_CONFIG"])
        cluster = {str(k): len(v) for k, v in (config.get("cluster") or {}).items()}
        kind, index = str(config["task"]["type"]), int(config["task"].get("index", 0))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError("TF_CONFIG is not a TFJob cluster and task description") from None
    order = [t for t in TF_ORDER if t in cluster] + sorted(set(cluster) - set(TF_ORDER))
    if kind not in cluster:  # an evaluator sits outside the cluster
        order, cluster = [*order, kind], {**cluster, kind: index + 1}
    rank = sum(cluster[t] for t in order[: order.index(kind)]) + index
    return _checked(rank, sum(cluster.values()), "TF_CONFIG", f"{kind}:{index}")


def _slurm(env: Mapping[str, str]) -> Identity | None:
    rank, world = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
    if rank is None:
        return None
    return _checked(rank, world or 1, "SLURM_PROCID")


def _volcano(env: Mapping[str, str]) -> Identity | None:
    name = next((n for n in ("VC_TASK_INDEX", "VK_TASK_INDEX") if env.get(n)), None)
    if name is None:
        return None
    sizes = [k for k in env if k.startswith("VC_") and k.endswith("_NUM") and k != "VC_TASK_NUM"]
    world = _int(env, sizes[0]) if len(sizes) == 1 else None
    return _checked(_int(env, name) or 0, world, name)


def _ffdl(env: Mapping[str, str]) -> Identity | None:
    learner = _int(env, "LEARNER_ID")
    if learner is None:
        return None
    return _checked(learner - 1, _int(env, "NUM_LEARNERS") or 1, "LEARNER_ID")


EnvSource = Callable[[Mapping[str, str]], Identity | None]

# The documented order after the flags (README, "Ranks"): the first that answers wins.
SOURCES: tuple[EnvSource, ...] = (_torch, _tf_config, _slurm, _volcano, _ffdl)


def resolve(flags: Mapping[str, Any], env: Mapping[str, str]) -> Identity:
    """This process's rank and world size; ``UsageError`` (exit 2) when they do not fit."""
    if (found := _flags(flags)) is not None:
        return found
    for source in SOURCES:
        if (found := source(env)) is not None:
            return found
    return Identity()


SHARD_SOURCES = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")


def shard(flag: int | None, env: Mapping[str, str]) -> tuple[int | None, str | None]:
    """The shard index and where it came from: ``--shard``, then the platform's array index."""
    if flag is not None:
        return flag, "flags"
    for name in SHARD_SOURCES:
        if (index := _int(env, name)) is not None:
            if index < 0:
                raise UsageError(f"{name}={index} is not a shard index")
            return index, name
    return None, None
