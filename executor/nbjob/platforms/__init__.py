"""Batch platforms turned into one placement: the only package that knows platforms.

Each platform tells a job through its own environment variables what it is, which part of the
job this process is and where things are. ``resolve(env, flags)`` reads them once and returns a
``Placement``: the platform's name, its run id, this process's rank and world size
(``Identity``, with the variable that said so), its shard of a sweep, its attempt, the
variables run.json records (never credentials), the termination-message file, and, for FfDL,
the bundle, the results and the log folder. Nothing else in nbjob reads these variables.

One module per platform (``_ffdl``, ``_slurm``, ``_volcano``, ``_kubeflow``, ``_kubernetes``,
``_ray``, ``_local``), each a ``Platform`` subclass; the launchers (torchrun's ``RANK``, a
TFJob's ``TF_CONFIG``) in ``_launchers``; the orders in ``_registry``.

**The platform** is the first that says it is detected: plug-ins, then FfDL, Slurm, Volcano,
Kubeflow, Kubernetes, Ray, local (a platform that runs on another comes before it). Its run id,
termination-message file, bundle, results and log folder are the placement's.

**The rank**, the first source that answers (recorded in run.json as ``identity.source``):

1. ``--rank`` / ``--world-size`` (``NBJOB_RANK`` / ``NBJOB_WORLD_SIZE``)
2. ``RANK`` / ``WORLD_SIZE`` (Kubeflow PyTorchJob, torchrun). Without ``LOCAL_RANK`` nbjob runs
   once per node: ``RANK`` is the node rank and the node count is ``PET_NNODES`` when set.
3. ``TF_CONFIG`` (Kubeflow TFJob): tasks ordered chief, master, worker, ps, evaluator; the
   chief (or master) is rank 0, else worker 0.
4. each platform's own rank, plug-ins first, detected or not: ``SLURM_PROCID`` /
   ``SLURM_NTASKS`` (``srun``), then ``VC_TASK_INDEX`` (or ``VK_TASK_INDEX``; Volcano; world
   size from the svc plugin's single ``VC_<TASK>_NUM``, unknown with several tasks), then
   ``LEARNER_ID`` / ``NUM_LEARNERS`` (FfDL; learner 1 is rank 0)
5. none: rank 0 of 1.

Rank 0 is the canonical rank: it writes the results at the top of the destination. **A shard**
index (``--shard``, then each platform's array index: ``SLURM_ARRAY_TASK_ID``, then
``JOB_COMPLETION_INDEX``) is not a rank: each shard is a run of its own, under
``shards/<index>/``. **The attempt** is a platform's restart count + 1: ``SLURM_RESTART_COUNT``
(Slurm requeues), else ``NBJOB_RESTART_COUNT`` (any platform; a Kubernetes Indexed Job passes
its pod annotation ``batch.kubernetes.io/job-index-failure-count`` through the downward API).

**Plug-ins**: a package adds a platform with an entry point in the group ``nbjob.platforms``
naming a ``Platform`` subclass (``[project.entry-points."nbjob.platforms"] acme =
"acme_nbjob:Acme"``). Installed plug-ins are asked before the built-in platforms, in the order
of their entry-point names: a plug-in is installed on purpose and is usually more specific
than the platform it runs on (a company's scheduler on Kubernetes). The flags and the launchers
still come first for the rank. One that cannot be loaded is left out with a warning. Variables
named like credentials (``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*_KEY``...) are never
recorded, even when a plug-in lists them.
"""

from __future__ import annotations

from nbjob.platforms._base import (
    KUBERNETES_TERMINATION_LOG,
    Identity,
    Platform,
    write_termination_message,
)
from nbjob.platforms._registry import ENTRY_POINT_GROUP
from nbjob.platforms._resolve import Placement, resolve

__all__ = [
    "ENTRY_POINT_GROUP",
    "KUBERNETES_TERMINATION_LOG",
    "Identity",
    "Placement",
    "Platform",
    "resolve",
    "write_termination_message",
]
