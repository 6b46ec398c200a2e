"""Ray Jobs (``ray job submit``, the Jobs API, KubeRay's RayJob).

The run id is the submission id (the one a submitter chooses): ``RAY_JOB_SUBMISSION_ID``
(KubeRay), else the job config Ray gives the entrypoint (``RAY_JOB_CONFIG_JSON_ENV_VAR``:
``metadata.job_submission_id``; the config itself is never recorded: its ``env_vars`` may hold
secrets), else ``RAY_JOB_ID``.
"""

from __future__ import annotations

import json

from nbjob.platforms._base import Platform


class Ray(Platform):
    name = "ray"
    recorded = ("RAY_JOB_ID", "RAY_JOB_SUBMISSION_ID")

    def _submission_id(self) -> str | None:
        """The submission id Ray's job config holds (the only place the Jobs API puts it)."""
        try:
            config = json.loads(self.env.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "null")
            value = config["metadata"]["job_submission_id"]
        except (ValueError, TypeError, KeyError):
            return None
        return value if isinstance(value, str) and value else None

    def detected(self) -> bool:
        return self.run_id() is not None

    def run_id(self) -> str | None:
        env = self.env
        return env.get("RAY_JOB_SUBMISSION_ID") or self._submission_id() or env.get("RAY_JOB_ID")

    def info(self) -> dict[str, str]:
        info = super().info()
        if "RAY_JOB_SUBMISSION_ID" not in info and (submission := self._submission_id()):
            info["RAY_JOB_SUBMISSION_ID"] = submission
        return info
