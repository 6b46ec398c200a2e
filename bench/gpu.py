#!/usr/bin/env python3
"""A torch training notebook on the GPU: nbjob vs the same code as ``python script.py``.

Needs a machine with a CUDA GPU and torch; nbjob, jupyter_client, ipykernel and nbclient
importable by the Python that runs it (``PYTHONPATH=executor`` from the repository root)::

    python bench/gpu.py --reps 3 --seconds 20 --json bench/gpu.json

Writes one notebook (bench-specific first cell, then imports, model, synthetic data, a
training loop printing every 100 steps, a result cell) and the same cells joined into
``script.py``. A calibration run of the script picks the step count that trains for about
``--seconds``; then the runners go in turns, ``--reps`` times each, in one order per round:

- ``python script.py``: the code as a script;
- ``nbjob run``: the default run (report written, resource sampler on);
- ``jupyter execute`` (nbclient), for reference.

For each run: the wall time from launch to exit, launch to the first cell's first line (it
writes ``time.time()`` to a file), and the training loop's own time (synchronized, measured in
the code), so an overhead in the loop (messages slowing the GPU work) shows apart from the
fixed cost of the kernel's start, and from the last cell's result file to the exit (the
kernel's exit, CUDA's teardown). nbjob's run.json is read for the GPUs it saw and the
resource figures it kept, and its executor.log for when each phase began (its setup, the
kernel ready, the probes, the first cell, the end). ``--steps N`` skips the calibration,
``--runners script,nbjob`` runs fewer. ``--from JSON...`` renders kept measurements into the
"GPU" section of BENCHMARKS.md (the measurement runs where the GPU is; the section is written
here). On a machine whose Python has torch but not Jupyter, the packages can come as wheels
installed with ``pip install --target DIR``: then ``PYTHONPATH=DIR:executor`` and
``JUPYTER_PATH=DIR/share/jupyter`` (nbconvert's templates, for the report); ``gpu_device.sh``
does it all (``wheels`` here, ``run`` on the lent machine, ``keep`` its result back here:
``--keep FILE`` appends it to ``--json`` and renders every measurement kept).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from common import write_section

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench/gpu.py: start -->", "<!-- bench/gpu.py: end -->"
TARGET = 0.02  # nbjob's wall time at most 2 % over the script's (issue 22)
RUNNERS = ("script", "nbjob", "nbclient")
# Images a step: 1024 keeps an H200 busy, so the loop's pace is the GPU's (a training job's
# usual state) rather than the CPU's launching of kernels, which the lent machine's runtime
# makes jittery (at 256 the same loop's runs scattered from 48.7 to 56.6 s).
BATCH = 1024
FIRST_BATCH = 256  # the batch of the measurements kept from before --batch (they name none)
MARK, RESULT = "mark", "result.json"  # what the first and last cells write in a run's folder
WARM_STEPS = 50  # steps before the steady pace (cuDNN's autotuning done): calibration skips them

CELLS = [
    # the bench's own first line: launch to first cell
    "import json, os, time\n"
    "with open(os.environ['BENCH_MARK'], 'w') as f:\n"
    "    f.write(repr(time.time()))\n"
    "steps = int(os.environ['BENCH_STEPS'])\n"
    f"batch = int(os.environ.get('BENCH_BATCH', '{FIRST_BATCH}'))",
    "import torch\n"
    "from torch import nn\n"
    "torch.manual_seed(0)\n"
    "torch.backends.cudnn.benchmark = True\n"
    "device = 'cuda' if torch.cuda.is_available() else 'cpu'  # the bench wants 'cuda'\n"
    "sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)\n"
    "name = torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'\n"
    "print('torch', torch.__version__, name)\n"
    "def block(cin, cout):\n"
    "    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),\n"
    "                         nn.ReLU(), nn.MaxPool2d(2))\n"
    "model = nn.Sequential(block(3, 64), block(64, 128), block(128, 256), block(256, 512),\n"
    "                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 100)).to(device)\n"
    "model = model.to(memory_format=torch.channels_last)\n"
    "opt = torch.optim.AdamW(model.parameters(), lr=1e-3)\n"
    "loss_fn = nn.CrossEntropyLoss()",
    "# synthetic data on the GPU: nothing is downloaded\n"
    "x = torch.randn(4096, 3, 64, 64, device=device).to(memory_format=torch.channels_last)\n"
    "y = torch.randint(0, 100, (4096,), device=device)",
    "model.train()\n"
    "sync()\n"
    "t0 = t50 = time.perf_counter()\n"
    "for step in range(steps):\n"
    "    i = (step * batch) % (x.shape[0] - batch)\n"
    "    with torch.autocast(device, dtype=torch.bfloat16):\n"
    "        loss = loss_fn(model(x[i:i + batch]), y[i:i + batch])\n"
    "    opt.zero_grad(set_to_none=True)\n"
    "    loss.backward()\n"
    "    opt.step()\n"
    "    if step % 100 == 0:\n"
    "        print(f'step {step} loss {loss.item():.4f}', flush=True)\n"
    f"    if step == {WARM_STEPS - 1}:  # warmed up (cuDNN's autotuning done): the steady pace\n"
    "        sync()\n"
    "        t50 = time.perf_counter()\n"
    "sync()\n"
    "train_s = time.perf_counter() - t0\n"
    "steady_s = time.perf_counter() - t50\n"
    "print(f'{steps} steps in {train_s:.2f} s')",
    "with open(os.environ['BENCH_RESULT'], 'w') as f:\n"
    "    json.dump({'train_s': train_s, 'steps': steps, 'steady_s': steady_s,\n"
    "               'peak_gpu_mib': torch.cuda.max_memory_allocated() / 2**20\n"
    "               if device == 'cuda' else 0,\n"
    "               'device': device}, f)",
]


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """The notebook and the script, the same cells."""
    cells: list[dict[str, Any]] = [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": f"c{i}",
            "metadata": {},
            "outputs": [],
            "source": src,
        }
        for i, src in enumerate(CELLS)
    ]
    notebook = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    nb, script = folder / "train.ipynb", folder / "script.py"
    nb.write_text(json.dumps(notebook, indent=1))
    script.write_text("\n\n".join(CELLS) + "\n")
    return nb, script


def argv_for(runner: str, nb: Path, script: Path, work: Path) -> list[str]:
    py = sys.executable
    if runner == "script":
        return [py, str(script)]
    if runner == "nbjob":
        return [py, "-m", "nbjob", "run", str(nb), "--output", str(work / "out")]
    if runner == "nbclient":
        launch = (
            "import sys; from nbclient.cli import main; sys.argv[0] = 'jupyter-execute'; main()"
        )
        return [py, "-c", launch, f"--output={work / 'out'}", str(nb)]
    raise ValueError(runner)


def run_once(
    runner: str, nb: Path, script: Path, steps: int, root: Path, batch: int = BATCH
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"{runner}-", dir=root))
    env = {
        **os.environ,
        "BENCH_MARK": str(work / MARK),
        "BENCH_RESULT": str(work / RESULT),
        "BENCH_STEPS": str(steps),
        "BENCH_BATCH": str(batch),
    }
    argv = argv_for(runner, nb, script, work)
    launched = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    return outcome(runner, proc, work, launched, wall)


def outcome(
    runner: str, proc: subprocess.CompletedProcess[str], work: Path, launched: float, wall: float
) -> dict[str, Any]:
    """A run's row: its wall time and exit status, and where it finished, what its cells wrote
    in ``work`` (``mark``, ``result.json``) and, for nbjob, its record (``work/out``)."""
    mark, result = work / MARK, work / RESULT
    row: dict[str, Any] = {"runner": runner, "wall_s": wall, "rc": proc.returncode}
    if proc.returncode != 0 or not result.exists():
        row["error"] = (proc.stderr or proc.stdout)[-2000:]
        return row
    row["first_cell_s"] = float(mark.read_text()) - launched
    row["end_s"] = launched + wall - result.stat().st_mtime  # the last cell's write to exit
    row.update(json.loads(result.read_text()))
    if runner == "nbjob":
        record = json.loads((work / "out" / "run.json").read_text())
        row["status"], row["gpus"] = record.get("status"), record.get("gpus")
        row["resources"] = record.get("resources")
        row["report"] = (record.get("report") or {}).get("name")
        row["early_start"] = (record.get("kernel") or {}).get("early_start", False)
        row["phases"] = phases(work / "out" / "executor.log", launched, launched + wall)
    return row


PHASES = ("run_start", "kernel_ready", "gpus", "cell_start", "run_end")


def phases(log: Path, launched: float, exited: float) -> dict[str, float]:
    """Seconds from launch to the first of each of ``PHASES`` in nbjob's executor.log, and
    ``"exit"`` (where nbjob's fixed cost goes: its imports, the kernel's start, the GPU probe,
    the end of the run)."""
    seen: dict[str, float] = {}
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        name = event.get("event")
        if name in PHASES and name not in seen:
            seen[name] = datetime.fromisoformat(event["ts"]).timestamp() - launched
    seen["exit"] = exited - launched
    return seen


def calibrate(nb: Path, script: Path, seconds: float, root: Path, batch: int) -> int:
    """Steps that train for about ``seconds``, from a short script run (CUDA warmed too)."""
    probe = run_once("script", nb, script, 300, root, batch)
    if "error" in probe:
        raise SystemExit(f"calibration run failed: {probe['error']}")
    per_step = probe["steady_s"] / (probe["steps"] - WARM_STEPS)
    return max(300, int(seconds / per_step) // 100 * 100)


def facts() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch

        out["torch"] = torch.__version__
        out["gpu"] = torch.cuda.get_device_name(0)
    except Exception as exc:  # the section says what was missing
        out["gpu"] = f"unavailable: {exc!r}"
    query = ["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"]
    try:
        smi = subprocess.run(query, capture_output=True, text=True, timeout=30)
        out["nvidia_smi"] = smi.stdout.strip() if smi.returncode == 0 else None
    except OSError:
        out["nvidia_smi"] = None
    return out


def measure(
    reps: int,
    seconds: float,
    steps: int | None,
    keep: Path,
    runners: tuple[str, ...],
    batch: int = BATCH,
) -> dict[str, Any]:
    """The runs, in turns; ``keep`` is rewritten after each (a cut-off run keeps what it had)."""
    root = Path(tempfile.mkdtemp(prefix="nbjob-gpu-bench-"))
    nb, script = write_inputs(root)
    steps = steps or calibrate(nb, script, seconds, root, batch)
    print(f"steps {steps}", flush=True)
    rows: list[dict[str, Any]] = []
    data: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "steps": steps,
        "batch": batch,
        "reps": reps,
        "machine": facts(),
        "runs": rows,
    }
    for rep in range(reps):
        order = runners if rep % 2 == 0 else runners[::-1]
        for runner in order:
            row = run_once(runner, nb, script, steps, root, batch)
            row["rep"] = rep
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "resources"}), flush=True)
            keep.write_text(json.dumps(data, indent=1) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    return data


def _values(
    data: dict[str, Any], runner: str, value: Callable[[dict[str, Any]], float]
) -> list[float]:
    """``value`` of each of ``runner``'s runs that has what it reads (a failed run has none)."""
    out = []
    for run in data["runs"]:
        if run["runner"] == runner:
            with contextlib.suppress(KeyError):
                out.append(value(run))
    return out


def _middle(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _median(data: dict[str, Any], runner: str, key: str) -> float | None:
    return _middle(_values(data, runner, lambda r: r[key]))


def _phase(data: dict[str, Any], start: str, end: str) -> float | None:
    """Median seconds from phase ``start`` (``launch``: 0) to ``end`` over nbjob's runs."""
    begin = (lambda r: 0.0) if start == "launch" else (lambda r: r["phases"][start])
    return _middle(_values(data, "nbjob", lambda r: r["phases"][end] - begin(r)))


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def fixed_cost(data: dict[str, Any]) -> float | None:
    """nbjob's cost beyond the script's that does not grow with the training: the medians of
    (wall time - training loop), nbjob's minus the script's."""

    def outside(runner: str) -> float | None:
        return _middle(_values(data, runner, lambda r: r["wall_s"] - r["train_s"]))

    nbjob, script = outside("nbjob"), outside("script")
    return None if nbjob is None or script is None else nbjob - script


def overhead(data: dict[str, Any], runner: str) -> float | None:
    wall, base = _median(data, runner, "wall_s"), _median(data, "script", "wall_s")
    return None if wall is None or not base else wall / base - 1


def render(measurements: list[dict[str, Any]]) -> str:
    """The GPU section of BENCHMARKS.md: a row per runner of each measurement (oldest
    first), where nbjob's fixed cost goes, and the target read on the latest."""
    measurements = sorted(measurements, key=lambda d: d["when"])
    m = measurements[-1]["machine"]
    lines = [
        START,
        "## GPU (bench/gpu.py)",
        "",
        f"On {m.get('gpu')} (driver, memory: {m.get('nvidia_smi')}), {m.get('cpus')} CPUs, "
        f"Python {m.get('python')}, torch {m.get('torch')}, lent by the device tool for a few "
        "minutes: a small CNN (bf16 autocast, 64x64 synthetic images on the GPU, a line "
        f"printed every 100 steps; {batches(measurements)}) as a 5-cell notebook through "
        "`nbjob run` (the default: report, resource sampler), through `jupyter execute` "
        "(nbclient), and as the same cells in `python script.py`; runners in turns. Medians:",
        "",
        "| measured | batch | steps | runner | runs | wall time (s) | launch to first cell (s) "
        "| training loop (s) | last cell to exit (s) | overhead vs script |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for data in measurements:
        for runner in RUNNERS:
            runs = [r for r in data["runs"] if r["runner"] == runner]
            if not runs:
                continue
            over = overhead(data, runner)
            lines.append(
                f"| {data['when']} | {batch_of(data)} | {data['steps']} | {runner} "
                f"| {len(runs)} "
                f"| {_fmt(_median(data, runner, 'wall_s'))} "
                f"| {_fmt(_median(data, runner, 'first_cell_s'))} "
                f"| {_fmt(_median(data, runner, 'train_s'))} "
                f"| {_fmt(_median(data, runner, 'end_s'))} "
                f"| {'' if runner == 'script' else _fmt(over, '+.1%')} |"
            )
    latest = measurements[-1]
    over, fixed = overhead(latest, "nbjob"), fixed_cost(latest)
    verdict = "n/a" if over is None else "**PASS**" if over <= TARGET else "**FAIL**"
    even = (
        "" if not fixed else f": under {TARGET:.0%} for runs of {fixed / TARGET:.0f} s and longer"
    )
    lines += [
        "",
        "Where nbjob's time outside the training goes (medians of nbjob's runs, from its "
        f"executor.log; {latest['steps']} steps):",
        "",
        "| launch to run_start (nbjob's setup; the kernel's interpreter starts first) "
        "| run_start to kernel ready | GPU and requirements probes "
        "| run_end to exit (the kernel's exit, CUDA's teardown) | fixed cost vs script |",
        "|---:|---:|---:|---:|---:|",
        f"| {_fmt(_phase(latest, 'launch', 'run_start'))} s "
        f"| {_fmt(_phase(latest, 'run_start', 'kernel_ready'))} s "
        f"| {_fmt(_phase(latest, 'kernel_ready', 'cell_start'))} s "
        f"| {_fmt(_phase(latest, 'run_end', 'exit'))} s | {_fmt(fixed)} s |",
        "",
        f"Target (issue 22), nbjob's wall time at most {TARGET:.0%} over the script's, on the "
        f"latest measurement (batch {batch_of(latest)}, {latest['steps']} steps): "
        f"{_fmt(over, '+.1%')}, {verdict} (the runs' "
        f"wall times: {spread(latest, 'wall_s')}; {paired(latest)}). The "
        f"training loop: {loops(latest)}; the rest is a fixed cost of about "
        f"{_fmt(fixed, '.1f')} s a run, mostly the Jupyter kernel's start (nbclient's first "
        f"cell comes no sooner){even}. "
        "The image's first-cell time was not measured on the GPU (the lent machine runs no "
        "containers); on a CPU, see the image's section (bench/image.py).",
        "",
        "What run.json said of the GPU (nbjob's last run): " + seen_gpu(latest),
        *failed(measurements),
        "Raw numbers: bench/gpu.json.",
        END,
    ]
    return "\n".join(lines)


def batch_of(data: dict[str, Any]) -> int:
    return int(data.get("batch", FIRST_BATCH))


def batches(measurements: list[dict[str, Any]]) -> str:
    """The batch sizes measured, and why the larger one where it was."""
    sizes = sorted({batch_of(d) for d in measurements})
    text = "batch " + " and ".join(map(str, sizes))
    if any(size >= BATCH for size in sizes):
        text += f" ({BATCH}: the GPU, not the CPU's launching of kernels, sets the loop's pace)"
    return text


def _runs(data: dict[str, Any], runner: str, key: str) -> str:
    """The lowest and highest ``key`` of ``runner``'s runs."""
    values = sorted(_values(data, runner, lambda r: r[key]))
    return f"{values[0]:.1f}-{values[-1]:.1f}" if values else "n/a"


def paired(data: dict[str, Any]) -> str:
    """nbjob's wall time over the script's within each round (the two ran back to back), for
    the noise beside the medians' ratio; the verdict stays on the medians."""
    walls: dict[int, dict[str, float]] = {}
    for run in data["runs"]:
        if "error" not in run and "rep" in run:
            walls.setdefault(run["rep"], {})[run["runner"]] = run["wall_s"]
    both = [w for w in walls.values() if {"nbjob", "script"} <= w.keys()]
    ratios = sorted(w["nbjob"] / w["script"] - 1 for w in both)
    if not ratios:
        return "no round with both"
    return (
        f"round by round {statistics.median(ratios):+.1%} in the median, "
        f"{ratios[0]:+.1%} to {ratios[-1]:+.1%} over {len(ratios)} rounds"
    )


def spread(data: dict[str, Any], key: str) -> str:
    """nbjob's and the script's runs' range of ``key``: the noise a median is read in."""
    return f"nbjob {_runs(data, 'nbjob', key)} s, script {_runs(data, 'script', key)} s"


def loops(data: dict[str, Any]) -> str:
    """The training loop's median time through nbjob and in the script, and their runs."""
    return (
        f"{_fmt(_median(data, 'nbjob', 'train_s'))} s through nbjob "
        f"(runs {_runs(data, 'nbjob', 'train_s')} s) vs "
        f"{_fmt(_median(data, 'script', 'train_s'))} s in the script "
        f"(runs {_runs(data, 'script', 'train_s')} s)"
    )


def seen_gpu(data: dict[str, Any]) -> str:
    runs = [r for r in data["runs"] if r["runner"] == "nbjob" and "gpus" in r]
    if not runs:
        return "no nbjob run finished."
    last = runs[-1]
    peaks = ((last.get("resources") or {}).get("peaks") or {}).get("gpus")
    return (
        f"`gpus` (the kernel's probe) `{json.dumps(last['gpus'])}`; `resources.peaks.gpus` "
        f"(NVML) `{json.dumps(peaks)}` (torch's own peak allocation: "
        f"{last.get('peak_gpu_mib', 0):.0f} MiB)."
    )


def failed(measurements: list[dict[str, Any]]) -> list[str]:
    errors = [
        f"{r['runner']} rep {r['rep']}: rc {r['rc']}"
        for data in measurements
        for r in data["runs"]
        if "error" in r
    ]
    return ["", "Failed runs: " + "; ".join(errors) + "."] if errors else []


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """The measurements kept in ``paths`` (each file one measurement or a list of them)."""
    measurements: list[dict[str, Any]] = []
    for path in paths:
        loaded = json.loads(path.read_text())
        measurements += loaded if isinstance(loaded, list) else [loaded]
    return measurements


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0, help="training time per run")
    p.add_argument("--steps", type=int, help="this many steps (no calibration)")
    p.add_argument("--batch", type=int, default=BATCH, help="images a step")
    p.add_argument("--runners", default=",".join(RUNNERS), help="comma-separated, in order")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "gpu.json")
    p.add_argument(
        "--from", dest="sources", type=Path, nargs="+", help="render these measurements only"
    )
    p.add_argument(
        "--keep", type=Path, nargs="+", help="append these measurements to --json, render all"
    )
    p.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    args = p.parse_args(argv)
    measurements = load(args.sources or [])
    if args.keep:
        measurements = load([args.json]) + load(args.keep)
        args.json.write_text(json.dumps(measurements, indent=1) + "\n")
    if not measurements:
        runners = tuple(args.runners.split(","))
        data = measure(args.reps, args.seconds, args.steps, args.json, runners, args.batch)
        measurements = [data]
    section = render(measurements)
    print(section)
    if args.markdown.exists():
        write_section(args.markdown, section, START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
