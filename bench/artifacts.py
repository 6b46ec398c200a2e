#!/usr/bin/env python3
"""Artifact upload throughput: nbjob's ArtifactStream vs ``aws s3 sync``, same server, same files.

Run from the repository root with the project's venv::

    .venv/bin/python bench/artifacts.py [--big-mb 512] [--small 1000] [--small-kb 512] [--rounds 5]
        [--servers moto,s3rver]

Starts each server on 127.0.0.1 in turn (moto; s3rver from the npm folder ``make venv`` fills,
skipped when missing; each stopped by PID), writes an artifact set (one big file and many small
ones; default 512 MiB + 1000 x 512 KiB = 1 GiB) and uploads it, rounds interleaved, with nbjob's
``ArtifactStream.flush`` (what the run sends at its end or on a stop: every file, big ones
first, 8 at once, big files multipart in 8 MiB parts, 10 in flight) and with the AWS CLI's
``aws s3 sync`` (10 requests at once, multipart from 8 MiB). Each upload goes to a fresh bucket,
deleted afterwards. Prints MB/s, CPU seconds and the uploader's peak RSS, and writes the
"Artifact upload" section of BENCHMARKS.md (replacing only that section).
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
import threading
import time
import uuid
from pathlib import Path

from common import start_moto, start_s3rver, write_section

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
S3RVER = ROOT / ".npm" / "node_modules" / ".bin" / "s3rver"
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


class PeakRss:
    """The highest resident set size (MiB) of process ``pid``, sampled every 20 ms while the
    ``with`` block runs."""

    def __init__(self, pid: int) -> None:
        self.path, self.peak = f"/proc/{pid}/statm", 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            try:
                with open(self.path) as f:
                    pages = int(f.read().split()[1])
                self.peak = max(self.peak, pages * os.sysconf("SC_PAGE_SIZE") / 2**20)
            except (OSError, IndexError, ValueError):
                pass  # not started yet, or gone
            if self._stop.wait(0.02):
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


Run = tuple[float, float, float]  # (wall s, CPU s, peak RSS MiB)


def nbjob_upload(folder: Path, endpoint: str, bucket: str) -> Run:
    """A flush in a child forked from this process (nbjob and boto3 already imported; the
    client made from scratch, as a run does), so each round starts from the same memory."""
    from nbjob.artifacts import ArtifactStream
    from nbjob.storage import Options, Storage

    cpu, started = cpu_s(resource.RUSAGE_CHILDREN), time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: flush, then leave without running the parent's clean-ups
        code = 1
        try:
            stream = ArtifactStream(Storage(Options(endpoint)), f"s3://{bucket}/artifacts", folder)
            stream.flush()
            code = 0
        finally:
            os._exit(code)
    with PeakRss(pid) as rss:
        status = os.waitpid(pid, 0)[1]
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the nbjob flush failed ({status})")
    return time.monotonic() - started, cpu_s(resource.RUSAGE_CHILDREN) - cpu, rss.peak


def aws_upload(folder: Path, endpoint: str, bucket: str) -> Run:
    """``aws s3 sync``, its start-up included."""
    argv = [str(BIN / "aws"), "s3", "sync", "--only-show-errors", "--endpoint-url", endpoint]
    cpu, started = cpu_s(resource.RUSAGE_CHILDREN), time.monotonic()
    proc = subprocess.Popen([*argv, str(folder), f"s3://{bucket}/artifacts"])
    with PeakRss(proc.pid) as rss:
        if proc.wait() != 0:
            raise subprocess.CalledProcessError(proc.returncode, argv)
    return time.monotonic() - started, cpu_s(resource.RUSAGE_CHILDREN) - cpu, rss.peak


def empty_bucket(client: object, bucket: str) -> int:
    keys = 0
    # ListObjects (v1): s3rver answers ListObjectsV2 past its first 1000 keys with a 500
    pages = client.get_paginator("list_objects").paginate(Bucket=bucket)  # type: ignore[attr-defined]
    for page in pages:
        objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        keys += len(objects)
        if objects:
            client.delete_objects(Bucket=bucket, Delete={"Objects": objects})  # type: ignore[attr-defined]
    client.delete_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    return keys


UPLOADERS = {"nbjob": nbjob_upload, "aws s3 sync": aws_upload}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-mb", type=int, default=512)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--small-kb", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--servers", default="moto,s3rver", help="moto and/or s3rver, in turn")
    ap.add_argument("--s3rver", type=Path, default=S3RVER, help="the s3rver command")
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = ap.parse_args()
    os.environ.update(ENV)
    times: dict[tuple[str, str], list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="nbjob-bench-") as tmp:
        total = make_set(Path(tmp) / "set", args.big_mb, args.small, args.small_kb)
        for server in args.servers.split(","):
            if server == "s3rver" and not args.s3rver.exists():
                print(f"{args.s3rver} is missing (make venv needs npm): no s3rver rows")
                continue
            bench_server(server, Path(tmp), 1 + args.small, total, args, times)
    section = report(times, total, args)
    print(section)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", section, START, END)


def bench_server(
    server: str,
    tmp: Path,
    files: int,
    total: int,
    args: argparse.Namespace,
    times: dict[tuple[str, str], list[Run]],
) -> None:
    """``args.rounds`` rounds of each uploader, interleaved, to ``server`` (started here and
    stopped by PID); each upload to a fresh bucket, emptied and deleted afterwards."""
    import boto3.session

    if server == "s3rver":
        os.environ["AWS_ACCESS_KEY_ID"] = "S3RVER"  # the only key it takes
        (tmp / "s3rver").mkdir()
        proc, endpoint = start_s3rver(args.s3rver, tmp / "s3rver")
    else:
        os.environ["AWS_ACCESS_KEY_ID"] = ENV["AWS_ACCESS_KEY_ID"]
        proc, endpoint = start_moto()
    try:
        client = boto3.session.Session().client("s3", endpoint_url=endpoint)
        for _ in range(args.rounds):
            for name, upload in UPLOADERS.items():
                bucket = f"bench-{uuid.uuid4().hex[:12]}"
                client.create_bucket(Bucket=bucket)
                took, cpu, rss = upload(tmp / "set", endpoint, bucket)
                assert empty_bucket(client, bucket) == files, f"{name} missed files"
                times.setdefault((server, name), []).append((took, cpu, rss))
                print(
                    f"{server} {name}: {took:.2f} s, {total / took / 1e6:.1f} MB/s, "
                    f"{cpu:.2f} s CPU, {rss:.0f} MiB peak RSS, load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def report(times: dict[tuple[str, str], list[Run]], total: int, args: argparse.Namespace) -> str:
    rows = []
    for (server, name), runs in times.items():
        walls = [wall for wall, _, _ in runs]
        median, cpu = statistics.median(walls), statistics.median(cpu for _, cpu, _ in runs)
        spread = f"{min(walls):.2f}-{max(walls):.2f}"
        rss = max(rss for _, _, rss in runs)
        rows.append(
            f"| {server} | {name} | {median:.2f} | {spread} | {total / median / 1e6:.0f} | "
            f"{cpu:.2f} | {rss:.0f} |"
        )
    return "\n".join(
        [
            START,
            "## Artifact upload (bench/artifacts.py)",
            "",
            f"{total / 1e6:.0f} MB: one {args.big_mb} MiB file and {args.small} files of "
            f"{args.small_kb} KiB, to a server on 127.0.0.1 (2-core machine shared with other "
            f"work), {args.rounds} rounds interleaved, each to a fresh bucket. nbjob: "
            "`ArtifactStream.flush` (8 files at once through one boto3 client, big files "
            "first; big files in 8 MiB parts, 10 in flight, from one shared transfer "
            "manager); AWS CLI: `aws s3 sync` (10 requests at once). CPU: user + system "
            "seconds of the uploading process (nbjob: the flush, client made "
            "from scratch, in a child forked from the bench after its imports; aws: the whole "
            "command, start-up included), median. Peak RSS: the highest of the rounds, "
            "sampled every 20 ms (nbjob's child counts the bench's own Python and boto3). "
            "moto (Python, in memory) answers every request with `Connection: close` and "
            "uses one core, the limit of both uploaders; s3rver "
            "(Node, on disk) keeps connections open.",
            "",
            "| server | uploader | median (s) | runs (s) | MB/s | CPU (s) | peak RSS (MiB) |",
            "|---|---|---:|---|---:|---:|---:|",
            *rows,
            "",
            "Reproduce: `.venv/bin/python bench/artifacts.py` (`--big-mb`, `--small`, "
            "`--small-kb`, `--rounds`, `--servers`).",
            END,
        ]
    )


if __name__ == "__main__":
    main()
