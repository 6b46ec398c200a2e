"""Launchers: what starts the processes of a multi-process job, whatever the platform.

torchrun (and a Kubeflow PyTorchJob, which sets the same variables) and a Kubeflow TFJob's
``TF_CONFIG`` say a process's rank more precisely than the platform does (a Slurm job may run
torchrun on each node), so they come before every platform's rank, in this order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from nbjob.errors import UsageError
from nbjob.platforms._base import Identity, checked, integer

TF_ORDER = ("chief", "master", "worker", "ps", "evaluator")


def torchrun(env: Mapping[str, str]) -> Identity | None:
    """``RANK`` / ``WORLD_SIZE``. Without ``LOCAL_RANK`` nbjob runs once per node: ``RANK`` is
    the node rank, and the node count is ``PET_NNODES`` when set (PyTorchJob's nprocPerNode)."""
    rank, world = integer(env, "RANK"), integer(env, "WORLD_SIZE")
    if rank is None or world is None:
        return None
    if "LOCAL_RANK" not in env and (nodes := integer(env, "PET_NNODES")) is not None:
        return checked(rank, nodes, "RANK (node rank; PET_NNODES)")
    return checked(rank, world, "RANK")


def tf_config(env: Mapping[str, str]) -> Identity | None:
    """``TF_CONFIG``: tasks ordered chief, master, worker, ps, evaluator (then any other, by
    name); the chief (or master) is rank 0, else worker 0. An evaluator outside the cluster
    comes last."""
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
    return checked(rank, sum(cluster.values()), "TF_CONFIG", f"{kind}:{index}")


Launcher = Callable[[Mapping[str, str]], Identity | None]

# In order; the first that answers wins over every platform's rank (docs/running/ranks.md).
LAUNCHERS: tuple[Launcher, ...] = (torchrun, tf_config)

# The launchers' variables that run.json records.
RECORDED = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "PET_NNODES",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TF_CONFIG",
)
