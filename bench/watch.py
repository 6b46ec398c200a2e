#!/usr/bin/env python3
"""What following a run costs: ``nbjob watch``'s lag after a run's end, and bytes per poll.

Run from the repository root with the project's venv::

    .venv/bin/python bench/watch.py [--reps 5] [--poll 2] [--log-mb 64]

1. **Lag**: a short run (a few cells printing lines) is watched with ``--json``; the lag is
   the watcher's exit minus the run's exit (both seen by this process, polled every 10 ms).
   The watcher's end event also says how many polls it made and the bytes it read.
2. **A poll of a big log on S3** (moto on loopback): a ``--log-mb`` executor.log is stored,
   the follower reads it once, then 1 kB is appended (the object rewritten, as a checkpoint
   does) and the next poll's bytes and time are measured: a ranged read costs the new bytes.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
NBJOB = str(Path(sys.executable).with_name("nbjob"))
sys.path.insert(0, str(REPO / "tests"))

CELLS = [
    "import time\nfor i in range(5):\n    print('line', i, flush=True)\n    time.sleep(0.2)",
    "for i in range(5):\n    print(f'\\r{i}', end='', flush=True)\n    time.sleep(0.2)",
    "x = 1",
]


def lag(reps: int, poll: float) -> dict[str, Any]:
    from support import notebook

    lags, per_poll = [], []
    with tempfile.TemporaryDirectory() as tmp:
        nb = notebook(Path(tmp) / "lag.ipynb", *CELLS)
        for rep in range(reps):
            dest = str(Path(tmp) / f"out{rep}")
            run = subprocess.Popen(
                [NBJOB, "run", str(nb), "--output", dest, "--no-report"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            watch = subprocess.Popen(
                [NBJOB, "watch", dest, "--poll", str(poll), "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            ended = {}
            while len(ended) < 2:
                for name, proc in (("run", run), ("watch", watch)):
                    if name not in ended and proc.poll() is not None:
                        ended[name] = time.monotonic()
                time.sleep(0.01)
            end = json.loads(watch.stdout.read().decode().splitlines()[-1]) if watch.stdout else {}
            lags.append(ended["watch"] - ended["run"])
            per_poll.append(end["bytes_read"] / max(1, end["polls"]))
    return {
        "poll_s": poll,
        "lag_s_median": round(statistics.median(lags), 2),
        "lag_s_max": round(max(lags), 2),
        "bytes_per_poll_median": round(statistics.median(per_poll)),
    }


def big_log(megabytes: int) -> dict[str, Any]:
    """A poll's cost on a long run's live log in S3 (moto): ``megabytes`` of log already stored
    as segments, a follower joining it (from near the end), then ten new lines."""
    from nbjob import livelog
    from nbjob.follow import LogFollower
    from nbjob.layout import Destination
    from nbjob.storage import Options, Storage
    from support import moto_server

    line = b'{"event": "stream", "cell": 1, "name": "stdout", "text": "' + b"x" * 100 + b'\\n"}\n'
    piece = line * (livelog.SEGMENT_MAX // len(line))
    with tempfile.TemporaryDirectory() as tmp, moto_server(Path(tmp)) as s3:
        import os

        os.environ.update(s3.env)
        bucket = s3.new_bucket()
        dest = Destination(f"s3://{bucket}/run")
        storage = Storage(Options(endpoint_url=s3.endpoint_url))
        offset = 0
        while offset < megabytes * 2**20:
            storage.put_bytes(dest.log_segment(1, offset), piece)
            offset += len(piece)
        follower = LogFollower(storage, dest, tail=64 * 1024)
        follower.read_new(1)
        first = follower.bytes_read
        storage.put_bytes(dest.log_segment(1, offset), line * 10)
        started = time.monotonic()
        events = follower.read_new(1)
        took = time.monotonic() - started
    return {
        "log_bytes": offset,
        "first_poll_bytes": first,
        "next_poll_bytes": follower.bytes_read - first,
        "next_poll_events": len(events),
        "next_poll_s": round(took, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--poll", type=float, default=2.0)
    parser.add_argument("--log-mb", type=int, default=64)
    args = parser.parse_args()
    print(json.dumps({"lag": lag(args.reps, args.poll), "big_log": big_log(args.log_mb)}, indent=2))


if __name__ == "__main__":
    main()
