"""FfDL learners (Fabric for Deep Learning, on Kubernetes).

``RESULT_DIR`` (results, collected by FfDL), ``MODEL_DIR`` (the code), ``LOG_DIR``,
``TRAINING_ID``, ``LEARNER_ID`` (1-based), ``NUM_LEARNERS``, ``GPU_COUNT``; the submitted zip
lies at ``$RESULT_DIR/_submitted_code/model.zip``. Learner 1 is rank 0.
"""

from __future__ import annotations

import os

from nbjob.platforms._base import KUBERNETES_TERMINATION_LOG, Identity, Platform, checked, integer


class Ffdl(Platform):
    name = "ffdl"
    recorded = ("TRAINING_ID", "LEARNER_ID", "NUM_LEARNERS", "GPU_COUNT")
    termination_log = KUBERNETES_TERMINATION_LOG

    def detected(self) -> bool:
        keys = {"TRAINING_ID", "LEARNER_ID", "MODEL_DIR"}
        return "RESULT_DIR" in self.env and any(k in self.env for k in keys)

    def run_id(self) -> str | None:
        return self.env.get("TRAINING_ID")

    def rank(self) -> Identity | None:
        learner = integer(self.env, "LEARNER_ID")
        if learner is None:
            return None
        return checked(learner - 1, integer(self.env, "NUM_LEARNERS") or 1, "LEARNER_ID")

    def source(self) -> str | None:
        submitted = os.path.join(self.env["RESULT_DIR"], "_submitted_code", "model.zip")
        return submitted if os.path.exists(submitted) else self.env.get("MODEL_DIR")

    def output(self) -> str | None:
        return self.env["RESULT_DIR"]

    def log_dir(self) -> str | None:
        return self.env.get("LOG_DIR")
