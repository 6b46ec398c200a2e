"""Settings for one run, from flags, NBJOB_* variables and platform conventions, checked once.

Precedence, highest first: command-line flag, ``NBJOB_*`` variable, platform convention
(see ``platforms``), built-in default. ``OPTIONS`` is the single table of settings: the CLI
builds its flags from it and docs/running/index.md documents it. It is derived from the ``Settings``
fields' metadata, so each default is written once.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from nbjob import params, platforms, stop
from nbjob.errors import UsageError
from nbjob.layout import Destination, Places
from nbjob.options import (
    Option,
    addressing_style,
    boolean,
    count,
    http_urls,
    log_format,
    name_list,
    opt,
    positive_float,
    positive_int,
    seconds,
)
from nbjob.storage import Options as StorageOptions
from nbjob.storage import check_destination, check_source, join


@dataclass(frozen=True)
class Settings:
    """Everything one run needs. Fields with an ``option`` are settings users give (flag or
    NBJOB_* variable); their defaults are written here and nowhere else (``OPTIONS``)."""

    source: str
    output: str = field(
        default="",
        metadata=opt(
            "--output",
            str,
            "results folder or s3://bucket/prefix (default ./nbjob-output/RUN_ID)",
            "DEST",
        ),
    )
    notebook: str | None = field(
        default=None, metadata=opt("--notebook", str, "notebook path inside the bundle", "PATH")
    )
    parameters_file: str | None = field(
        default=None,
        metadata=opt("--parameters-file", str, "YAML or JSON file of parameters", "FILE"),
    )
    kernel: str | None = field(
        default=None,
        metadata=opt("--kernel", str, "kernel name (default: the notebook's kernelspec)", "NAME"),
    )
    cell_timeout: float | None = field(
        default=None,
        metadata=opt("--cell-timeout", positive_float, "seconds one cell may run", "SECONDS"),
    )
    timeout: float | None = field(
        default=None,
        metadata=opt("--timeout", positive_float, "seconds the whole run may take", "SECONDS"),
    )
    run_id: str = field(
        default="",
        metadata=opt("--run-id", str, "id of this run (default: platform's or generated)", "ID"),
    )
    require_gpu: bool = field(
        default=False,
        metadata=opt(
            "--require-gpu", boolean, "exit 7 before any cell when the kernel sees no GPU"
        ),
    )
    stop_grace: float = field(
        default=10.0,
        metadata=opt(
            "--stop-grace",
            positive_float,
            "seconds to store results after a stop signal",
            "SECONDS",
        ),
    )
    stop_signals: tuple[str, ...] = field(
        default=stop.DEFAULT_SIGNALS,
        metadata=opt(
            "--stop-signals",
            stop.parse_signals,
            "signals that stop the run, e.g. TERM,INT,USR1 (default TERM,INT)",
            "SIGNALS",
        ),
    )
    termination_log: str = field(
        default="",
        metadata=opt(
            "--termination-log",
            str,
            "file that receives the one-line reason (default: the platform's,"
            " /dev/termination-log on Kubernetes)",
            "PATH",
        ),
    )
    log_format: str = field(
        default="auto",
        metadata=opt(
            "--log-format",
            log_format,
            "console log: json, console or auto (console on a TTY)",
            "FORMAT",
        ),
    )
    s3_endpoint_url: str | None = field(
        default=None,
        metadata=opt(
            "--s3-endpoint-url", str, "S3-compatible endpoint (IBM COS, MinIO, Ceph)", "URL"
        ),
    )
    s3_addressing_style: str = field(
        default="auto",
        metadata=opt(
            "--s3-addressing-style", addressing_style, "S3 addressing: auto, path, virtual", "STYLE"
        ),
    )
    max_output_bytes: int = field(
        default=1_000_000,
        metadata=opt(
            "--max-output-bytes",
            positive_int,
            "stream output kept per cell in the notebook (the log keeps all)",
            "BYTES",
        ),
    )
    max_bundle_files: int = field(
        default=10_000,
        metadata=opt("--max-bundle-files", positive_int, "most files a bundle may hold", "N"),
    )
    max_bundle_bytes: int = field(
        default=10 * 2**30,
        metadata=opt(
            "--max-bundle-bytes", positive_int, "most bytes a bundle may unpack to", "BYTES"
        ),
    )
    checkpoint_interval: float = field(
        default=2.0,
        metadata=opt(
            "--checkpoint-interval",
            positive_float,
            "seconds between result writes during the run",
            "SECONDS",
        ),
    )
    kernel_start_timeout: float = field(
        default=60.0,
        metadata=opt(
            "--kernel-start-timeout",
            positive_float,
            "seconds the kernel may take to start",
            "SECONDS",
        ),
    )
    workdir: str | None = field(
        default=None,
        metadata=opt("--workdir", str, "where bundles are unpacked (default: a temp dir)", "DIR"),
    )
    gateway_url: str | None = field(
        default=None,
        metadata=opt(
            "--gateway-url",
            str,
            "run the kernel on this Jupyter Server / Enterprise Gateway (also JUPYTER_GATEWAY_URL;"
            " token from JUPYTER_GATEWAY_AUTH_TOKEN)",
            "URL",
        ),
    )
    gateway_request_timeout: float = field(
        default=60.0,
        metadata=opt(
            "--gateway-request-timeout",
            positive_float,
            "seconds one request to the gateway may take",
            "SECONDS",
        ),
    )
    storage_timeout: float = field(
        default=60.0,
        metadata=opt(
            "--storage-timeout",
            positive_float,
            "seconds the store may fail to answer before the run gives up (exit 6)",
            "SECONDS",
        ),
    )
    storage_attempts: int = field(
        default=5,
        metadata=opt("--storage-attempts", positive_int, "tries of each storage operation", "N"),
    )
    attempt: int | None = field(
        default=None,
        metadata=opt(
            "--attempt",
            positive_int,
            "number of this attempt (default: the platform's, else the destination's + 1)",
            "N",
        ),
    )
    no_resume: bool = field(
        default=False,
        metadata=opt("--no-resume", boolean, "do not restore an earlier attempt's artifacts"),
    )
    new_run: bool = field(
        default=False,
        metadata=opt(
            "--new-run",
            boolean,
            "a new run even where the destination holds an earlier one (nothing restored)",
        ),
    )
    no_report: bool = field(
        default=False,
        metadata=opt("--no-report", boolean, "write no HTML report of the executed notebook"),
    )
    report_interval: float = field(
        default=60.0,
        metadata=opt(
            "--report-interval",
            seconds,
            "re-render the HTML report during the run at most this often (0: only at the end)",
            "SECONDS",
        ),
    )
    no_mask_secrets: bool = field(
        default=False,
        metadata=opt(
            "--no-mask-secrets",
            boolean,
            "store cell outputs as they are: no masking of the credentials nbjob knows",
        ),
    )
    allow_errors: bool = field(
        default=False,
        metadata=opt(
            "--allow-errors", boolean, "run every cell; an error stays in its cell, the run exits 0"
        ),
    )
    rank: int | None = field(
        default=None,
        metadata=opt(
            "--rank", count, "this process's rank (with --world-size; default: platform's)", "N"
        ),
    )
    world_size: int | None = field(
        default=None,
        metadata=opt("--world-size", positive_int, "number of ranks (with --rank)", "N"),
    )
    ranks_wait: float = field(
        default=60.0,
        metadata=opt(
            "--ranks-wait",
            seconds,
            "seconds rank 0 waits at its end for the other ranks' final run.json",
            "SECONDS",
        ),
    )
    shard: int | None = field(
        default=None,
        metadata=opt(
            "--shard",
            count,
            "entry of a --parameters-file list to run (default: SLURM_ARRAY_TASK_ID,"
            " JOB_COMPLETION_INDEX)",
            "N",
        ),
    )
    listeners: tuple[str, ...] = field(
        default=(),
        metadata=opt(
            "--listener",
            name_list,
            "event listener plug-in to load (entry point group nbjob.listeners);"
            " repeatable or comma-separated",
            "NAME",
            repeat=True,
        ),
    )
    install_requirements: bool = field(
        default=False,
        metadata=opt(
            "--install-requirements",
            boolean,
            "install the bundle's requirements.txt into an environment over the image's and"
            " start the kernel from it (default: install nothing)",
        ),
    )
    env_cache: str | None = field(
        default=None,
        metadata=opt(
            "--env-cache",
            str,
            "folder or s3://... keeping installed environments (with --install-requirements)",
            "URL",
        ),
    )
    notify: tuple[str, ...] = field(
        default=(),
        metadata=opt(
            "--notify",
            http_urls,
            "POST a JSON summary to this URL when the run ends (Slack/Teams incoming webhooks"
            " show its text); repeatable or comma-separated",
            "URL",
            repeat=True,
        ),
    )
    mlflow_experiment: str | None = field(
        default=None,
        metadata=opt(
            "--mlflow-experiment",
            str,
            "MLflow experiment of the run (default: MLFLOW_EXPERIMENT_NAME, else Default)",
            "NAME",
        ),
    )
    no_mlflow: bool = field(
        default=False,
        metadata=opt("--no-mlflow", boolean, "no MLflow run, even with MLFLOW_TRACKING_URI set"),
    )
    kfp_executor_input: str | None = field(
        default=None,
        metadata=opt(
            "--kfp-executor-input",
            str,
            "Kubeflow Pipelines v2 executor input ({{$}}): executor_output.json written at the end",
            "JSON",
        ),
    )
    resource_interval: float = field(
        default=1.0,
        metadata=opt(
            "--resource-interval",
            seconds,
            "seconds between samples of the kernel's memory, CPU and GPUs (0: off)",
            "SECONDS",
        ),
    )
    # Not options: from the platform, and the parameters as given (merged at run time).
    parameters: params.ParameterSources = field(default_factory=params.ParameterSources)
    platform: platforms.Placement = field(default_factory=platforms.Placement)
    dest: str = ""  # the run's top folder (``output`` is under ranks/<r>/ for rank r > 0)
    # Made here (no --run-id, no platform's): an earlier attempt's run id is taken instead.
    run_id_made: bool = False

    @property
    def identity(self) -> platforms.Identity:
        """This process's rank and world size (the platform's placement)."""
        return self.platform.identity

    @property
    def shard_source(self) -> str | None:
        """Where ``shard`` came from (``flags``, or a platform's array index)."""
        return self.platform.shard_source

    @property
    def log_dir(self) -> str | None:
        """A folder the platform collects logs from (FfDL's ``LOG_DIR``)."""
        return self.platform.log_dir

    @property
    def storage_options(self) -> StorageOptions:
        """How this run's storage reaches its stores (``Storage(settings.storage_options)``)."""
        return StorageOptions.of(vars(self))

    @property
    def places(self) -> Places:
        """The run's top folder and this process's (``output`` is the latter: the flag's name
        stays, the value is where this process writes)."""
        return Places(Destination(self.dest or self.output), Destination(self.output))


OPTIONS: tuple[Option, ...] = tuple(
    replace(f.metadata["option"], name=f.name, default=f.default)
    for f in fields(Settings)
    if "option" in f.metadata
)  # fmt: skip


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def resolve(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    cli_parameters: tuple[tuple[str, Any], ...] = (),
) -> Settings:
    """Merge flags (None: not given), NBJOB_* variables and platform conventions.

    Parameters are only collected here (``params.ParameterSources``); the run merges and checks
    them (``params.merge``), so a bad one ends with run.json stored.
    """
    values = {opt.name: _value(opt, flags, env) for opt in OPTIONS}

    placed = platforms.resolve(env, values)
    source = flags.get("source") or env.get("NBJOB_SOURCE") or placed.source
    if not source:
        raise UsageError("no notebook source given: pass SOURCE or set NBJOB_SOURCE")
    given_id = values.pop("run_id") or placed.run_id
    run_id = given_id or new_run_id()
    values["attempt"] = values["attempt"] or placed.attempt
    values["termination_log"] = values["termination_log"] or placed.termination_log or ""
    base = values.pop("output") or placed.output or join("nbjob-output", run_id)
    values["shard"] = placed.shard
    # Ends a backend cannot serve (an https:// destination) are usage errors now, before the
    # run starts its kernel, not failures of a run that could store nothing.
    check_source(source)
    check_destination(base)
    if values["env_cache"]:
        check_destination(values["env_cache"], "--env-cache")
    places = Places.place(base, values["shard"], placed.identity.rank)

    sources = params.ParameterSources(
        file=values.pop("parameters_file"),
        env_text=env.get("NBJOB_PARAMETERS") or None,
        flags=tuple(cli_parameters),
        shard=values["shard"],
    )
    return Settings(
        source=source,
        output=places.own.url,
        run_id=run_id,
        run_id_made=not given_id,
        parameters_file=sources.file,
        parameters=sources,
        platform=placed,
        dest=places.top.url,
        **values,
    )


def storage_options(flags: Mapping[str, Any], env: Mapping[str, str]) -> StorageOptions:
    """Storage options from flags and ``NBJOB_*`` variables alone, for commands without a run
    (``nbjob pack --upload``); a run uses ``Settings.storage_options``."""
    names = StorageOptions.SETTINGS.values()
    return StorageOptions.of({o.name: _value(o, flags, env) for o in OPTIONS if o.name in names})


def _value(opt: Option, flags: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    """One option's value: the flag (None: not given), else its variable, else the default."""
    if flags.get(opt.name) is not None:
        value = flags[opt.name]
        if isinstance(value, list):  # a repeated flag
            value = ",".join(value)
        return _parse(opt, value, opt.flag) if isinstance(value, str) else value
    if env.get(opt.env, "") != "":
        return _parse(opt, env[opt.env], opt.env)
    return opt.default


def _parse(opt: Option, text: str, origin: str) -> Any:
    try:
        return opt.parse(text)
    except ValueError as exc:
        raise UsageError(f"{origin}: invalid value {text!r} ({exc})") from None
