#!/usr/bin/env python3
"""Artifact upload throughput: nbjob's ArtifactStream vs ``aws s3 sync``, same server, same files.

Run from the repository root with the project's venv::

    .venv/bin/python bench/artifacts.py [--big-mb 512] [--small 1000] [--small-kb 512] [--rounds 3]

Starts its own moto server on 127.0.0.1 (stopped by PID at the end), writes an artifact set (one
big file and many small ones; default 512 MiB + 1000 x 512 KiB = 1 GiB) and uploads it, rounds
interleaved, with nbjob's ``ArtifactStream.flush`` (what the run sends at its end or on a stop:
every file, newest first, 8 at once, big files multipart in 8 MiB parts) and with the AWS CLI's
``aws s3 sync`` (10 at once, multipart from 8 MiB). Each upload goes to a fresh bucket, deleted
afterwards (moto keeps objects in memory). Prints MB/s and CPU seconds and writes the "Artifact
upload" section of BENCHMARKS.md (replacing only that section).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import start_moto, write_section

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {
    "AWS_ACCESS_KEY_ID": "AKIABENCHNBJOB000001",
    "AWS_SECRET_ACCESS_KEY": "benchSecret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
START, END = "<!-- bench/artifacts.py: start -->", "<!-- bench/artifacts.py: end -->"


def make_set(folder: Path, big_mb: int, small: int, small_kb: int) -> int:
    (folder / "small").mkdir(parents=True)
    chunk = os.urandom(1 << 20)
    with (folder / "model.bin").open("wb") as f:
        for _ in range(big_mb):
            f.write(chunk)
    for i in range(small):
        (folder / "small" / f"f{i:04d}.bin").write_bytes(os.urandom(small_kb << 10))
    return big_mb * (1 << 20) + small * (small_kb << 10)


def cpu_s(who: int) -> float:
    """User + system CPU seconds of this process (or of its waited-for children)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def nbjob_upload(folder: Path, endpoint: str, bucket: str) -> tuple[float, float]:
    """(wall s, CPU s) of a flush, in this process (client made from scratch, as a run does)."""
    from nbjob.artifacts import ArtifactStream
    from nbjob.storage import Options, Storage

    stream = ArtifactStream(Storage(Options(endpoint)), f"s3://{bucket}/artifacts", folder)
    cpu, started = cpu_s(resource.RUSAGE_SELF), time.monotonic()
    stream.flush()
    took, cpu = time.monotonic() - started, cpu_s(resource.RUSAGE_SELF) - cpu
    stream.close()
    return took, cpu


def aws_upload(folder: Path, endpoint: str, bucket: str) -> tuple[float, float]:
    """(wall s, CPU s) of ``aws s3 sync``, its start-up included."""
    argv = [str(BIN / "aws"), "s3", "sync", "--only-show-errors", "--endpoint-url", endpoint]
    cpu, started = cpu_s(resource.RUSAGE_CHILDREN), time.monotonic()
    subprocess.run([*argv, str(folder), f"s3://{bucket}/artifacts"], check=True)
    return time.monotonic() - started, cpu_s(resource.RUSAGE_CHILDREN) - cpu


def empty_bucket(client: object, bucket: str) -> int:
    keys = 0
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)  # type: ignore[attr-defined]
    for page in pages:
        objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        keys += len(objects)
        if objects:
            client.delete_objects(Bucket=bucket, Delete={"Objects": objects})  # type: ignore[attr-defined]
    client.delete_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    return keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-mb", type=int, default=512)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--small-kb", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = ap.parse_args()
    os.environ.update(ENV)
    import boto3

    proc, endpoint = start_moto()
    times: dict[str, list[tuple[float, float]]] = {"nbjob": [], "aws s3 sync": []}
    try:
        client = boto3.client("s3", endpoint_url=endpoint)
        with tempfile.TemporaryDirectory(prefix="nbjob-bench-") as tmp:
            total = make_set(Path(tmp) / "set", args.big_mb, args.small, args.small_kb)
            files = 1 + args.small
            for _ in range(args.rounds):
                for name, upload in (("nbjob", nbjob_upload), ("aws s3 sync", aws_upload)):
                    bucket = f"bench-{uuid.uuid4().hex[:12]}"
                    client.create_bucket(Bucket=bucket)
                    took, cpu = upload(Path(tmp) / "set", endpoint, bucket)
                    assert empty_bucket(client, bucket) == files, f"{name} missed files"
                    times[name].append((took, cpu))
                    print(
                        f"{name}: {took:.2f} s, {total / took / 1e6:.1f} MB/s, {cpu:.2f} s CPU",
                        flush=True,
                    )
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    section = report(times, total, args)
    print(section)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", section, START, END)


def report(
    times: dict[str, list[tuple[float, float]]], total: int, args: argparse.Namespace
) -> str:
    rows = []
    for name, runs in times.items():
        walls = [wall for wall, _ in runs]
        median, cpu = statistics.median(walls), statistics.median(cpu for _, cpu in runs)
        spread = f"{min(walls):.2f}-{max(walls):.2f}"
        rows.append(
            f"| {name} | {median:.2f} | {spread} | {total / median / 1e6:.0f} | {cpu:.2f} |"
        )
    return "\n".join(
        [
            START,
            "## Artifact upload (bench/artifacts.py)",
            "",
            f"{total / 1e6:.0f} MB: one {args.big_mb} MiB file and {args.small} files of "
            f"{args.small_kb} KiB, to moto on 127.0.0.1 (2-core machine shared with other work), "
            f"{args.rounds} rounds interleaved, each to a fresh bucket. nbjob: "
            "`ArtifactStream.flush` (8 files at once through one boto3 client; big files in "
            "8 MiB parts, 10 in flight, from one shared transfer manager); AWS CLI: "
            "`aws s3 sync` (10 at once). CPU: user + system seconds of the uploading process "
            "(nbjob: the flush in this process, client made from scratch; aws: the whole "
            "command, start-up included), median. moto answers every request with "
            "`Connection: close`, so each request opens a connection for both.",
            "",
            "| uploader | median (s) | runs (s) | MB/s | CPU (s) |",
            "|---|---:|---|---:|---:|",
            *rows,
            "",
            "Reproduce: `.venv/bin/python bench/artifacts.py` (`--big-mb`, `--small`, "
            "`--small-kb`, `--rounds`).",
            END,
        ]
    )


if __name__ == "__main__":
    main()
