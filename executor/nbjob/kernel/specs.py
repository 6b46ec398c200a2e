"""Where a local kernel's spec is found and what its process is given: the kernelspec finder
(``spec_manager``, ``installed_kernels``), ipykernel's options (``IPYKERNEL_OPTIONS``), and
writable IPython, Jupyter and matplotlib folders under the work folder when HOME cannot be
written (an arbitrary user id with ``HOME=/``: ``writable_homes``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Folders a kernel writes under HOME, and their names under the work folder's ``home/`` when
# HOME cannot be written.
HOME_FOLDERS = {
    "IPYTHONDIR": "ipython",
    "JUPYTER_CONFIG_DIR": "jupyter/config",
    "JUPYTER_DATA_DIR": "jupyter/data",
    "JUPYTER_RUNTIME_DIR": "jupyter/runtime",
    "MPLCONFIGDIR": "matplotlib",
}

# Options for kernelspecs that start ipykernel:
# - IPython's command history in memory, as nbclient and papermill start kernels: a history file
#   (shared by every kernel of the user) costs an SQLite commit per cell, waits on its lock when
#   other kernels write it, and is no part of a run's results;
# - no 0.5 ms sleep before each execute_reply (ipykernel's ``_execute_sleep``, a stop-gap for
#   clients that stop listening at the reply): nbjob ends a cell at its 'idle', which the kernel
#   publishes after the cell's last output on the same IOPub thread and socket.
IPYKERNEL_OPTIONS = ("--HistoryManager.hist_file=:memory:", "--IPythonKernel._execute_sleep=0")


def installed_kernels() -> dict[str, dict[str, Any]]:
    """name -> {'language': ..., 'display_name': ...} for every installed kernelspec."""
    specs = spec_manager().get_all_specs()
    return {name: s.get("spec", {}) for name, s in specs.items()}


def spec_manager() -> Any:
    """jupyter_client's kernelspec finder, looking where it looks by default: Jupyter's
    ``kernels`` folders, then the legacy ``kernels`` folder in IPython's (``IPYTHONDIR``, else
    ``~/.ipython``). That last one is named here rather than asked of IPython: its import is
    ~35 ms before the kernel's launch, and it would make the folder (or warn on stderr and use
    a new temporary folder, where no kernels are, when HOME is not writable)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_core.paths import jupyter_path

    dirs = jupyter_path("kernels")
    ipython = os.environ.get("IPYTHONDIR")
    if not ipython and home_writable(os.environ):
        ipython = os.path.join(os.path.expanduser("~"), ".ipython")
    if ipython:
        dirs.append(os.path.join(os.path.expanduser(ipython), "kernels"))
    return KernelSpecManager(kernel_dirs=dirs)


def home_writable(env: Mapping[str, str]) -> bool:
    """Whether ``env``'s HOME is a folder this process can write (not so for an arbitrary user
    id with ``HOME=/``)."""
    home = env.get("HOME", "")
    return bool(home) and os.path.isdir(home) and os.access(home, os.W_OK)


def writable_homes(env: Mapping[str, str], folder: Path) -> dict[str, str]:
    """The ``HOME_FOLDERS`` variables ``env`` does not set, as folders under ``folder`` (made
    here), when ``env``'s HOME is missing or not writable; else nothing."""
    if home_writable(env):
        return {}
    homes: dict[str, str] = {}
    for name, sub in HOME_FOLDERS.items():
        if env.get(name):
            continue
        path = folder / sub
        with contextlib.suppress(OSError):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            homes[name] = str(path)
    return homes


def is_ipykernel(km: Any) -> bool:
    """Whether the kernelspec starts ipykernel (takes IPython's command-line options)."""
    argv = getattr(km.kernel_spec, "argv", None) or []
    return bool(km.ipykernel) or any("ipykernel" in str(part) for part in argv)
