"""jupyter_client's local provisioner, launching into the interpreter started early
(``nbjob.early``) when it fits, as ``Popen`` otherwise; given to a ``KernelManager`` before
its ``start_kernel`` (``adopt_early``), in place of the one its provisioner factory would make
for a kernelspec that names none."""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any

from jupyter_client.provisioning.local_provisioner import LocalProvisioner

from nbjob import early


class EarlyProvisioner(LocalProvisioner):
    """``LocalProvisioner`` whose first launch takes the early interpreter where it can
    (``took_early`` says whether it did)."""

    took_early = False

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        env, cwd = kwargs.get("env") or os.environ, kwargs.get("cwd") or os.getcwd()
        process = early.take(cmd, env, str(cwd))
        if process is None:
            return await super().launch_kernel(cmd, **kwargs)
        self.process, self.pid, self.cwd, self.took_early = process, process.pid, cwd, True
        with contextlib.suppress(OSError):
            self.pgid = os.getpgid(process.pid)
        return self.connection_info


def adopt_early(km: Any) -> None:
    """Give ``km`` an ``EarlyProvisioner`` when an early interpreter waits and the kernelspec
    names no provisioner of its own (else jupyter_client chooses, and the interpreter ends)."""
    if not early.waiting():
        return
    if (km.kernel_spec.metadata or {}).get("kernel_provisioner"):
        early.discard()
        return
    km.kernel_id = km.kernel_id or str(uuid.uuid4())
    km.provisioner = EarlyProvisioner(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km)
