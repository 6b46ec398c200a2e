"""Run one notebook with nbjob (a subprocess) and with a peer (in this process), side by side.

nbjob starts first and runs while the peer runs here, so a comparison costs one notebook's time,
not two. Both run in the same working folder (the notebook's), with one kernel each.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conform import VERDICTS, Masker, Verdict, canonical, classify
from support import start_nbjob, starts_processes


@dataclass
class Pair:
    ours: dict[str, Any]  # nbjob's notebook, as written (JSON)
    theirs: dict[str, Any]  # the peer's
    returncode: int  # nbjob's exit code
    peer_error: BaseException | None  # what the peer raised (a failed cell), if anything
    stderr: str


Peer = Callable[[], tuple[Any, BaseException | None]]


@starts_processes
def run_pair(notebook: Path, out: Path, peer: Peer, args: tuple[str, ...] = ()) -> Pair:
    """nbjob on ``notebook`` (results in ``out``) and ``peer()``, which returns the peer's
    notebook and what it raised (a failed cell), if anything."""
    proc = start_nbjob("run", notebook, "--output", out, "--no-report", *args)
    theirs, error = peer()
    result = proc.wait(120)
    written = out / notebook.name
    assert written.exists(), f"nbjob wrote no notebook (exit {result.returncode}): {result.stderr}"
    ours = json.loads(written.read_text())
    return Pair(ours, json.loads(nbformat.writes(theirs)), result.returncode, error, result.stderr)


def compare(name: str, peer: str, pair: Pair, tmp: Path) -> Verdict:
    """Classify, record for the summary, and fail the test when nbjob's result is wrong."""
    mask = Masker(str(tmp.resolve()), str(tmp))
    ours = canonical(pair.ours, mask)
    theirs = canonical(pair.theirs, mask)
    failed = pair.returncode != 0 or pair.peer_error is not None
    verdict = classify(name, peer, ours, theirs, failed)
    VERDICTS.append(verdict)
    if verdict.result == "wrong":
        pytest.fail(f"{name}: nbjob (-) differs from {peer} (+):\n{diff(verdict)}")
    return verdict


def diff(verdict: Verdict) -> str:
    a, b = (json.dumps(x, indent=1, ensure_ascii=False).splitlines() for x in
            (verdict.ours, verdict.theirs))  # fmt: skip
    return "\n".join(difflib.unified_diff(a, b, "nbjob", verdict.peer, n=4, lineterm=""))


def check_valid(notebook: dict[str, Any]) -> None:
    """nbformat.validate on nbjob's notebook; an invalid one fails the test, except when the only
    reason is issue 16 item 1 (cells with an id in a notebook below 4.5), which another change
    fixes: then xfail."""
    try:
        nbformat.validate(nbformat.from_dict(notebook))
    except nbformat.ValidationError as error:
        minor = notebook.get("nbformat_minor", 0)
        if minor < 5 and "'id' was unexpected" in str(error):
            pytest.xfail(f"issue 16 item 1: a cell id in a 4.{minor} notebook ({error.message})")
        raise
