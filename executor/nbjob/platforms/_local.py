"""No batch platform: a workstation, a plain container, a CI job. Always detected, so it is
the last platform asked; it answers nothing else (nbjob's defaults apply)."""

from __future__ import annotations

from nbjob.platforms._base import Platform


class Local(Platform):
    name = "local"

    def detected(self) -> bool:
        return True
