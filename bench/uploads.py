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
once whole at the end). ``--scale`` stretches the durations. ``--write FILE`` appends (or
replaces) the workload rows in a JSON file of labelled measurements, for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

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


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    raise RuntimeError("moto_server did not start")


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
    if key.startswith(".nbjob-lease/"):
        return "lease"
    return key


def run_one(workload: str, scale: float, endpoint: str, client: Any, work: Path) -> dict[str, Any]:
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    nb = work / f"{workload}.ipynb"
    write_notebook(nb, cells(workload, scale))
    proxy = FlakyProxy(endpoint)
    env = {**os.environ, **ENV, "NBJOB_S3_ENDPOINT_URL": proxy.url}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench" / "shim"), env.get("PYTHONPATH", "")])
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
    for key in (f"{workload}.ipynb", "run.json", "executor.log"):
        size = final.get(key, 0)
        objects[key] = {
            "uploaded": sent.get(key, 0),
            "puts": puts.get(key, 0),
            "final": size,
            "amplification": round(sent.get(key, 0) / size, 2) if size else None,
        }
    segments = [k for k in final if k.startswith(SEGMENTS)]
    return {
        "workload": workload,
        "exit": proc.returncode,
        "seconds": round(took, 1),
        "objects": objects,
        "segments": len(segments),
        "total_uploaded": sum(sent.values()),
    }


def show(row: dict[str, Any]) -> None:
    print(f"{row['workload']}: exit {row['exit']}, {row['seconds']} s, {row['segments']} segments")
    for key, o in row["objects"].items():
        print(
            f"  {key:16} uploaded {o['uploaded'] / 1e6:9.2f} MB in {o['puts']:5d} PUTs, "
            f"final {o['final'] / 1e6:8.3f} MB, amplification {o['amplification']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="text,chatty,images")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--label", default="now", help="the measurement's name in --write")
    parser.add_argument("--write", type=Path, help="JSON file of labelled measurements")
    args = parser.parse_args()
    import boto3

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
