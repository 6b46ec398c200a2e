"""Kubeflow training jobs (PyTorchJob, TFJob; on Kubernetes).

A PyTorchJob gives ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK`` (and
``PET_NNODES`` with ``nprocPerNode``); a TFJob gives ``TF_CONFIG``. Their ranks are the
launchers' (``nbjob.platforms._launchers``): Kubeflow itself answers detection only.
"""

from __future__ import annotations

from nbjob.platforms._base import KUBERNETES_TERMINATION_LOG, Platform


class Kubeflow(Platform):
    name = "kubeflow"
    termination_log = KUBERNETES_TERMINATION_LOG

    def detected(self) -> bool:
        return "TF_CONFIG" in self.env or ("MASTER_ADDR" in self.env and "WORLD_SIZE" in self.env)
