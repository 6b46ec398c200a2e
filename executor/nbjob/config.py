"""Settings for one run, from flags, NBJOB_* variables and platform conventions, checked once.

Precedence, highest first: command-line flag, ``NBJOB_*`` variable, platform convention
(see ``platforms``), built-in default. ``OPTIONS`` is the single table of settings: the CLI
builds its flags from it and the README documents it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nbjob import params, platforms
from nbjob.errors import UsageError
from nbjob.storage import join


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false")


def _log_format(text: str) -> str:
    if text not in ("auto", "json", "console"):
        raise ValueError("expected auto, json or console")
    return text


@dataclass(frozen=True)
class Option:
    name: str
    flag: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None

    @property
    def env(self) -> str:
        return "NBJOB_" + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("output", "--output", str, None,
           "results folder or s3://bucket/prefix (default ./nbjob-output/RUN_ID)", "DEST"),
    Option("notebook", "--notebook", str, None, "notebook path inside the bundle", "PATH"),
    Option("parameters_file", "--parameters-file", str, None,
           "YAML or JSON file of parameters", "FILE"),
    Option("kernel", "--kernel", str, None,
           "kernel name (default: the notebook's kernelspec)", "NAME"),
    Option("cell_timeout", "--cell-timeout", _positive_float, None,
           "seconds one cell may run", "SECONDS"),
    Option("timeout", "--timeout", _positive_float, None, "seconds the whole run may take",
           "SECONDS"),
    Option("run_id", "--run-id", str, None, "id of this run (default: platform's or generated)",
           "ID"),
    Option("require_gpu", "--require-gpu", _bool, False,
           "exit 7 before any cell when the kernel sees no GPU"),
    Option("stop_grace", "--stop-grace", _positive_float, 10.0,
           "seconds to store results after SIGTERM/SIGINT", "SECONDS"),
    Option("termination_log", "--termination-log", str, platforms.DEFAULT_TERMINATION_LOG,
           "file that receives the one-line reason", "PATH"),
    Option("log_format", "--log-format", _log_format, "auto",
           "console log: json, console or auto (console on a TTY)", "FORMAT"),
    Option("s3_endpoint_url", "--s3-endpoint-url", str, None,
           "S3-compatible endpoint (IBM COS, MinIO, Ceph)", "URL"),
    Option("max_output_bytes", "--max-output-bytes", _positive_int, 1_000_000,
           "stream output kept per cell in the notebook (the log keeps all)", "BYTES"),
    Option("max_bundle_files", "--max-bundle-files", _positive_int, 10_000,
           "most files a bundle may hold", "N"),
    Option("max_bundle_bytes", "--max-bundle-bytes", _positive_int, 10 * 2**30,
           "most bytes a bundle may unpack to", "BYTES"),
    Option("checkpoint_interval", "--checkpoint-interval", _positive_float, 2.0,
           "seconds between result writes during the run", "SECONDS"),
    Option("kernel_start_timeout", "--kernel-start-timeout", _positive_float, 60.0,
           "seconds the kernel may take to start", "SECONDS"),
    Option("workdir", "--workdir", str, None, "where bundles are unpacked (default: a temp dir)",
           "DIR"),
    Option("gateway_url", "--gateway-url", str, None,
           "run the kernel on this Jupyter Server / Enterprise Gateway (also JUPYTER_GATEWAY_URL;"
           " token from JUPYTER_GATEWAY_AUTH_TOKEN)", "URL"),
    Option("gateway_request_timeout", "--gateway-request-timeout", _positive_float, 60.0,
           "seconds one request to the gateway may take", "SECONDS"),
)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    source: str
    output: str
    run_id: str
    notebook: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    parameters_file: str | None = None
    kernel: str | None = None
    cell_timeout: float | None = None
    timeout: float | None = None
    require_gpu: bool = False
    stop_grace: float = 10.0
    termination_log: str = platforms.DEFAULT_TERMINATION_LOG
    log_format: str = "auto"
    s3_endpoint_url: str | None = None
    max_output_bytes: int = 1_000_000
    max_bundle_files: int = 10_000
    max_bundle_bytes: int = 10 * 2**30
    checkpoint_interval: float = 2.0
    kernel_start_timeout: float = 60.0
    workdir: str | None = None
    gateway_url: str | None = None
    gateway_request_timeout: float = 60.0
    log_dir: str | None = None
    platform: platforms.Platform = field(default_factory=platforms.Platform)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def resolve(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    cli_parameters: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge flags (None: not given), NBJOB_* variables and platform conventions."""
    platform = platforms.detect(env)
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        if flags.get(opt.name) is not None:
            value = flags[opt.name]
            if isinstance(value, str):
                value = _parse(opt, value, opt.flag)
        elif env.get(opt.env, "") != "":
            value = _parse(opt, env[opt.env], opt.env)
        else:
            value = opt.default
        values[opt.name] = value

    source = flags.get("source") or env.get("NBJOB_SOURCE") or platform.source
    if not source:
        raise UsageError("no notebook source given: pass SOURCE or set NBJOB_SOURCE")
    run_id = values.pop("run_id") or platform.run_id or new_run_id()
    output = values.pop("output") or platform.output or join("nbjob-output", run_id)
    if platform.rank_dir:
        output = join(output, platform.rank_dir)

    merged: dict[str, Any] = {}
    if env.get("NBJOB_PARAMETERS"):
        merged.update(params.parse_mapping(env["NBJOB_PARAMETERS"], "NBJOB_PARAMETERS"))
    merged.update(cli_parameters or {})
    return Settings(
        source=source,
        output=output,
        run_id=run_id,
        parameters=merged,
        log_dir=platform.log_dir,
        platform=platform,
        **values,
    )


def _parse(opt: Option, text: str, origin: str) -> Any:
    try:
        return opt.parse(text)
    except ValueError as exc:
        raise UsageError(f"{origin}: invalid value {text!r} ({exc})") from None
