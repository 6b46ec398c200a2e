"""Volcano jobs (``batch.volcano.sh``, on Kubernetes).

The env plugin gives each pod ``VC_TASK_INDEX`` (and its older name ``VK_TASK_INDEX``); the svc
plugin (which the pytorch, tensorflow and mpi plugins turn on) gives ``VC_<TASK>_NUM`` and
``VC_<TASK>_HOSTS`` per task. The index is the rank; the world size is the single task's
``VC_<TASK>_NUM`` (not known with several tasks).
"""

from __future__ import annotations

from nbjob.platforms._base import KUBERNETES_TERMINATION_LOG, Identity, Platform, checked, integer

_INDEXES = ("VC_TASK_INDEX", "VK_TASK_INDEX")


class Volcano(Platform):
    name = "volcano"
    recorded = _INDEXES
    termination_log = KUBERNETES_TERMINATION_LOG

    def _sizes(self) -> list[str]:
        """The svc plugin's ``VC_<TASK>_NUM`` variables, one per task of the job."""
        return [
            k for k in self.env if k.startswith("VC_") and k.endswith("_NUM") and k != "VC_TASK_NUM"
        ]

    def detected(self) -> bool:
        if any(self.env.get(n) for n in _INDEXES):
            return True
        # Without the env plugin: the svc plugin's pair for a task.
        return any(k[: -len("_NUM")] + "_HOSTS" in self.env for k in self._sizes())

    def rank(self) -> Identity | None:
        name = next((n for n in _INDEXES if self.env.get(n)), None)
        if name is None:
            return None
        sizes = self._sizes()
        world = integer(self.env, sizes[0]) if len(sizes) == 1 else None
        return checked(integer(self.env, name) or 0, world, name)

    def info(self) -> dict[str, str]:
        return {**super().info(), **{k: self.env[k] for k in self._sizes()}}
