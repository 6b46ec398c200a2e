#!/usr/bin/env python3
"""Bytes a run uploads, per object, against the object's final size (upload amplification).

Run from the repository root with the project's venv::

    .venv/bin/python bench/uploads.py [--workloads text,chatty,images] [--scale 1.0] [--label now]

Starts its own moto server on 127.0.0.1 (stopped by PID at the end) and a byte-counting HTTP
proxy in front of it (``tests/support/proxy.py``, a thread of this process), then runs ``nbjob
run`` with the proxy as its S3 endpoint on three workloads:

- ``text``: 200 cells, each printing 20 KB and sleeping 0.1 s (a text-heavy notebook);
- ``chatty``: one cell printing ~1 MB/s of 100-byte lines for 30 s (a chatty training loop);
- ``images``: 20 cells, each showing a 300 KB PNG and sleeping 1 s (an image-heavy notebook).

For each object (the notebook, run.json, executor.log, the live log's segments ``log/*``) it
prints the bytes PUT through the proxy, the final size and their ratio; the log's row adds the
segments to executor.log's own uploads (they are the same bytes, stored once as they came and
once whole at the end). A follower polls the live log every second while the run goes
(``nbjob.livelog.read_new``, through a second counting proxy): its GETs and bytes downloaded,
and what reading executor.log whole at each poll would have cost. ``--scale`` stretches the
durations. ``--write FILE`` appends (or
replaces) the workload rows in a JSON file of labelled measurements, for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from common import start_moto

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))

from support.proxy import FlakyProxy  # noqa: E402  (the tests' proxy, counting bytes)

ENV = {
    "AWS_ACCESS_KEY_ID": "AKIABENCHNBJOB000001",
    "AWS_SECRET_ACCESS_KEY": "benchSecret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
SEGMENTS = "log/"  # the live log's segments (nbjob.layout.LOG_SEGMENTS), when there are any
CELLS = "cells/"  # a long notebook's finished cells mid-run (nbjob.layout.CELL_SEGMENTS)


def cells(workload: str, scale: float) -> list[str]:
    """The code cells of ``workload`` (see the module's docstring)."""
    if workload == "text":
        line = "y" * 99 + "\\n"
        return [f"import time\nprint('{line}' * 200, end='')\ntime.sleep(0.1)"] * int(200 * scale)
    if workload == "chatty":
        return [
            "import time\nt0, i = time.time(), 0\n"
            f"while time.time() - t0 < {30 * scale}:\n"
            "    for _ in range(100):\n"
            "        print(f'step {i:9d} loss {1 / (i + 1):.6f} ' + 'z' * 71)\n"
            "        i += 1\n"
            "    time.sleep(0.008)\n"
        ]
    if workload == "images":
        return [
            "import os, time\nfrom IPython.display import Image, display\n"
            "display(Image(data=b'\\x89PNG\\r\\n\\x1a\\n' + os.urandom(300_000), format='png'))\n"
            "time.sleep(1)"
        ] * int(20 * scale)
    raise SystemExit(f"unknown workload {workload!r}")


def write_notebook(path: Path, sources: list[str]) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    spec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["kernelspec"] = spec
    nbformat.write(nb, path)


def group(key: str) -> str:
    """The row an object's bytes count towards."""
    if key.startswith(SEGMENTS):
        return "executor.log"
    if key.startswith(CELLS):
        return CELLS
    if key.startswith(".nbjob-lease/"):
        return "lease"
    return key


class Follower:
    """Polls the live log every ``every`` seconds, as ``nbjob watch`` does, until stopped."""

    def __init__(self, endpoint: str, url: str, every: float = 1.0) -> None:
        from nbjob.layout import Destination
        from nbjob.storage import Options, Storage

        self.proxy = FlakyProxy(endpoint)
        self.storage = Storage(Options(endpoint_url=self.proxy.url))
        self.dest, self.every = Destination(url), every
        self.polls = self.empty = self.read = self.whole = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        from nbjob import livelog

        offset = 0
        while not self._stop.wait(self.every):
            try:
                data, offset = livelog.read_new(self.storage, self.dest, 1, offset)
            except Exception:
                continue  # the run's folder may not be there yet
            self.polls += 1
            self.empty += not data
            self.read += len(data)
            self.whole += offset  # a follower reading the whole log would have read this much

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=30)
        self.proxy.vanish()
        gets = sum(n for k, n in self.proxy.requests_by.items() if k.startswith("GET "))
        return {
            "polls": self.polls,
            "empty_polls": self.empty,
            "gets": gets,
            "downloaded": sum(self.proxy.received.values()),
            "log_read": self.read,
            "whole_file_reads": self.whole,
        }


def run_one(workload: str, scale: float, endpoint: str, client: Any, work: Path) -> dict[str, Any]:
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    nb = work / f"{workload}.ipynb"
    write_notebook(nb, cells(workload, scale))
    proxy = FlakyProxy(endpoint)
    env = {**os.environ, **ENV, "NBJOB_S3_ENDPOINT_URL": proxy.url}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench" / "shim"), env.get("PYTHONPATH", "")])
    follower = Follower(endpoint, f"s3://{bucket}/run")
    started = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "nbjob"), "run", str(nb), "--output", f"s3://{bucket}/run", "--no-report"],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
    )
    took = time.monotonic() - started
    follow = follower.stop()
    prefix = f"/{bucket}/run/"
    sent: dict[str, int] = {}
    puts: dict[str, int] = {}
    for path, n in proxy.sent.items():
        if path.startswith(prefix):
            key = group(path[len(prefix) :])
            sent[key] = sent.get(key, 0) + n
    for what, n in proxy.requests_by.items():
        method, path = what.split(" ", 1)
        if method in ("PUT", "POST") and path.startswith(prefix):
            key = group(path[len(prefix) :])
            puts[key] = puts.get(key, 0) + n
    proxy.vanish()
    final = {
        o["Key"][len("run/") :]: o["Size"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="run/")
        for o in page.get("Contents", [])
    }
    objects = {}
    for key in (f"{workload}.ipynb", "run.json", "executor.log", CELLS):
        size = final.get(key, 0) if key != CELLS else sum(final_cells(final).values())
        objects[key] = {
            "uploaded": sent.get(key, 0),
            "puts": puts.get(key, 0),
            "final": size,
            "amplification": round(sent.get(key, 0) / size, 2) if size else None,
        }
    segments = [k for k in final if k.startswith(SEGMENTS)]
    record = json.loads(client.get_object(Bucket=bucket, Key="run/run.json")["Body"].read())
    objects["run.json"]["with_cells"] = round(
        (sent.get("run.json", 0) + sent.get(CELLS, 0)) / max(1, final.get("run.json", 1)), 2
    )
    return {
        "run_json_parts": run_json_parts(record),
        "workload": workload,
        "exit": proc.returncode,
        "seconds": round(took, 1),
        "objects": objects,
        "segments": len(segments),
        "follower": follow,
        "total_uploaded": sum(sent.values()),
    }


def final_cells(final: dict[str, int]) -> dict[str, int]:
    return {k: n for k, n in final.items() if k.startswith(CELLS)}


def run_json_parts(record: dict[str, Any]) -> dict[str, Any]:
    """The final run.json's parts, for the 48-hour model: its size without the cell list, the
    number of cells, a cell's mean size as listed (indented) and as a segment's JSON line."""
    cells = record.get("cells") or []
    rest = {k: v for k, v in record.items() if k != "cells"}
    listed = len(json.dumps({"cells": cells}, indent=2)) if cells else 0
    lines = sum(len(json.dumps(c)) + 1 for c in cells)
    return {
        "header": len(json.dumps({**rest, "cells": []}, indent=2)),
        "cells": len(cells),
        "cell_listed": round(listed / max(1, len(cells)), 1),
        "cell_line": round(lines / max(1, len(cells)), 1),
    }


def show(row: dict[str, Any]) -> None:
    print(f"{row['workload']}: exit {row['exit']}, {row['seconds']} s, {row['segments']} segments")
    f = row["follower"]
    print(
        f"  follower: {f['polls']} polls ({f['empty_polls']} empty), {f['gets']} GETs, "
        f"{f['downloaded'] / 1e6:.2f} MB downloaded ({f['log_read'] / 1e6:.2f} MB of log); "
        f"the whole log at each poll: {f['whole_file_reads'] / 1e6:.2f} MB"
    )
    for key, o in row["objects"].items():
        print(
            f"  {key:16} uploaded {o['uploaded'] / 1e6:9.2f} MB in {o['puts']:5d} PUTs, "
            f"final {o['final'] / 1e6:8.3f} MB, amplification {o['amplification']}"
            + (f" (with cells/: {o['with_cells']})" if "with_cells" in o else "")
        )


# The 48-hour model: serializing the snapshot on the main thread (measured here: a text-heavy
# notebook 89 MB/s, a run record 11 MB/s) and uploading (moto on loopback: ~50 MB/s) stretch
# the checkpoint interval as results.py does: max(--checkpoint-interval, 20 x the
# serialization, 4 x the upload).
SERIALIZE_NB, SERIALIZE_RECORD, UPLOAD = 89e6, 11e6, 50e6
CAPPED = {"chatty": ("ipynb", "run.json")}  # stops growing: one cell, its output capped (1 MB)


def extrapolate(row: dict[str, Any], hours: float, interval: float = 2.0) -> dict[str, Any]:
    """Amplification over ``hours`` at the measured run's rates, before and after the live log
    and the paced notebook, and with a long notebook's cells in segments (``cells``: run.json
    mid-run is its parts without the cell list plus the running cell, each finished cell goes
    once as a JSON line; see the constants above): each object's size grows linearly with
    time, or stays at its final size when CAPPED."""
    from nbjob.pacing import NotebookPace

    measured, end = row["seconds"], hours * 3600.0
    capped = CAPPED.get(row["workload"], ())

    def size(key: str, t: float) -> float:
        final = row["objects"][key]["final"]
        if any(key.endswith(c) for c in capped):
            return float(final)
        return final * t / measured

    nb_key = next(k for k in row["objects"] if k.endswith(".ipynb"))
    log_rate = row["objects"]["executor.log"]["final"] / measured
    result: dict[str, Any] = {}
    steps: dict[str, int] = {}
    last: dict[str, float] = {}
    parts = row.get("run_json_parts")
    designs = ("before", "after", "cells") if parts else ("before", "after")
    for design in designs:
        sent = {k: 0.0 for k in row["objects"] if k != CELLS}
        pace, t, nb_due = NotebookPace(), 0.0, 0.0
        while t < end:
            nb, rec, log = size(nb_key, t), size("run.json", t), size("executor.log", t)
            if design == "before":  # everything whole, the interval stretched by all of it
                sent[nb_key] += nb
                sent["executor.log"] += log
                step = max(interval, 20 * (nb / SERIALIZE_NB + rec / SERIALIZE_RECORD))
                step = max(step, 4 * (nb + rec + log) / UPLOAD)
            else:  # the notebook on its own pace; the log's new bytes (counted at the end)
                if design == "cells" and parts:  # the header, the running cell, new lines
                    rec = parts["header"] + parts["cell_listed"]
                    rec += parts["cells"] / measured * interval * parts["cell_line"]
                stored = 0.0
                if t >= nb_due:
                    nb_due = t + max(interval, 40 * nb / SERIALIZE_NB)
                    stored = nb if pace.take(int(nb)) else 0.0
                sent[nb_key] += stored
                step = max(interval, 20 * rec / SERIALIZE_RECORD)
                step = max(step, 4 * (stored + rec + log_rate * step) / UPLOAD)
            sent["run.json"] += rec
            steps[design] = steps.get(design, 0) + 1
            last[design] = step
            t += step
        for key in sent:  # the final write (the log: whole; after: also its segments)
            final = size(key, end)
            sent[key] += final * (2 if design != "before" and key == "executor.log" else 1)
        result[design] = {k: round(sent[k] / size(k, end), 1) for k in sent}
        result[design]["final_gb"] = {k: round(size(k, end) / 1e9, 2) for k in sent}
        result[design]["uploaded_gb"] = round(sum(sent.values()) / 1e9, 1)
        result[design]["checkpoints"] = steps[design]
        result[design]["last_interval_s"] = round(last[design], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="text,chatty,images")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--label", default="now", help="the measurement's name in --write")
    parser.add_argument("--write", type=Path, help="JSON file of labelled measurements")
    parser.add_argument(
        "--extrapolate",
        type=Path,
        help="print the 48-hour model for the --label rows of this JSON file (else its "
        "'after' rows) and exit",
    )
    args = parser.parse_args()
    if args.extrapolate:
        found = json.loads(args.extrapolate.read_text())
        rows = found.get(args.label) or found["after"]
        for name, row in rows.items():
            print(name, json.dumps(extrapolate(row, 48.0)))
        return
    import boto3

    os.environ.update(ENV)  # the follower's credentials (the run gets them too)
    moto, endpoint = start_moto()
    try:
        client = boto3.session.Session(
            aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        ).client("s3", endpoint_url=endpoint)
        rows = []
        with tempfile.TemporaryDirectory(prefix="nbjob-bench-uploads-") as tmp:
            for workload in args.workloads.split(","):
                work = Path(tmp) / workload
                work.mkdir()
                rows.append(run_one(workload, args.scale, endpoint, client, work))
                show(rows[-1])
    finally:
        os.killpg(moto.pid, signal.SIGTERM)
        moto.wait(timeout=10)
    if args.write:
        data = json.loads(args.write.read_text()) if args.write.exists() else {}
        data.setdefault(args.label, {}).update({r["workload"]: r for r in rows})
        args.write.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
