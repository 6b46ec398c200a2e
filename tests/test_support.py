"""The e2e rule and its guard (tests/support/e2e.py), as a test author meets them.

A test that starts nbjob through a helper of its own is e2e without a word; an in-process test
stays in the fast layer; a test that starts a process in a way no scan sees is stopped by the
guard, loudly. The last check runs a small suite in a pytest subprocess, so it is e2e itself.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import FastLayerError, run_nbjob, serve, start_server
from support.e2e import _GUARD, _Scan

TESTS = Path(__file__).resolve().parent
STUBBORN = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('listening', flush=True)\n"
    "time.sleep(600)\n"
)


def _runs_nbjob_through_a_helper(path: Path) -> None:
    _a_helper(path)


def _a_helper(path: Path) -> None:
    run_nbjob("run", path)


def _in_process() -> None:
    assert sorted([2, 1]) == [1, 2]


# Samples are reached through this mapping, not by name: a test naming one would itself be e2e.
SAMPLES = {"helper": _runs_nbjob_through_a_helper, "in_process": _in_process}


def test_a_test_that_runs_nbjob_through_its_own_helper_is_e2e() -> None:
    assert _Scan().find(SAMPLES["helper"]) == "support.runs.run_nbjob"


def test_an_in_process_test_is_not_e2e() -> None:
    assert _Scan().find(SAMPLES["in_process"]) is None


def test_the_guard_stops_a_process_started_out_of_sight_of_the_rule() -> None:
    start = getattr(subprocess, "run")  # noqa: B009 (out of the rule's sight on purpose)
    try:
        with pytest.raises(FastLayerError, match="is not an e2e test"):
            start(["true"], check=True)
        assert _GUARD.started and "true" in _GUARD.started[0]
    finally:
        _GUARD.started = []  # the guard's own check at the end of the test is satisfied


SUITE = """
import subprocess

from support import run_nbjob


def _helper():
    run_nbjob("--version")


def test_in_process():
    assert 1 + 1 == 2


def test_through_a_helper():
    _helper()


def test_hidden_start():
    getattr(subprocess, "run")(["true"])


def test_hidden_start_swallowed():
    try:
        getattr(subprocess, "run")(["true"])
    except Exception:
        pass
"""


@pytest.mark.e2e  # pytester's subprocess is out of the rule's sight: declared
def test_a_suite_splits_into_layers_and_the_guard_fails_hidden_starts(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\npytest_plugins = ['support.e2e']\n"
    )
    pytester.makepyfile(test_suite=textwrap.dedent(SUITE))
    fast = pytester.runpytest_subprocess("-m", "not e2e", "-p", "no:cacheprovider")
    fast.assert_outcomes(passed=1, failed=2, deselected=1)
    fast.stdout.fnmatch_lines(["*test_hidden_start*started a process*not an e2e test*"])
    everything = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q")
    everything.stdout.fnmatch_lines(["*4 tests collected*"])


def test_a_server_that_ignores_sigterm_is_killed_after_its_grace(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    ready = lambda: "listening" in log.read_text()  # noqa: E731
    with serve("stubborn", [sys.executable, "-c", STUBBORN], log, ready=ready, timeout=30) as s:
        assert s.alive()
        killed = s.stop(grace=0.5)
    assert killed == [s.pid] and not s.alive()
    assert s.proc.returncode == -9


def test_a_server_that_exits_before_it_is_ready_is_reported_with_its_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('bad flag --nope'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"(?s)exited with 3 before early ready.*bad flag"):
        start_server("early", argv, tmp_path / "early.log", ready=lambda: False, timeout=30)
