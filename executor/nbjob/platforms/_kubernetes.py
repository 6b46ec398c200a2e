"""Plain Kubernetes pods (a Job, an Indexed Job, ``kubectl run``).

``KUBERNETES_SERVICE_HOST`` is in every container; ``JOB_COMPLETION_INDEX`` is an Indexed
Job's index (a shard of a sweep); the pod's name is ``HOSTNAME``. Kubernetes gives a pod no run
id that survives a retry (the recipes pass the job's name as ``NBJOB_RUN_ID``) and no restart
count (an Indexed Job passes ``batch.kubernetes.io/job-index-failure-count`` as
``NBJOB_RESTART_COUNT``). The termination message goes to /dev/termination-log.
"""

from __future__ import annotations

from nbjob.platforms._base import KUBERNETES_TERMINATION_LOG, Platform, array_index


class Kubernetes(Platform):
    name = "kubernetes"
    recorded = ("KUBERNETES_SERVICE_HOST", "JOB_COMPLETION_INDEX")
    termination_log = KUBERNETES_TERMINATION_LOG

    def detected(self) -> bool:
        return "KUBERNETES_SERVICE_HOST" in self.env

    def shard(self) -> tuple[int, str] | None:
        return array_index(self.env, "JOB_COMPLETION_INDEX")
