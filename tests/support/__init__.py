"""What tests share: notebooks, running ``nbjob``, servers on loopback, waiting, the e2e rule.

Import from here (``from support import make_notebook, run_nbjob, wait_until``). The package
is also a pytest plugin (tests/conftest.py names ``support.e2e``): it marks every test that
starts a process ``e2e`` and fails a test outside that layer that starts one anyway.

- notebooks: ``make_notebook``, ``notebook`` (code cells only), ``notebook_json``,
  ``make_zip``, ``make_targz``, ``read_json``, ``stream_text``, ``terminal`` (JupyterLab's
  ``\\r`` / ``\\b`` folding, a reference model);
- results: ``results`` (notebook, validated, and run.json of an output folder), ``texts``,
  ``log_events`` (executor.log), ``cell_ends``, ``valid_notebook``; every notebook a
  ``run_nbjob`` / ``start_nbjob`` run leaves in its local output folder is validated when the
  run is waited for (``validate_written``), so every e2e test checks it;
- runs: ``run_nbjob`` / ``start_nbjob`` (``nbjob`` as a subprocess in its own session),
  ``nbjob_env``, ``Result``, ``NbjobProcess``, ``NBJOB``;
- processes: ``start_server`` / ``serve`` (start with a log, bounded readiness, stop by PID or
  process group with a bounded wait, then SIGKILL), ``ServerProcess``, ``wait_ready``,
  ``descendants``, ``running``;
- s3: moto on loopback (``moto_server``), ``S3Server``, the fake credentials, ``s3_env``;
- proxy: ``FlakyProxy``, a failing HTTP proxy in a thread;
- net and timing: ``free_port(s)``, ``answers``, ``serves``, ``wait_until``, ``wait_idle``
  (an artifact stream has sent all it sees);
- cgroups: ``memory_group`` (a real cgroup v1 memory group, limited; skipped where none can
  be made), ``group_pids``, ``kill_group`` (the whole group SIGKILLed, as Kubernetes does);
- e2e: ``starts_processes`` (mark a helper or fixture that starts processes), ``MARK``.
"""

from __future__ import annotations

from .browser import browse
from .cgroups import group_pids, kill_group, memory_group
from .e2e import MARK, FastLayerError, starts_processes
from .net import answers, free_port, free_ports, serves
from .notebooks import (
    PYTHON3,
    make_notebook,
    make_targz,
    make_zip,
    notebook,
    notebook_json,
    read_json,
    stream_text,
    terminal,
)
from .processes import (
    ServerProcess,
    descendants,
    pid_exists,
    running,
    serve,
    start_server,
    wait_ready,
)
from .proxy import FlakyProxy
from .results import cell_ends, log_events, results, texts, valid_notebook, validate_written
from .runs import NBJOB, NbjobProcess, Result, nbjob_env, run_nbjob, start_nbjob
from .s3 import ACCESS_KEY, REGION, SECRET_KEY, S3Server, moto_server, s3_env
from .timing import wait_idle, wait_until

__all__ = [
    "ACCESS_KEY",
    "MARK",
    "NBJOB",
    "PYTHON3",
    "REGION",
    "SECRET_KEY",
    "FastLayerError",
    "FlakyProxy",
    "NbjobProcess",
    "Result",
    "S3Server",
    "ServerProcess",
    "answers",
    "browse",
    "cell_ends",
    "descendants",
    "free_port",
    "free_ports",
    "group_pids",
    "kill_group",
    "log_events",
    "make_notebook",
    "make_targz",
    "make_zip",
    "memory_group",
    "moto_server",
    "nbjob_env",
    "notebook",
    "notebook_json",
    "pid_exists",
    "read_json",
    "results",
    "run_nbjob",
    "running",
    "s3_env",
    "serve",
    "serves",
    "start_nbjob",
    "start_server",
    "starts_processes",
    "stream_text",
    "terminal",
    "texts",
    "valid_notebook",
    "validate_written",
    "wait_idle",
    "wait_ready",
    "wait_until",
]
