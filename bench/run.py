#!/usr/bin/env python3
"""nbjob benchmark: nbjob vs papermill CLI vs ``jupyter execute`` (nbclient), side by side.

Run from the repository root with the project's venv (``make bench`` does this)::

    .venv/bin/python bench/run.py [--quick] [--reps-a N] ... [--runners nbjob,papermill]

Every runner is started as a subprocess the way a platform starts it, on the same generated
notebooks, in the same kernel (the venv's ``python3`` kernelspec; verified by a warm-up run that
records the kernel's ``sys.executable``). Runs are interleaved round-robin across runners so that
drift on the machine hits all of them alike. Medians go to ``BENCHMARKS.md``, every raw number to
``bench/results.json``.

Memory (scenario c): the executor's peak RSS is the high-water mark (``VmHWM``) of the runner's
top process, plus the RSS of any non-kernel helper processes it starts, sampled every 20 ms.
Kernel processes (``ipykernel_launcher``) are excluded and reported separately.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import psutil
from notebooks import (
    E_FINAL,
    E_UPDATES,
    SCALE_CELLS,
    SCENARIO_TITLES,
    SCENARIOS,
    write_notebooks,
)

WIDGET_MIME = "application/vnd.jupyter.widget-state+json"

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MARKER_VAR = "NBJOB_BENCH_RUN"
# nbjob-noreport: nbjob without its end-of-run HTML report (the others write none), to show
# what the report costs and what the execution alone costs.
NBJOB_RUNNERS: tuple[str, ...] = ("nbjob", "nbjob-noreport")
RUNNERS: tuple[str, ...] = (*NBJOB_RUNNERS, "papermill", "nbclient")
RUNNER_LABELS: dict[str, str] = {
    "nbjob": "nbjob run",
    "nbjob-noreport": "nbjob run --no-report",
    "papermill": "papermill CLI",
    "nbclient": "jupyter execute",
}
MIB = 1024 * 1024
NO_RATIO = {"output_mib", "final_visible", "log_kib", "widget_models"}  # facts, not costs
RSS_LIMIT_MIB = 150.0
B_LIMIT_S = 5.0
B_MIN_SPEEDUP = 20.0
B_MIN_VS_NBCLIENT = 1.2  # issue 8: per-cell overhead well under nbclient's
SCALE_ONLY = ("g", "h")  # the scale scenarios: nbjob and nbclient only (issue 22)


# --------------------------------------------------------------------------- runners


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    output: Path  # the executed notebook this command writes


NBJOB_BIN: list[Path] = [BIN / "nbjob"]  # --nbjob-bin replaces it


def invocation(runner: str, notebook: Path, workdir: Path) -> Invocation:
    """The command line for one run of ``runner`` on ``notebook``, writing under ``workdir``."""
    if runner in NBJOB_RUNNERS:
        out_dir = workdir / "out"
        argv = [str(NBJOB_BIN[0]), "run", str(notebook), "--output", str(out_dir)]
        argv += ["--no-report"] if runner == "nbjob-noreport" else []
        return Invocation(argv, out_dir / notebook.name)
    if runner == "papermill":
        out = workdir / "out.ipynb"
        return Invocation([str(BIN / "papermill"), str(notebook), str(out)], out)
    if runner == "nbclient":
        out = workdir / "out"
        argv = [str(BIN / "jupyter"), "execute", f"--output={out}", str(notebook)]
        return Invocation(argv, out.with_suffix(".ipynb"))
    raise ValueError(f"unknown runner {runner!r}")


# --------------------------------------------------------------------------- memory sampling


def _is_kernel(proc: psutil.Process) -> bool:
    try:
        return any("ipykernel" in part for part in proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _status_kib(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmHWM, VmRSS), 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class MemorySampler:
    """Samples the runner tree every ``interval`` s: executor peak vs kernel peak, in bytes."""

    pid: int
    interval: float = 0.02
    executor_peak: int = 0
    top_hwm: int = 0
    kernel_peak: int = 0
    helper_pids: set[int] = field(default_factory=set)
    kernel_pids: set[int] = field(default_factory=set)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _classify(self) -> None:
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return
        kernels = {c.pid for c in children if _is_kernel(c)}
        # descendants of a kernel belong to the kernel's side too
        for k in list(kernels):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                kernels.update(c.pid for c in psutil.Process(k).children(recursive=True))
        self.kernel_pids |= kernels
        self.helper_pids |= {c.pid for c in children} - self.kernel_pids

    def _loop(self) -> None:
        tick = 0
        while not self._stop.is_set():
            if tick % 10 == 0:  # re-read the process tree every ~200 ms
                self._classify()
            tick += 1
            hwm = _status_kib(self.pid, "VmHWM") * 1024
            if hwm == 0:  # the runner is gone (or a zombie)
                if self._stop.wait(self.interval):
                    break
                continue
            self.top_hwm = max(self.top_hwm, hwm)
            rss = _status_kib(self.pid, "VmRSS") * 1024
            rss += sum(_status_kib(p, "VmRSS") * 1024 for p in self.helper_pids)
            self.executor_peak = max(self.executor_peak, rss, self.top_hwm)
            for k in self.kernel_pids:
                self.kernel_peak = max(self.kernel_peak, _status_kib(k, "VmHWM") * 1024)
            self.samples += 1
            self._stop.wait(self.interval)


# --------------------------------------------------------------------------- one run


@dataclass
class RunResult:
    runner: str
    scenario: str
    rep: int
    ok: bool
    rc: int | None
    wall_s: float
    startup_s: float | None = None
    executor_peak_rss: int | None = None
    executor_top_hwm: int | None = None
    kernel_peak_rss: int | None = None
    memory_samples: int | None = None
    output_bytes: int | None = None
    lingering_kernels: int = 0
    stray_kernels_killed: int = 0
    error: str | None = None
    cell_output_bytes: int | None = None  # (e): the bar cell's outputs, as JSON
    final_visible: bool | None = None  # (e): the last bar and the FINAL line are in the notebook
    log_bytes: int | None = None  # (e): nbjob's executor.log
    widget_models: int | None = None  # (f): models in metadata.widgets


def _marked_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER_VAR) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def _reap_strays(marker: str, grace_s: float = 5.0) -> tuple[int, int]:
    """Processes of this run still alive after the runner exited: (lingering, killed).

    A process is this run's when it inherited the run's marker variable. Those still there after
    ``grace_s`` are killed, by PID, and counted: a runner that leaves its kernel behind is a bug
    worth reporting, and it must not load the machine during the next run.
    """
    left = _marked_processes(marker)
    lingering = len(left)
    deadline = time.monotonic() + grace_s
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    return lingering, len(left)


def _validate(path: Path, scenario: str) -> str | None:
    """None when the executed notebook looks complete, else why not."""
    if not path.is_file():
        return f"no output notebook at {path}"
    if scenario in ("c",):
        return None  # 100+ MB: size is recorded, parsing it would only slow the bench down
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as exc:
        return f"unreadable output notebook: {exc!r}"
    code = [c for c in nb.cells if c.cell_type == "code"]
    missing = sum(1 for c in code if c.get("execution_count") is None)
    if missing:
        return f"{missing} of {len(code)} code cells not executed in {path.name}"
    return None


def _fidelity(result: RunResult, output: Path, runner: str) -> None:
    """What a user sees of (e) and (f) in the executed notebook."""
    nb = nbformat.read(str(output), as_version=4)
    if result.scenario == "e":
        outputs = nb.cells[0].outputs
        result.cell_output_bytes = len(json.dumps(outputs).encode())
        text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
        tail = text[-2000:]
        result.final_visible = E_FINAL in tail and f"{E_UPDATES}/{E_UPDATES}" in tail
        log = output.parent / "executor.log"
        if runner in NBJOB_RUNNERS and log.is_file():
            result.log_bytes = log.stat().st_size
    else:
        widgets = nb.metadata.get("widgets", {}).get(WIDGET_MIME, {})
        result.widget_models = len(widgets.get("state", {}))


def run_once(
    runner: str,
    scenario: str,
    rep: int,
    notebook: Path,
    root: Path,
    timeout_s: float,
    stamp_file: Path | None = None,
    sample_memory: bool = False,
) -> RunResult:
    workdir = Path(tempfile.mkdtemp(prefix=f"{runner}-{scenario}-{rep}-", dir=root))
    inv = invocation(runner, notebook, workdir)
    marker = uuid.uuid4().hex
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # Same start for every runner: jsonschema's optional rfc3987_syntax import (0.5-2 s, pulled
    # into the dev venv by jupyter_server) fails at once, as nbjob makes it do itself.
    shim = str(Path(__file__).resolve().parent / "shim")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (shim, env.get("PYTHONPATH")) if p)
    env[MARKER_VAR] = marker
    if stamp_file is not None:
        stamp_file.unlink(missing_ok=True)
    log_path = workdir / "runner.log"
    result = RunResult(runner, scenario, rep, ok=False, rc=None, wall_s=float("nan"))
    with open(log_path, "wb") as log:
        launch_wall = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            inv.argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        sampler = MemorySampler(proc.pid) if sample_memory else None
        if sampler is not None:
            sampler.start()
        # A blocking wait() returns the moment the runner exits; wait(timeout=...) would poll
        # with sleeps of up to 50 ms and blur the timings. A timer enforces the limit instead.
        timed_out = threading.Event()

        def kill_on_timeout() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout_s, kill_on_timeout)
        timer.start()
        rc = proc.wait()
        result.wall_s = time.perf_counter() - t0
        timer.cancel()
        if timed_out.is_set():
            result.error = f"timed out after {timeout_s:.0f} s"
        if sampler is not None:
            sampler.stop()
            result.executor_peak_rss = sampler.executor_peak
            result.executor_top_hwm = sampler.top_hwm
            result.kernel_peak_rss = sampler.kernel_peak or None
            result.memory_samples = sampler.samples
    result.rc = rc
    result.lingering_kernels, result.stray_kernels_killed = _reap_strays(marker)
    if inv.output.is_file():
        result.output_bytes = inv.output.stat().st_size
    if result.error is None and rc != 0:
        data = log_path.read_bytes()
        text = data.decode("utf-8", "replace")
        if len(data) > 1500:  # the first lines say what went wrong, the last where it ended
            head = data[:700].decode("utf-8", "replace")
            text = head + "\n[...]\n" + data[-700:].decode("utf-8", "replace")
        result.error = f"exit {rc}: {text.strip()}"
    if result.error is None:
        result.error = _validate(inv.output, scenario)
    if result.error is None and scenario in ("e", "f"):
        _fidelity(result, inv.output, runner)
    if result.error is None and stamp_file is not None:
        try:
            result.startup_s = float(stamp_file.read_text()) - launch_wall
        except (OSError, ValueError) as exc:
            result.error = f"first cell left no timestamp: {exc!r}"
    result.ok = result.error is None
    shutil.rmtree(workdir, ignore_errors=True)
    return result


# --------------------------------------------------------------------------- plan and summary


@dataclass
class Config:
    reps: dict[str, int]
    papermill_b_reps: int
    runners: list[str]
    scenarios: list[str]
    timeouts: dict[str, float]
    quick: bool

    def reps_for(self, runner: str, scenario: str) -> int:
        if runner == "papermill" and scenario in SCALE_ONLY:
            return 0  # papermill rewrites the notebook at every cell: ~3 min at 1000 cells
        if runner == "papermill" and scenario == "b":
            return min(self.papermill_b_reps, self.reps["b"])
        return self.reps[scenario]


def metric_of(scenario: str) -> list[tuple[str, str, Callable[[RunResult], float | None]]]:
    """(key, label, getter) of the metrics a scenario reports, the headline first."""
    if scenario == "c":
        return [
            ("wall_s", "wall time (s)", lambda r: r.wall_s),
            (
                "executor_peak_rss_mib",
                "executor peak RSS (MiB)",
                lambda r: None if r.executor_peak_rss is None else r.executor_peak_rss / MIB,
            ),
            (
                "kernel_peak_rss_mib",
                "kernel peak RSS (MiB, for reference)",
                lambda r: None if r.kernel_peak_rss is None else r.kernel_peak_rss / MIB,
            ),
            (
                "output_mib",
                "output notebook size (MiB)",
                lambda r: None if r.output_bytes is None else r.output_bytes / MIB,
            ),
        ]
    if scenario == "d":
        return [
            ("startup_s", "launch to first cell (s)", lambda r: r.startup_s),
            ("wall_s", "wall time (s)", lambda r: r.wall_s),
        ]
    if scenario == "e":
        return [
            ("wall_s", "wall time (s)", lambda r: r.wall_s),
            (
                "cell_output_kib",
                "bar cell's outputs (KiB)",
                lambda r: None if r.cell_output_bytes is None else r.cell_output_bytes / 1024,
            ),
            (
                "final_visible",
                "last bar and FINAL visible (1 = yes)",
                lambda r: None if r.final_visible is None else float(r.final_visible),
            ),
            (
                "log_kib",
                "executor.log (KiB; nbjob only)",
                lambda r: None if r.log_bytes is None else r.log_bytes / 1024,
            ),
            (
                "executor_peak_rss_mib",
                "executor peak RSS (MiB)",
                lambda r: None if r.executor_peak_rss is None else r.executor_peak_rss / MIB,
            ),
        ]
    if scenario in SCALE_CELLS:
        cells = SCALE_CELLS[scenario]
        return [
            ("wall_s", "wall time (s)", lambda r: r.wall_s),
            ("ms_per_cell", "ms per cell (wall / cells)", lambda r: 1000 * r.wall_s / cells),
            (
                "executor_peak_rss_mib",
                "executor peak RSS (MiB)",
                lambda r: None if r.executor_peak_rss is None else r.executor_peak_rss / MIB,
            ),
        ]
    if scenario == "f":
        return [
            ("wall_s", "wall time (s)", lambda r: r.wall_s),
            (
                "widget_models",
                "widget models stored",
                lambda r: None if r.widget_models is None else float(r.widget_models),
            ),
        ]
    return [("wall_s", "wall time (s)", lambda r: r.wall_s)]


def summarize(results: list[RunResult], cfg: Config) -> dict[str, dict[str, dict[str, Any]]]:
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario in cfg.scenarios:
        summary[scenario] = {}
        for runner in cfg.runners:
            runs = [r for r in results if r.runner == runner and r.scenario == scenario]
            ok = [r for r in runs if r.ok]
            entry: dict[str, Any] = {"runs": len(runs), "ok": len(ok)}
            for key, _label, get in metric_of(scenario):
                values = [v for v in (get(r) for r in ok) if v is not None]
                entry[key] = {
                    "median": statistics.median(values) if values else None,
                    "min": min(values) if values else None,
                    "max": max(values) if values else None,
                    "values": values,
                }
            entry["errors"] = sorted({r.error for r in runs if r.error})
            entry["stray_kernels_killed"] = sum(r.stray_kernels_killed for r in runs)
            summary[scenario][runner] = entry
    return summary


def _median(
    summary: dict[str, dict[str, dict[str, Any]]], scn: str, runner: str, key: str
) -> float | None:
    entry = summary.get(scn, {}).get(runner)
    if not entry or entry["ok"] == 0 or entry["ok"] < entry["runs"]:
        return None  # a runner that failed any run gets no median: it did not do the job
    value = entry[key]["median"]
    return None if value is None else float(value)


@dataclass
class Target:
    scenario: str
    text: str
    verdict: str  # PASS, FAIL or n/a
    detail: str


def evaluate_targets(summary: dict[str, dict[str, dict[str, Any]]], cfg: Config) -> list[Target]:
    targets: list[Target] = []
    if "nbjob" not in cfg.runners:
        return targets

    def med(scn: str, runner: str, key: str) -> float | None:
        return _median(summary, scn, runner, key)

    def span(scn: str, runner: str, key: str, digits: int) -> str:
        entry = summary[scn][runner][key]
        return f"{entry['min']:.{digits}f}-{entry['max']:.{digits}f}"

    def versus(scn: str, key: str, nj: float, nc: float, runner: str = "nbjob") -> str:
        detail = (
            f"{RUNNER_LABELS[runner]} {nj:.3f} s (runs {span(scn, runner, key, 3)}) vs nbclient"
            f" {nc:.3f} s (runs {span(scn, 'nbclient', key, 3)})"
        )
        if abs(nj - nc) < 0.03 * nc:
            detail += "; medians within 3%: a tie at this machine's noise level"
        return detail

    def no_slower_than_nbclient(scn: str, key: str, what: str) -> Target:
        nj, nc = med(scn, "nbjob", key), med(scn, "nbclient", key)
        text = f"nbjob no slower than nbclient (median {what})"
        if nj is None:
            return Target(scn, text, "FAIL", "nbjob did not complete every run")
        if nc is None:
            return Target(scn, text, "n/a", "no nbclient median")
        return Target(scn, text, "PASS" if nj <= nc else "FAIL", versus(scn, key, nj, nc))

    def faster_by(scn: str, key: str, what: str) -> Target:
        """Issue 22: the default run at least 1.2x nbclient's speed."""
        nj, nc = med(scn, "nbjob", key), med(scn, "nbclient", key)
        text = f"nbjob run at least {B_MIN_VS_NBCLIENT:g}x faster than nbclient (median {what})"
        if nj is None or nc is None:
            return Target(scn, text, "FAIL" if nj is None else "n/a", "a runner has no median")
        verdict = "PASS" if nc / nj >= B_MIN_VS_NBCLIENT else "FAIL"
        return Target(scn, text, verdict, f"{versus(scn, key, nj, nc)}: {nc / nj:.2f}x")

    def no_more_memory_than_nbclient(scn: str) -> Target:
        key = "executor_peak_rss_mib"
        nj, nc = med(scn, "nbjob", key), med(scn, "nbclient", key)
        text = "nbjob run's executor peak RSS (its renderer child counted) not above nbclient's"
        if nj is None or nc is None:
            return Target(scn, text, "FAIL" if nj is None else "n/a", "a runner has no median")
        verdict = "PASS" if nj <= nc else "FAIL"
        return Target(scn, text, verdict, f"nbjob {nj:.0f} MiB vs nbclient {nc:.0f} MiB")

    def faster_than_nbclient_on_b(runner: str) -> Target:
        return faster_than_nbclient("b", runner)

    def faster_than_nbclient(scn: str, runner: str) -> Target:
        nj, nc = med(scn, runner, "wall_s"), med(scn, "nbclient", "wall_s")
        text = (
            f"{RUNNER_LABELS[runner]} at least {B_MIN_VS_NBCLIENT:g}x faster than nbclient"
            " (median wall time)"
        )
        if nj is None or nc is None:
            return Target(scn, text, "FAIL" if nj is None else "n/a", "a runner has no median")
        verdict = "PASS" if nc / nj >= B_MIN_VS_NBCLIENT else "FAIL"
        return Target(
            scn, text, verdict, f"{versus(scn, 'wall_s', nj, nc, runner)}: {nc / nj:.2f}x"
        )

    if "a" in cfg.scenarios:
        targets.append(no_slower_than_nbclient("a", "wall_s", "wall time"))
        targets.append(faster_by("a", "wall_s", "wall time"))
    if "b" in cfg.scenarios:
        nj, pm = med("b", "nbjob", "wall_s"), med("b", "papermill", "wall_s")
        text = (
            f"nbjob under {B_LIMIT_S:.0f} s and at least {B_MIN_SPEEDUP:.0f}x faster than papermill"
        )
        if nj is None:
            targets.append(Target("b", text, "FAIL", "nbjob did not complete every run"))
        elif pm is None:
            verdict = "FAIL" if nj >= B_LIMIT_S else "n/a"
            targets.append(Target("b", text, verdict, f"nbjob {nj:.2f} s; no papermill median"))
        else:
            speedup = pm / nj
            verdict = "PASS" if nj < B_LIMIT_S and speedup >= B_MIN_SPEEDUP else "FAIL"
            targets.append(
                Target(
                    "b",
                    text,
                    verdict,
                    f"nbjob {nj:.2f} s (runs {span('b', 'nbjob', 'wall_s', 2)}),"
                    f" papermill/nbjob {speedup:.1f}x",
                )
            )
    if "b" in cfg.scenarios:
        for runner in NBJOB_RUNNERS:
            if runner in cfg.runners:
                targets.append(faster_than_nbclient_on_b(runner))
    if "c" in cfg.scenarios:
        rss = med("c", "nbjob", "executor_peak_rss_mib")
        text = f"completes, executor peak RSS under {RSS_LIMIT_MIB:.0f} MiB"
        if rss is None:
            targets.append(Target("c", text, "FAIL", "nbjob did not complete every run"))
        else:
            entry = summary["c"]["nbjob"]["executor_peak_rss_mib"]
            worst = float(entry["max"])
            verdict = "PASS" if worst < RSS_LIMIT_MIB else "FAIL"
            targets.append(
                Target("c", text, verdict, f"median {rss:.1f} MiB, worst run {worst:.1f} MiB")
            )
    if "d" in cfg.scenarios:
        targets.append(no_slower_than_nbclient("d", "startup_s", "launch to first cell"))
        targets.append(faster_by("d", "startup_s", "launch to first cell"))
    for scn in SCALE_ONLY:
        if scn in cfg.scenarios:
            targets.append(faster_than_nbclient(scn, "nbjob"))
            targets.append(no_more_memory_than_nbclient(scn))
    return targets


# --------------------------------------------------------------------------- facts and report


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_facts() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    commit = ""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "executor"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if dirty:
            commit += " + uncommitted executor/ changes"
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": commit,
        "versions": {
            d: _version(d)
            for d in (
                "nbjob",
                "papermill",
                "nbclient",
                "nbconvert",
                "jupyter_client",
                "ipykernel",
                "nbformat",
                "pyzmq",
                "tornado",
                "psutil",
            )
        },
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den == 0:
        return "n/a"
    return f"{num / den:.2f}x"


def _cell(
    summary: dict[str, dict[str, dict[str, Any]]], scn: str, runner: str, key: str, digits: int
) -> str:
    entry = summary[scn].get(runner)
    if entry is None:
        return "not run"
    value = _median(summary, scn, runner, key)
    if value is None:
        if entry["runs"] == 0:
            return "n/a (not run)"
        if entry["ok"] == entry["runs"]:
            return "—"  # every run went well: this runner has no such figure (nbjob's log)
        return f"n/a ({entry['runs'] - entry['ok']}/{entry['runs']} failed)"
    return f"{value:.{digits}f}"


def render_markdown(
    facts: dict[str, Any],
    cfg: Config,
    summary: dict[str, dict[str, dict[str, Any]]],
    targets: list[Target],
    kernel_check: dict[str, Any],
    elapsed_s: float,
) -> str:
    v = facts["versions"]
    lines = [
        "# Benchmarks",
        "",
        "nbjob against the two usual ways to run a notebook in a job, on the same notebooks, in",
        "the same kernel, in one run of `make bench` (`bench/run.py`). Every runner is started as",
        "a subprocess, the way a platform starts it:",
        "",
        "- **nbjob**: `nbjob run NOTEBOOK --output DIR`",
        f"- **papermill** {v['papermill']} CLI with defaults: `papermill in.ipynb out.ipynb`",
        f"- **nbclient** {v['nbclient']}: `jupyter execute --output=out in.ipynb`",
        "",
        f"Measured {facts['date_utc']} on {facts['cpus_usable']} cores ({facts['cpu_model']}),"
        f" {facts['memory_gib']} GiB, {facts['os']}, Python {facts['python']}; "
        f"jupyter_client {v['jupyter_client']}, ipykernel {v['ipykernel']}, "
        f"nbformat {v['nbformat']}, pyzmq {v['pyzmq']}, nbconvert {v['nbconvert']}; "
        f"nbjob {v['nbjob']} at `{facts['git_commit']}`. Whole run: "
        f"{elapsed_s / 60:.1f} min{' (`--quick`)' if cfg.quick else ''}; load average"
        f" (1/5/15 min) {facts['load_average_at_start']} at the start,"
        f" {facts.get('load_average_at_end')} at the end.",
        "",
        f"Medians over the repetitions in the `n` column ({' / '.join(RUNNERS)}). Ratios",
        "above 1 mean nbjob is faster (or smaller); nbjob-noreport is `nbjob run --no-report`.",
        "",
        f"| scenario | metric | n | {' | '.join(RUNNERS)} | papermill/nbjob | nbclient/nbjob |",
        "|---|---|---|" + "---:|" * (len(RUNNERS) + 2),
    ]
    for scn in cfg.scenarios:
        reps = "/".join(str(summary[scn][r]["runs"]) if r in summary[scn] else "-" for r in RUNNERS)
        for i, (key, label, _get) in enumerate(metric_of(scn)):
            digits = 1 if key.endswith("_mib") else (3 if scn in ("a", "d") else 2)
            nj = _median(summary, scn, "nbjob", key)
            pm = _median(summary, scn, "papermill", key)
            nc = _median(summary, scn, "nbclient", key)
            cells = [_cell(summary, scn, r, key, digits) for r in RUNNERS]
            ratios = ["", ""] if key in NO_RATIO else [_ratio(pm, nj), _ratio(nc, nj)]
            title = SCENARIO_TITLES[scn] if i == 0 else ""
            lines.append(
                f"| {title} | {label} | {reps if i == 0 else ''} | {' | '.join(cells)} | "
                f"{ratios[0]} | {ratios[1]} |"
            )
    lines += [
        "",
        "## Targets",
        "",
        "| scenario | target | result | measured |",
        "|---|---|---|---|",
    ]
    for t in targets:
        lines.append(f"| ({t.scenario}) | {t.text} | **{t.verdict}** | {t.detail} |")
    lines += ["", "## Notes", ""]
    if "b" in cfg.scenarios and cfg.reps_for("papermill", "b") < cfg.reps["b"]:
        lines.append(
            f"- papermill on (b) ran {cfg.reps_for('papermill', 'b')} time(s) only (it rewrites"
            " the whole notebook at every cell start and end, about 2 minutes a run); the other"
            f" runners ran {cfg.reps['b']} times. Change with `--papermill-b-reps`."
        )
    exes = {r: kc.get("executable") for r, kc in kernel_check.items()}
    reals = {
        r: f"{kc['prefix']} ({kc['realpath']})" if kc.get("prefix") else None
        for r, kc in kernel_check.items()
    }
    same = len({e for e in reals.values() if e}) == 1 and all(reals.values())
    lines.append(
        "- Same kernel for every runner: "
        + ("yes" if same else "**NO**")
        + " (warm-up run recording the kernel's `sys.executable`: "
        + ", ".join(f"{r} `{e or 'n/a'}`" for r, e in exes.items())
        + "; sys.prefix (interpreter): "
        + ", ".join(sorted({f"`{e}`" for e in reals.values() if e}))
        + "; kernelspec `python3`)."
    )
    lines += [
        "- Runs are interleaved round-robin across runners; one untimed warm-up run per runner"
        " precedes them. Wall time is from just before `Popen` to the runner's exit, kernel"
        " start and shutdown included. Each run gets a fresh working directory (its cwd).",
        "- Every runner starts with `bench/shim` first on PYTHONPATH: jsonschema's optional"
        " `rfc3987_syntax` import (which jupyter_server, in the dev venv for the remote-kernel"
        " tests, pulls in) fails at once instead of costing 0.5-2 s per process; nbjob skips it"
        " itself, so without the shim papermill and nbclient would start slower than in a plain"
        " venv.",
        "- nbjob's modules are compiled to bytecode before the runs, as a pip install (the"
        " images') leaves them: the venv's editable install has none, and with"
        " PYTHONDONTWRITEBYTECODE set each run would compile them again (about 0.3 s of CPU),"
        " while papermill and nbclient start from the bytecode pip wrote.",
        "- (d): the first cell writes `time.time()` to a file; the figure is that minus"
        " `time.time()` taken just before `Popen`.",
        "- (c): executor peak RSS is the high-water mark (`VmHWM`) of the runner's own process"
        " plus the RSS of any non-kernel child processes it starts, sampled every 20 ms; the"
        " kernel (`ipykernel_launcher` and its children) is excluded and listed separately. The"
        " output notebook size shows how much of the 100 MB each runner kept: nbjob keeps at"
        " most `--max-output-bytes` (default 1 MB) of a cell's stream output in the notebook and"
        " the whole text in `executor.log`; papermill and nbclient keep it all in memory and in"
        " the notebook.",
    ]
    if "e" in cfg.scenarios:
        lines.append(
            "- (e) is a Keras-style bar: each update writes backspaces over the previous bar,"
            " `\\r`, the bar with ANSI bold; `sys.stdout.flush()` every 10th update (20,000 IOPub"
            ' messages), then `print()` and `FINAL accuracy=0.9731`. "Visible" means the last'
            " 2,000 characters of the cell's stream text hold both `200000/200000` and the FINAL"
            " line. nbjob keeps what JupyterLab shows (one line of bar, then FINAL); papermill and"
            " nbclient keep every raw update. Lost IOPub messages cannot be counted from a folded"
            " notebook: `bench/iopub_loss.py` counts them at the session level."
        )
    if "f" in cfg.scenarios:
        lines.append(
            "- (f): widget models stored in the notebook's `metadata.widgets` (nbjob writes them"
            " at every checkpoint and cell end, so a failed or stopped run keeps them too)."
        )
    if any(s in cfg.scenarios for s in SCALE_ONLY):
        lines.append(
            "- (b), (g), (h): the same trivial cell (`x = 1`) 1,000, 5,000 and 20,000 times: the"
            " per-cell cost, flat or growing with the notebook. papermill is not run on (g) and"
            " (h) (it rewrites the whole notebook at every cell). nbjob renders its report in"
            " its own process (nbconvert's lab template without nbconvert, a long notebook by"
            " chunks into a file); a run longer than `--report-interval` (60 s) also starts the"
            " renderer child that refreshes the report, and its executor peak RSS counts that"
            " child ((h) can last that long);"
            " nbclient writes no report; `--no-report` is nbjob without it. Few repetitions: on"
            " this shared machine the same (h) run took 48 s and 64 s an hour apart, so read (g)"
            " and (h) with that noise."
        )
    lines += [
        "- A run that fails (non-zero exit, missing or incompletely executed output notebook)"
        " gives that runner no median for the scenario (`n/a`); errors are in"
        " `bench/results.json`.",
    ]
    for r, kc in kernel_check.items():
        if kc.get("first_error"):
            first = str(kc["first_error"]).replace("\n", " ").replace("|", "/")[:300]
            lines.append(
                f"- {r}: the untimed warm-up run failed once and was retried"
                f" ({'ok' if kc['ok'] else 'failed again'}): `{first}`"
            )
    strays = {
        f"{r} ({scn})": summary[scn][r]["stray_kernels_killed"]
        for scn in cfg.scenarios
        for r in summary[scn]
        if summary[scn][r]["stray_kernels_killed"]
    }
    if strays:
        lines.append(
            "- Processes left running 5 s after the runner exited (killed by the bench): "
            + ", ".join(f"{k}: {n}" for k, n in strays.items())
            + "."
        )
    else:
        lines.append("- No runner left a kernel or other process behind.")
    errors = {
        f"{r} ({scn})": summary[scn][r]["errors"]
        for scn in cfg.scenarios
        for r in summary[scn]
        if summary[scn][r]["errors"]
    }
    for k, errs in errors.items():
        first = errs[0].replace("\n", " ").replace("|", "/")[:300]
        lines.append(
            f"- {k} failed: `{first}`" + (f" (+{len(errs) - 1} more)" if len(errs) > 1 else "")
        )
    lines += [
        "",
        "Reproduce: `make bench` (or `.venv/bin/python bench/run.py --help` for repetitions,"
        " `--quick`, and a subset of runners or scenarios). Raw numbers: `bench/results.json`.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def compile_nbjob() -> None:
    """nbjob's bytecode, as a pip install (the images') leaves it: the venv's editable install
    has none, and where PYTHONDONTWRITEBYTECODE is set every run would compile nbjob's ~100
    modules again (about 0.3 s of CPU), while papermill and nbclient, installed by pip, start
    from theirs."""
    import compileall

    compileall.compile_dir(str(REPO / "executor" / "nbjob"), quiet=1)


def nbjob_available() -> tuple[bool, str]:
    exe = NBJOB_BIN[0]
    if not exe.exists():
        return False, f"{exe} not found"
    proc = subprocess.run([str(exe), "run", "--help"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return False, f"`nbjob run --help` exited {proc.returncode}: {lines[-1] if lines else ''}"
    return True, ""


def kernel_check_run(
    runner: str, nb: Path, root: Path, info_file: Path, timeout_s: float
) -> dict[str, Any]:
    """Warm-up run that records the kernel's interpreter; retried once if it fails (it is not
    a measurement, but its failure is kept in ``first_error``)."""
    info_file.unlink(missing_ok=True)
    res = run_once(runner, "check", 0, nb, root, timeout_s)
    first_error = None
    if not res.ok:
        first_error = res.error
        info_file.unlink(missing_ok=True)
        res = run_once(runner, "check", 1, nb, root, timeout_s)
    out: dict[str, Any] = {
        "ok": res.ok,
        "wall_s": res.wall_s,
        "error": res.error,
        "first_error": first_error,
    }
    if info_file.is_file():
        out.update(json.loads(info_file.read_text()))
    return out


def _other_benches(markdown: Path) -> str:
    """The sections other benches keep in the same file between their markers
    (``<!-- bench/NAME: start -->`` ... ``<!-- bench/NAME: end -->``), kept as they are."""
    text = markdown.read_text() if markdown.exists() else ""
    blocks = re.finditer(r"<!-- (bench/[\w.]+): start -->.*?<!-- \1: end -->", text, re.S)
    return "".join(f"\n{m.group(0)}\n" for m in blocks)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 repetition for the slow scenarios (b, c) and 3 for (a), (d)",
    )
    p.add_argument("--reps-a", type=int, default=None, help="repetitions for (a) (default 5)")
    p.add_argument("--reps-b", type=int, default=None, help="repetitions for (b) (default 3)")
    p.add_argument("--reps-c", type=int, default=None, help="repetitions for (c) (default 3)")
    p.add_argument("--reps-d", type=int, default=None, help="repetitions for (d) (default 5)")
    p.add_argument("--reps-e", type=int, default=None, help="repetitions for (e) (default 1)")
    p.add_argument("--reps-f", type=int, default=None, help="repetitions for (f) (default 1)")
    p.add_argument("--reps-g", type=int, default=None, help="repetitions for (g) (default 1)")
    p.add_argument("--reps-h", type=int, default=None, help="repetitions for (h) (default 1)")
    p.add_argument(
        "--papermill-b-reps",
        type=int,
        default=3,
        help="at most this many repetitions for papermill on (b), about 2 min each"
        " (default 3; --quick: 1)",
    )
    p.add_argument(
        "--runners",
        default=",".join(RUNNERS),
        help="comma-separated subset of: " + ", ".join(RUNNERS),
    )
    p.add_argument(
        "--scenarios",
        default="a,d,b,c,e,f,g,h",
        help="comma-separated subset of a, b, c, d, e, f, g, h",
    )
    p.add_argument(
        "--nbjob-bin",
        type=Path,
        default=BIN / "nbjob",
        help="the nbjob executable (default: the one next to this Python)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="per-run limit in seconds for every scenario (default: a, d 30; b 600;"
        " c 300); a run past it is killed and counted as failed",
    )
    p.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results.json")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quick = bool(args.quick)
    defaults = {"a": 3, "b": 1, "c": 1, "d": 3} if quick else {"a": 5, "b": 3, "c": 3, "d": 5}
    defaults.update(e=1, f=1, g=1, h=1)
    given = {"a": args.reps_a, "b": args.reps_b, "c": args.reps_c, "d": args.reps_d}
    given.update(e=args.reps_e, f=args.reps_f, g=args.reps_g, h=args.reps_h)
    reps = {s: given[s] if given[s] is not None else defaults[s] for s in SCENARIOS}
    runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for r in runners:
        if r not in RUNNERS:
            raise SystemExit(f"unknown runner {r!r}")
    for s in scenarios:
        if s not in SCENARIOS:
            raise SystemExit(f"unknown scenario {s!r}")
    NBJOB_BIN[0] = args.nbjob_bin.resolve()
    timeouts = {"a": 30.0, "b": 600.0, "c": 300.0, "d": 30.0, "e": 600.0, "f": 120.0}
    timeouts.update(g=300.0, h=900.0)
    timeouts["check"] = 30.0
    if args.timeout is not None:
        timeouts = dict.fromkeys(timeouts, float(args.timeout))
    cfg = Config(reps, 1 if quick else args.papermill_b_reps, runners, scenarios, timeouts, quick)

    started = time.monotonic()
    facts = machine_facts()
    root = Path(tempfile.mkdtemp(prefix="nbjob-bench-"))
    stamp_file = root / "first-cell.stamp"
    info_file = root / "kernel-info.json"
    books = write_notebooks(root / "notebooks", stamp_file, info_file)
    results: list[RunResult] = []
    kernel_check: dict[str, Any] = {}
    skipped: dict[str, str] = {}

    def say(msg: str) -> None:
        print(f"[bench {time.monotonic() - started:7.1f}s] {msg}", flush=True)

    try:
        if any(r in NBJOB_RUNNERS for r in runners):
            compile_nbjob()
            ok, why = nbjob_available()
            if not ok:
                say(f"nbjob not usable, reporting it as n/a: {why}")
                skipped.update({r: why for r in runners if r in NBJOB_RUNNERS})
        active = [r for r in runners if r not in skipped]
        for r in active:
            kernel_check[r] = kernel_check_run(
                r, books["check"], root, info_file, cfg.timeouts["check"]
            )
            kc = kernel_check[r]
            say(
                f"warm-up {r}: ok={kc['ok']} {kc['wall_s']:.2f}s kernel={kc.get('executable')}"
                + (f" error={kc['error']}" if kc["error"] else "")
            )
        for scn in scenarios:
            most = max(cfg.reps_for(r, scn) for r in active) if active else 0
            for rep in range(most):
                for r in active:
                    if rep >= cfg.reps_for(r, scn):
                        continue
                    res = run_once(
                        r,
                        scn,
                        rep,
                        books[scn],
                        root,
                        cfg.timeouts[scn],
                        stamp_file=stamp_file if scn == "d" else None,
                        sample_memory=scn in ("b", "c", "e", *SCALE_ONLY),
                    )
                    results.append(res)
                    extra = ""
                    if res.startup_s is not None:
                        extra += f" startup={res.startup_s:.3f}s"
                    if res.executor_peak_rss is not None:
                        extra += (
                            f" exec_rss={res.executor_peak_rss / MIB:.1f}MiB"
                            f" kernel_rss={(res.kernel_peak_rss or 0) / MIB:.1f}MiB"
                        )
                    if res.output_bytes is not None and scn == "c":
                        extra += f" out={res.output_bytes / MIB:.1f}MiB"
                    if res.stray_kernels_killed:
                        extra += f" strays_killed={res.stray_kernels_killed}"
                    say(
                        f"({scn}) {r} #{rep + 1}: {'ok' if res.ok else 'FAIL'} "
                        f"{res.wall_s:.2f}s{extra}"
                        + ("" if res.ok else f" error={(res.error or '')[:300]!r}")
                    )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    summary = summarize(results, cfg)
    for r in skipped:
        for scn in scenarios:
            summary[scn][r]["errors"] = [f"not run: {skipped[r]}"]
    targets = evaluate_targets(summary, cfg)
    elapsed = time.monotonic() - started
    facts["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    md = render_markdown(facts, cfg, summary, targets, kernel_check, elapsed)
    args.markdown.write_text(md + _other_benches(args.markdown))
    payload = {
        "machine": facts,
        "config": asdict(cfg),
        "skipped_runners": skipped,
        "kernel_check": kernel_check,
        "summary": summary,
        "targets": [asdict(t) for t in targets],
        "runs": [asdict(r) for r in results],
        "elapsed_s": elapsed,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n")
    say(f"wrote {args.markdown} and {args.json}")
    for t in targets:
        say(f"target ({t.scenario}) {t.verdict}: {t.text} -- {t.detail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
