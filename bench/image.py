#!/usr/bin/env python3
"""The framework image's first-cell time: a torch notebook through the image's default
entrypoint vs the same code as ``python script.py`` in a container of the same image.

Needs a container engine and the image (``make images``, or ``tests/images/build.sh --cpu
torch`` here: podman with the private store, ``localhost/nbjob-torch:cpu``)::

    .venv/bin/python bench/image.py --reps 5 --json bench/image.json

The notebook and script are bench/gpu.py's (a small CNN, synthetic data, a training loop; the
first cell writes ``time.time()`` to a file), in a folder bind-mounted at ``/data``. Runners,
in turns (``--reps`` rounds, the order reversed every other round):

- ``start``: the container alone (``tini -- true``): the engine's own cost, the floor;
- ``script``: ``tini -- python /data/script.py`` in the image;
- ``nbjob``: the image as a platform starts it (its entrypoint: ``nbjob run``, the default:
  report, resource sampler), ``IMAGE /data/train.ipynb --output /data/out``.

For each run: launch (the engine's command) to exit, launch to the first cell's first line
(the container and the host share the clock), the training loop, the last cell's result to
the exit; nbjob's phases from its executor.log. ``--run-args`` adds engine options to every
run (a GPU: ``--gpus all`` with docker, ``--device nvidia.com/gpu=all`` with podman's CDI).
Each measurement is appended to ``--json`` (``--note`` says what it measured) and every one
kept is rendered into BENCHMARKS.md (``--render``: only that).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gpu
from common import write_section

ROOT = Path(__file__).resolve().parents[1]
PODMAN = ROOT / "tests" / "images" / "podman.sh"
START, END = "<!-- bench/image.py: start -->", "<!-- bench/image.py: end -->"
RUNNERS = ("start", "script", "nbjob")
STEPS, BATCH = 50, 4  # about 1.5 s of training on a CPU: the cost measured is fixed


def engine() -> list[str]:
    """docker when it answers, else podman with the tests' private store (podman.sh)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        return [docker]
    return [str(PODMAN)]


def argv_for(runner: str, image: str, run_args: list[str], env: dict[str, str]) -> list[str]:
    pairs = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    base = ["run", "--rm", "--network", "none", *run_args, *pairs]
    if runner == "start":
        return [*base, "--entrypoint", "tini", image, "--", "true"]
    if runner == "script":
        return [*base, "--entrypoint", "tini", image, "-g", "--", "python", "/data/script.py"]
    if runner == "nbjob":
        return [*base, image, "/data/train.ipynb", "--output", "/data/out"]
    raise ValueError(runner)


def run_once(
    runner: str, image: str, folder: Path, steps: int, batch: int, run: list[str]
) -> dict[str, Any]:
    """One container run, its work in a fresh subfolder of ``folder`` (mounted at /data);
    ``run``: the engine's command, then the options for every run."""
    work = Path(tempfile.mkdtemp(prefix=f"{runner}-", dir=folder))
    for name in ("train.ipynb", "script.py"):
        shutil.copy(folder / name, work / name)
    work.chmod(0o777)  # the image's user (uid 1000) writes there
    env = {
        "BENCH_MARK": f"/data/{gpu.MARK}",
        "BENCH_RESULT": f"/data/{gpu.RESULT}",
        "BENCH_STEPS": str(steps),
        "BENCH_BATCH": str(batch),
    }
    command, options = run[:1], [*run[1:], "-v", f"{work}:/data"]
    argv = [*command, *argv_for(runner, image, options, env)]
    launched = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if runner == "start":  # no cell: its time and status only
        row: dict[str, Any] = {"runner": runner, "wall_s": wall, "rc": proc.returncode}
        return row if proc.returncode == 0 else {**row, "error": proc.stderr[-2000:]}
    return gpu.outcome(runner, proc, work, launched, wall)


def measure(
    image: str, reps: int, steps: int, batch: int, runners: tuple[str, ...], run_args: list[str]
) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="nbjob-image-bench-"))
    gpu.write_inputs(folder)
    rows: list[dict[str, Any]] = []
    command = engine()
    inspect = subprocess.run(
        [*command, "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, text=True
    )
    data = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "image": image,
        "image_id": inspect.stdout.split()[0][:19] if inspect.returncode == 0 else None,
        "run_args": run_args,
        "steps": steps,
        "batch": batch,
        "machine": {"cpus": os.cpu_count(), "host_python": platform.python_version()},
        "runs": rows,
    }
    try:
        for rep in range(reps):
            for runner in runners if rep % 2 == 0 else runners[::-1]:
                done = run_once(runner, image, folder, steps, batch, [*command, *run_args])
                row = {**done, "rep": rep}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return data


def render(measurements: list[dict[str, Any]]) -> str:
    """The image's section of BENCHMARKS.md: a row per runner of each measurement (oldest
    first), and the image's first-cell time read on the latest of the default (``headline``)."""
    f = gpu._fmt
    data = headline(measurements)
    lines = [
        START,
        "## The image's first-cell time (bench/image.py)",
        "",
        f"{data['machine']['cpus']} CPUs: bench/gpu.py's torch notebook (training "
        f"{data['steps']} steps at batch {data['batch']}) through the image's entrypoint "
        "(`nbjob run`, the default: report, resource sampler), the same cells as `python "
        "script.py` in a container of the same image, and the container alone (`tini -- "
        "true`); runners in turns, launch = the engine's command. Medians:",
        "",
        "| measured | image (engine options) | runner | runs | launch to exit (s) "
        "| launch to first cell (s) | training loop (s) | last cell to exit (s) "
        "| kernel started early |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for m in measurements:
        for runner in RUNNERS:
            runs = [r for r in m["runs"] if r["runner"] == runner and "error" not in r]
            early = {str(r.get("early_start")).lower() for r in runs} if runner == "nbjob" else ""
            if runs:
                lines.append(
                    f"| {m['when']} | `{m['image']}` {m['image_id']}{options(m)} | {runner} "
                    f"| {len(runs)} "
                    f"| {f(gpu._median(m, runner, 'wall_s'))} "
                    f"| {f(gpu._median(m, runner, 'first_cell_s'))} "
                    f"| {f(gpu._median(m, runner, 'train_s'))} "
                    f"| {f(gpu._median(m, runner, 'end_s'))} "
                    f"| {', '.join(sorted(early))} |"
                )
    first, line = (
        gpu._median(data, "nbjob", "first_cell_s"),
        gpu._median(data, "script", "first_cell_s"),
    )
    start = gpu._median(data, "start", "wall_s")
    extra = None if first is None or line is None else first - line
    notes = [f"{m['when']}: {m['note']}" for m in measurements if m.get("note")]
    lines += [
        "",
        f"The image's first-cell time ({data['when']}): **{f(first)} s** from the engine's "
        f"command to the notebook's first line ({f(start)} s: a container's own start and "
        f"exit, the floor), vs {f(line)} s to a script's first line in the same image: nbjob "
        f"and the kernel's start add {f(extra)} s. In nbjob's runs, from the launch: nbjob's "
        f"run_start at {f(gpu._phase(data, 'launch', 'run_start'))} s, the kernel ready at "
        f"{f(gpu._phase(data, 'launch', 'kernel_ready'))} s, the first cell at "
        f"{f(gpu._phase(data, 'launch', 'cell_start'))} s; run_end to the container's exit "
        f"{f(gpu._phase(data, 'run_end', 'exit'))} s.",
        *(["", "Notes: " + "; ".join(notes) + "."] if notes else []),
        *gpu.failed(measurements),
        "Raw numbers: bench/image.json.",
        END,
    ]
    return "\n".join(lines)


def headline(measurements: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest measurement of the image as a platform starts it (no engine options) with
    every runner; else the latest."""
    for m in reversed(measurements):
        if not m.get("run_args") and {r["runner"] for r in m["runs"]} >= set(RUNNERS):
            return m
    return measurements[-1]


def options(data: dict[str, Any]) -> str:
    """A measurement's engine options, where it had any."""
    return f", `{shlex.join(data['run_args'])}`" if data.get("run_args") else ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--image", default="localhost/nbjob-torch:cpu")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--runners", default=",".join(RUNNERS), help="comma-separated, in order")
    p.add_argument("--run-args", default="", help="engine options for every run (a GPU's)")
    p.add_argument("--note", help="a word on this measurement, kept with it")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "image.json")
    p.add_argument("--render", action="store_true", help="render the kept measurements only")
    p.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    args = p.parse_args(argv)
    kept = gpu.load([args.json]) if args.json.exists() else []
    if not args.render:
        runners = tuple(args.runners.split(","))
        run_args = shlex.split(args.run_args)
        data = measure(args.image, args.reps, args.steps, args.batch, runners, run_args)
        kept.append({**data, **({"note": args.note} if args.note else {})})
        args.json.write_text(json.dumps(kept, indent=1) + "\n")
    if not kept:
        raise SystemExit(f"no measurement kept in {args.json}")
    section = render(kept)
    print(section)
    if args.markdown.exists():
        write_section(args.markdown, section, START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
