"""Slurm: ``sbatch`` jobs, ``srun`` tasks, job arrays and requeues.

``SLURM_JOB_ID`` (``SLURM_ARRAY_JOB_ID``_``SLURM_ARRAY_TASK_ID`` for an array task: the id a
requeue keeps), ``SLURM_PROCID`` / ``SLURM_NTASKS`` (the rank of an ``srun`` task),
``SLURM_ARRAY_TASK_ID`` (a shard of a sweep), ``SLURM_RESTART_COUNT`` (requeues so far).
"""

from __future__ import annotations

from nbjob.platforms._base import Identity, Platform, array_index, checked, integer, restarts


class Slurm(Platform):
    name = "slurm"
    recorded = (
        "SLURM_JOB_ID",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "SLURM_JOB_NODELIST",
        "SLURM_RESTART_COUNT",
    )

    def detected(self) -> bool:
        return "SLURM_JOB_ID" in self.env

    def run_id(self) -> str | None:
        run_id = self.env.get("SLURM_JOB_ID")
        if run_id is not None and "SLURM_ARRAY_TASK_ID" in self.env:
            array = self.env.get("SLURM_ARRAY_JOB_ID", run_id)
            return f"{array}_{self.env['SLURM_ARRAY_TASK_ID']}"
        return run_id

    def rank(self) -> Identity | None:
        rank, world = integer(self.env, "SLURM_PROCID"), integer(self.env, "SLURM_NTASKS")
        if rank is None:
            return None
        return checked(rank, world or 1, "SLURM_PROCID")

    def shard(self) -> tuple[int, str] | None:
        return array_index(self.env, "SLURM_ARRAY_TASK_ID")

    def attempt(self) -> int | None:
        return restarts(self.env, "SLURM_RESTART_COUNT")
