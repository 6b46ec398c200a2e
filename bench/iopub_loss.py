"""Does nbjob's local kernel session lose IOPub messages under a flood? (issue 8)

A cell writes ``\\r{i}`` and flushes, ``--updates`` times (one IOPub message per flush); every
``i`` must be in the text received through ``LocalKernel.next_message``. Prints one line per
run: updates, lost, messages, FINAL seen, idle seen, seconds.

    .venv/bin/python bench/iopub_loss.py --updates 200000 --runs 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from nbjob.kernel.local import LocalKernel


def once(updates: int) -> str:
    with tempfile.TemporaryDirectory(prefix="nbjob-loss-") as tmp:
        kernel = LocalKernel("python3", Path(tmp), 60, ipc_dir=Path(tmp) / "ipc")
        kernel.start()
        try:
            code = (
                f"import sys\nfor i in range({updates}):\n"
                "    sys.stdout.write(f'\\r{i}'); sys.stdout.flush()\nprint('\\nFINAL')"
            )
            msg_id = kernel.execute(code)
            started, parts, count, idle = time.monotonic(), [], 0, False
            while not idle and time.monotonic() - started < 900:
                got = kernel.next_message(1.0)
                if got is None or got[1]["parent_header"].get("msg_id") != msg_id:
                    continue
                msg = got[1]
                if msg["msg_type"] == "stream":
                    count += 1
                    parts.append(msg["content"]["text"])
                idle = msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
            text = "".join(parts)
            seen = {int(x) for x in text.replace("\n", "\r").split("\r") if x.isdigit()}
            lost = updates - len(seen & set(range(updates)))
            return (
                f"updates {updates} lost {lost} messages {count} final {'FINAL' in text} "
                f"idle {idle} s {time.monotonic() - started:.1f}"
            )
        finally:
            kernel.shutdown(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--updates", type=int, default=200_000)
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args()
    for _ in range(args.runs):
        print(once(args.updates), flush=True)


if __name__ == "__main__":
    main()
