"""Which platforms there are, in which order: the built-in ones and the installed plug-ins."""

from __future__ import annotations

import warnings

from nbjob.platforms._base import Platform
from nbjob.platforms._ffdl import Ffdl
from nbjob.platforms._kubeflow import Kubeflow
from nbjob.platforms._kubernetes import Kubernetes
from nbjob.platforms._local import Local
from nbjob.platforms._ray import Ray
from nbjob.platforms._slurm import Slurm
from nbjob.platforms._volcano import Volcano

ENTRY_POINT_GROUP = "nbjob.platforms"

# Detection: the first that says yes is the platform. A platform that runs on another comes
# before it: FfDL, Volcano and Kubeflow run on Kubernetes; Volcano's pytorch and tensorflow
# plugins set Kubeflow's variables too; a Slurm job inside Kubernetes is a Slurm job; a Ray
# job on KubeRay is a Ray job (its run id is the submission id).
DETECTION: tuple[type[Platform], ...] = (Ffdl, Slurm, Volcano, Kubeflow, Ray, Kubernetes, Local)

# Rank, shard and attempt: asked of every platform in this order, detected or not (their
# variables are each platform's own, and a learner may lack what FfDL's detection needs). The
# ranks: SLURM_PROCID, VC_TASK_INDEX, LEARNER_ID; the shards: SLURM_ARRAY_TASK_ID, then
# JOB_COMPLETION_INDEX (docs/running/ranks.md, docs/running/sweeps.md).
PRECEDENCE: tuple[type[Platform], ...] = (Slurm, Volcano, Ffdl, Kubernetes, Kubeflow, Ray, Local)


def plugins() -> tuple[type[Platform], ...]:
    """The ``nbjob.platforms`` entry points, by name: each a ``Platform`` subclass.

    One that cannot be loaded, or is not a ``Platform``, is left out with a warning: an
    installed package must not stop every run.
    """
    from importlib.metadata import entry_points  # ~25 ms of imports: only when resolving

    found: list[type[Platform]] = []
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        try:
            loaded = point.load()
        except Exception as exc:  # a broken plug-in: any error its import raises
            warnings.warn(f"platform plug-in {point.name!r} not loaded: {exc}", stacklevel=2)
            continue
        if not (isinstance(loaded, type) and issubclass(loaded, Platform)):
            warnings.warn(f"platform plug-in {point.name!r} is not a Platform", stacklevel=2)
            continue
        if loaded not in found:
            found.append(loaded)
    return tuple(found)
