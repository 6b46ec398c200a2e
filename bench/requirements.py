#!/usr/bin/env python3
"""--install-requirements: a cold install (uv, pip) vs. the environment cache's hit.

Run from the repository root with the project's venv::

    .venv/bin/python bench/requirements.py [--requirements "polars statsmodels"] [--wheelhouse DIR]

Makes a bundle whose notebook imports the packages, with a ``wheelhouse/`` (``pip download``
of the requirements, once, before any timing: this step needs the index; or ``--wheelhouse``,
a folder of wheels made earlier), and runs ``nbjob run --install-requirements --env-cache``:
for each installer a cold install (fresh installer cache, fresh overlays folder: a miss), then
the overlay is removed, as on another node, and the run is repeated (a hit: download + unpack).
Prints the seconds run.json's ``environment`` records and the whole run's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def notebook(imports: list[str]) -> str:
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "id": "bench-1",
        "metadata": {},
        "outputs": [],
        "source": "".join(f"import {name}\n" for name in imports) + "print('imported')\n",
    }
    spec = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return json.dumps(
        {"cells": [cell], "metadata": {"kernelspec": spec}, "nbformat": 4, "nbformat_minor": 5}
    )


def run(bundle: Path, out: Path, env: dict[str, str], cache: Path) -> tuple[float, dict]:
    argv = [str(BIN / "nbjob"), "run", str(bundle), "--output", str(out)]
    argv += ["--install-requirements", "--env-cache", str(cache)]
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    record = json.loads((out / "run.json").read_text())
    if done.returncode != 0:
        raise SystemExit(f"nbjob exited {done.returncode}: {record.get('reason')}")
    return seconds, record["environment"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requirements", default="polars statsmodels")
    parser.add_argument("--imports", default="polars statsmodels.api")
    parser.add_argument("--wheelhouse", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nbjob-bench-req-") as top:
        root = Path(top)
        bundle = root / "bundle"
        bundle.mkdir()
        (bundle / "nb.ipynb").write_text(notebook(args.imports.split()))
        (bundle / "requirements.txt").write_text("\n".join(args.requirements.split()) + "\n")
        wheelhouse = bundle / "wheelhouse"
        if args.wheelhouse:
            shutil.copytree(args.wheelhouse, wheelhouse)
        else:
            pip = [sys.executable, "-m", "pip", "download", "-q", "--only-binary", ":all:"]
            subprocess.run([*pip, "-d", str(wheelhouse), *args.requirements.split()], check=True)
        size = sum(p.stat().st_size for p in wheelhouse.iterdir()) / 2**20
        print(f"wheelhouse: {len(list(wheelhouse.iterdir()))} wheels, {size:.0f} MiB")
        for installer in ("uv", "pip"):
            tmp = root / f"tmp-{installer}"
            tmp.mkdir()
            env = {k: v for k, v in os.environ.items() if not k.startswith("NBJOB_")}
            env.update(TMPDIR=str(tmp), UV_CACHE_DIR=str(tmp / "uv-cache"))
            env.update(PIP_CACHE_DIR=str(tmp / "pip-cache"), NBJOB_LOG_FORMAT="json")
            if installer == "pip":
                folders = env.get("PATH", "").split(os.pathsep)
                env["PATH"] = os.pathsep.join(f for f in folders if not (Path(f) / "uv").exists())
            cache = root / f"cache-{installer}"
            miss_run, miss = run(bundle, root / f"out-{installer}-1", env, cache)
            shutil.rmtree(miss["path"])  # another node: only the cache has it
            hit_run, hit = run(bundle, root / f"out-{installer}-2", env, cache)
            archive = sum(p.stat().st_size for p in cache.iterdir()) / 2**20
            print(
                f"{installer}: installed {len(miss['installed'])} packages in {miss['seconds']} s"
                f" (run {miss_run:.1f} s); cache hit {hit['seconds']} s (run {hit_run:.1f} s);"
                f" archive {archive:.0f} MiB; cache={miss['cache']}/{hit['cache']}"
            )


if __name__ == "__main__":
    main()
