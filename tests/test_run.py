"""End-to-end runs of `nbjob run` as a platform starts it: a subprocess, real ipykernel kernels.

Each test checks what a user would: the exit code, the executed notebook, run.json, the log.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from support import (
    NBJOB,
    cell_ends,
    nbjob_env,
    notebook,
    results,
    start_nbjob,
    texts,
    wait_until,
)
from support import log_events as events
from support import run_nbjob as nbjob


def test_success_magics_shell_helpers_and_displays(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("def twice(x):\n    return 2 * x\n")
    (tmp_path / "data.txt").write_text("relative data\n")
    nb = notebook(
        tmp_path / "nb.ipynb",
        "from helper import twice\nprint(twice(21))",
        "print(open('data.txt').read().strip())",
        "%%bash\necho bash $((6*7))",
        "!echo shell-$((40+2))",
        "%time x = sum(range(10))",
        "from IPython.display import display, clear_output\n"
        "h = display('first', display_id=True)\nh.update('updated')",
        "print('gone')\nclear_output()\nprint('kept')",
        "print('a', end='')\nclear_output(wait=True)\nprint('b')",
        "import os\nos.environ.get('NBJOB_TEST_ENV')",
        "{'answer': 42}",
    )
    out = tmp_path / "out"
    proc = nbjob("run", nb, "--output", out, env={"NBJOB_TEST_ENV": "reached-the-kernel"})
    assert proc.returncode == 0, proc.stderr
    executed, record = results(out)
    cells = executed.cells
    assert texts(cells[0]) == "42\n"
    assert texts(cells[1]) == "relative data\n"
    assert "bash 42" in texts(cells[2])
    assert "shell-42" in texts(cells[3])
    assert "Wall time" in texts(cells[4])
    assert cells[5].outputs[0].data["text/plain"] == "'updated'"
    assert texts(cells[6]) == "kept\n"
    assert texts(cells[7]) == "b\n"
    assert cells[8].outputs[0].data["text/plain"] == "'reached-the-kernel'"
    assert [c.execution_count for c in cells] == list(range(1, 11))
    assert record["status"] == "succeeded" and record["exit_code"] == 0
    assert [c["status"] for c in record["cells"]] == ["completed"] * 10
    assert all(c["duration_s"] is not None for c in record["cells"])
    assert record["kernel"]["name"] == "python3"
    assert record["versions"]["python"] and record["host"]["hostname"]
    names = [e["event"] for e in events(out)]
    assert names.count("cell_start") == 10 and names.count("cell_end") == 10
    assert names[-1] == "run_end"


def test_failing_cell_exit_1_with_banners(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "x = 1", "print('before')\n1/0", "print('never')")
    out = tmp_path / "out"
    proc = nbjob("run", nb, "--output", out)
    assert proc.returncode == 1
    executed, record = results(out)
    assert record["status"] == "failed"
    assert record["failed_cell"]["index"] == 1
    assert record["failed_cell"]["ename"] == "ZeroDivisionError"
    assert "ZeroDivisionError" in record["reason"]
    banners = [
        i
        for i, c in enumerate(executed.cells)
        if "nbjob-error-banner" in c.metadata.get("tags", [])
    ]
    assert banners == [0, 2]  # at the top, and right before the failing cell
    failing = executed.cells[3]
    assert failing.outputs[-1].output_type == "error"
    assert executed.cells[4].execution_count is None  # never ran
    assert [c["status"] for c in record["cells"]] == ["completed", "failed", "pending"]

    # Running the executed notebook again removes the stale banners.
    again = tmp_path / "again"
    nbjob("run", out / "nb.ipynb", "--output", again)
    rerun, _ = results(again)
    tags = [t for c in rerun.cells for t in c.metadata.get("tags", [])]
    assert tags.count("nbjob-error-banner") == 2


@pytest.mark.parametrize("exit_call", ["sys.exit()", "sys.exit(0)", "raise SystemExit"])
def test_system_exit_zero_is_success_and_skips_the_rest(tmp_path: Path, exit_call: str) -> None:
    nb = notebook(
        tmp_path / "nb.ipynb",
        "import sys\nprint('one')",
        f"print('two')\n{exit_call}",
        "print('three')",
    )
    out = tmp_path / "out"
    proc = nbjob("run", nb, "--output", out)
    assert proc.returncode == 0, proc.stderr
    executed, record = results(out)
    assert record["status"] == "succeeded"
    assert [c["status"] for c in record["cells"]] == ["completed", "exited", "skipped"]
    assert texts(executed.cells[2]) == ""


def test_system_exit_nonzero_is_failure(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "import sys\nsys.exit(3)", "print('never')")
    proc = nbjob("run", nb, "--output", tmp_path / "out")
    assert proc.returncode == 1
    assert "SystemExit" in proc.stderr.splitlines()[-1]


def test_input_fails_fast(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "name = input('your name? ')")
    out = tmp_path / "out"
    started = time.monotonic()
    proc = nbjob("run", nb, "--output", out, timeout=60)
    assert proc.returncode == 1
    assert time.monotonic() - started < 30  # safety bound, not a benchmark
    _, record = results(out)
    assert record["failed_cell"]["ename"] == "StdinNotImplementedError"


def test_raises_exception_tag_continues(tmp_path: Path) -> None:
    nb = notebook(
        tmp_path / "nb.ipynb",
        ("raise ValueError('expected')", ["raises-exception"]),
        ("print('skipped')", ["skip-execution"]),
        "print('after')",
    )
    out = tmp_path / "out"
    assert nbjob("run", nb, "--output", out).returncode == 0
    executed, _ = results(out)
    assert executed.cells[0].outputs[0].ename == "ValueError"
    assert executed.cells[1].outputs == []
    assert texts(executed.cells[2]) == "after\n"


def test_parameters_like_papermill(tmp_path: Path) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text("layers: [64, 32]\nopts: {dropout: 0.1}\nlr: 0.5\n")
    nb = notebook(
        tmp_path / "nb.ipynb",
        "print('first')",
        ("lr = 0.1\nepochs = 1\nname = 'a'\nflag = False\nraw = 'x'", ["parameters"]),
        "print(repr((lr, epochs, name, flag, raw, layers, opts, missing)))",
    )
    out = tmp_path / "out"
    proc = nbjob(
        "run",
        nb,
        "--output",
        out,
        "--parameters-file",
        params_file,
        "-p",
        "epochs",
        "10",
        "-p",
        "name",
        "bert",
        "-p",
        "flag",
        "True",
        "-r",
        "raw",
        "007",
        "-p",
        "missing",
        "None",
    )
    assert proc.returncode == 0, proc.stderr
    executed, record = results(out)
    injected = executed.cells[2]
    assert injected.metadata.tags == ["injected-parameters"]
    assert texts(executed.cells[3]) == (
        "(0.5, 10, 'bert', True, '007', [64, 32], {'dropout': 0.1}, None)\n"
    )
    assert record["parameters"]["epochs"] == 10 and record["parameters"]["raw"] == "007"
    assert any(e["event"] == "unknown_parameters" and "missing" in e["names"] for e in events(out))

    # The executed notebook run again replaces the injected cell instead of adding one.
    again = tmp_path / "again"
    proc = nbjob(
        "run",
        out / "nb.ipynb",
        "--output",
        again,
        "--parameters-file",
        params_file,
        "-p",
        "epochs",
        "3",
        "-p",
        "missing",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    rerun, _ = results(again)
    injected_cells = [c for c in rerun.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected_cells) == 1 and "epochs = 3" in injected_cells[0].source


def test_parameters_without_parameters_cell_go_on_top(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "print(alpha)")
    out = tmp_path / "out"
    assert nbjob("run", nb, "--output", out, "-p", "alpha", "0.25").returncode == 0
    executed, _ = results(out)
    assert executed.cells[0].metadata.tags == ["injected-parameters"]
    assert texts(executed.cells[1]) == "0.25\n"


def test_settings_from_environment_only(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", ("a = 1", ["parameters"]), "print(a, b)")
    out = tmp_path / "env-out"
    proc = nbjob(
        "run",
        env={
            "NBJOB_SOURCE": str(nb),
            "NBJOB_OUTPUT": str(out),
            "NBJOB_PARAMETERS": '{"a": 5, "b": "x"}',
            "NBJOB_RUN_ID": "env-run",
        },
    )
    assert proc.returncode == 0, proc.stderr
    executed, record = results(out)
    assert texts(executed.cells[2]) == "5 x\n"
    assert record["run_id"] == "env-run"


@pytest.mark.parametrize(
    ("args", "env", "code", "needle"),
    [
        (["run"], {}, 2, "no notebook source"),
        (["run", "x.ipynb", "--cell-timeout", "soon"], {}, 2, "--cell-timeout"),
        (["run", "x.ipynb"], {"NBJOB_TIMEOUT": "-1"}, 2, "NBJOB_TIMEOUT"),
        (["frobnicate"], {}, 2, "invalid choice"),
        (["run", "does-not-exist.ipynb"], {}, 3, "source not found"),
    ],
)
def test_usage_and_input_errors(
    tmp_path: Path, args: list[str], env: dict[str, str], code: int, needle: str
) -> None:
    proc = nbjob(*args, env={"NBJOB_OUTPUT": str(tmp_path / "o"), **env}, cwd=tmp_path)
    assert proc.returncode == code
    assert needle in proc.stderr.strip().splitlines()[-1]


def test_invalid_notebook_exit_3(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    out = tmp_path / "out"
    proc = nbjob("run", bad, "--output", out)
    assert proc.returncode == 3
    assert json.loads((out / "run.json").read_text())["status"] == "invalid_input"


def test_bad_parameters_file_exit_3(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "x = 1")
    bad = tmp_path / "p.yaml"
    bad.write_text("- just\n- a list\n")
    proc = nbjob("run", nb, "--output", tmp_path / "out", "--parameters-file", bad)
    assert proc.returncode == 3
    # A list is a sweep (see tests/test_ranks.py): without a shard index it cannot run.
    reason = json.loads((tmp_path / "out" / "run.json").read_text())["reason"]
    assert "holds a list of 2 parameter sets" in reason


BAD_PARAMETERS: dict[str, tuple[list[str], dict[str, str], str]] = {
    # case: (extra args, environment, words of the reason); {tmp} is the test's folder
    "flag-name": (["-p", "bad-name", "1"], {}, "command line: 'bad-name' is not a valid"),
    "raw-flag-name": (["-r", "2x", "v"], {}, "command line: '2x' is not a valid"),
    "keyword-name": (["-p", "class", "1"], {}, "'class' is not a valid parameter name"),
    "env-yaml": ([], {"NBJOB_PARAMETERS": "a: [1"}, "NBJOB_PARAMETERS: not valid YAML"),
    "env-name": ([], {"NBJOB_PARAMETERS": "bad-name: 1"}, "NBJOB_PARAMETERS: 'bad-name'"),
    "env-list": ([], {"NBJOB_PARAMETERS": "[1, 2]"}, "must be a mapping"),
    "file-missing": (["--parameters-file", "{tmp}/none.yaml"], {}, "none.yaml: No such file"),
    "file-yaml": (["--parameters-file", "{tmp}/bad.yaml"], {}, "bad.yaml: not valid YAML"),
    "file-type": (["--parameters-file", "{tmp}/date.yaml"], {}, "unsupported type date"),
    "manifest-name": (["--notebook", "nb.ipynb"], {}, "bundle manifest: 'bad-name'"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMETERS))
def test_every_bad_parameter_exits_3_with_run_json(tmp_path: Path, case: str) -> None:
    """Whatever the source of a bad parameter, the same ending: exit 3, run.json, one line."""
    args, env, needle = BAD_PARAMETERS[case]
    src = tmp_path / "src"
    notebook(src / "nb.ipynb", "open('ran', 'w').close()")
    if case == "manifest-name":
        (src / "nbjob.json").write_text('{"parameters": {"bad-name": 1}}')
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    (tmp_path / "date.yaml").write_text("when: 2024-01-01\n")
    out = tmp_path / "out"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = nbjob("run", src if case == "manifest-name" else src / "nb.ipynb", "--output", out,
                 *args, env=env)  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    record = json.loads((out / "run.json").read_text())
    assert (record["status"], record["exit_code"]) == ("invalid_input", 3)
    assert needle in record["reason"] and "\n" not in record["reason"]
    assert proc.last_event["event"] == "run_end" and proc.last_event["reason"] == record["reason"]
    assert "Traceback" not in proc.stderr
    assert not (src / "ran").exists()


def test_cell_timeout_exit_4(tmp_path: Path) -> None:
    nb = notebook(
        tmp_path / "nb.ipynb",
        "print('quick')",
        "import time\nprint('slow')\ntime.sleep(60)",
        "print('never')",
    )
    out = tmp_path / "out"
    proc = nbjob("run", nb, "--output", out, "--cell-timeout", "2")
    assert proc.returncode == 4
    executed, record = results(out)
    assert record["status"] == "timed_out"
    assert record["failed_cell"]["index"] == 1
    assert [c["status"] for c in record["cells"]] == ["completed", "timed_out", "pending"]
    assert record["cells"][1]["duration_s"] >= 2 and record["cells"][1]["ended_at"]
    assert cell_ends(out) == [(0, "completed"), (1, "timed_out")]
    assert "slow" in texts(executed.cells[3])  # output before the timeout is kept (after banners)
    assert "--cell-timeout" in record["reason"]


def test_run_timeout_exit_4(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "import time", "time.sleep(1)", "time.sleep(60)")
    out = tmp_path / "out"
    proc = nbjob("run", nb, "--output", out, "--timeout", "8")
    assert proc.returncode == 4
    _, record = results(out)
    assert "--timeout" in record["reason"]
    assert record["failed_cell"]["index"] == 2


@pytest.mark.parametrize(
    ("code", "expect"),
    [
        ("import os\nos._exit(7)", "exited with status 7"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "SIGKILL"),
    ],
)
def test_kernel_death_exit_5(tmp_path: Path, code: str, expect: str) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "print('alive')", code, "print('never')")
    out = tmp_path / "out"
    started = time.monotonic()
    proc = nbjob("run", nb, "--output", out, timeout=60)
    assert proc.returncode == 5
    assert time.monotonic() - started < 30  # no hang (safety bound, not a benchmark)
    executed, record = results(out)
    assert record["status"] == "kernel_died"
    assert record["failed_cell"]["index"] == 1
    assert expect in record["reason"] and "cell 1" in record["reason"]
    assert texts(executed.cells[1]) == "alive\n"  # partial results stored
    assert [c["status"] for c in record["cells"]] == ["completed", "kernel_died", "pending"]
    assert cell_ends(out) == [(0, "completed"), (1, "kernel_died")]


def test_missing_kernel_exit_7(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "x = 1", kernel="no-such-kernel-xyz")
    nb_json = json.loads(nb.read_text())
    nb_json["metadata"]["kernelspec"]["language"] = "cobol"
    nb.write_text(json.dumps(nb_json))
    out = tmp_path / "out"
    proc = nbjob("run", nb, "--output", out)
    assert proc.returncode == 7
    assert "No such kernel" in proc.stderr.splitlines()[-1]
    assert nbjob("run", nb, "--output", out, "--kernel", "nope").returncode == 7


def test_kernel_fallback_by_language(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "print('ok')", kernel="conda-env-py-xyz")
    out = tmp_path / "out"
    assert nbjob("run", nb, "--output", out).returncode == 0
    assert results(out)[1]["kernel"]["name"] == "python3"


def test_require_gpu_without_gpu_exit_7(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "open('ran', 'w').close()")
    out = tmp_path / "out"
    proc = nbjob("run", nb, "--output", out, env={"NBJOB_REQUIRE_GPU": "1", "PATH": os.defpath})
    assert proc.returncode == 7
    assert "GPU" in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "ran").exists()
    record = results(out)[1]
    assert record["gpus"] == []
    # The run ended before the first cell: run.json still lists the cells, as pending.
    assert [(c["index"], c["status"]) for c in record["cells"]] == [(0, "pending")]
    assert cell_ends(out) == []


def test_huge_output_is_capped_in_notebook_but_complete_in_log(tmp_path: Path) -> None:
    nb = notebook(
        tmp_path / "nb.ipynb",
        "for i in range(200_000):\n    print(f'line {i:07d}')",
        "print('after')",
    )
    out = tmp_path / "out"
    proc = nbjob("run", nb, "--output", out, "--max-output-bytes", "100000")
    assert proc.returncode == 0, proc.stderr[-2000:]
    executed, record = results(out)
    kept = texts(executed.cells[0])
    assert len(kept) < 101_000 and kept.count("bytes left out; executor.log has them") == 1
    assert kept.startswith("line 0000000\n") and kept.endswith("line 0199999\n")  # head + tail
    assert texts(executed.cells[1]) == "after\n"
    assert record["cells"][0]["output_truncated"] is True
    logged = "".join(e.get("text", "") for e in events(out) if e["event"] == "stream")
    assert "line 0000000\n" in logged and "line 0199999\n" in logged


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stores_partial_results_exit_143(tmp_path: Path, sig: signal.Signals) -> None:
    nb = notebook(
        tmp_path / "nb.ipynb",
        "print('done before')",
        "import time\nprint('started', flush=True)\ntime.sleep(120)",
        "print('never')",
    )
    out = tmp_path / "out"
    term_log = tmp_path / "termination-log"
    term_log.write_text("")
    proc = subprocess.Popen(
        [NBJOB, "run", str(nb), "--output", str(out), "--termination-log", str(term_log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=nbjob_env(),
    )
    try:
        assert wait_until(
            lambda: (
                (out / "executor.log").exists()
                and '"text": "started' in (out / "executor.log").read_text()
            ),
            60,
        )
        sent = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 143
    assert took < 10 + 2  # the default grace period bounds it (safety bound)
    executed, record = results(out)
    assert record["status"] == "stopped" and record["exit_code"] == 143
    assert record["failed_cell"]["index"] == 1
    assert [c["status"] for c in record["cells"]] == ["completed", "interrupted", "pending"]
    assert cell_ends(out) == [(0, "completed"), (1, "interrupted")]
    assert texts(executed.cells[1]) == "done before\n"
    assert "started" in texts(executed.cells[3])
    assert "stopped" in term_log.read_text()


def test_stop_is_bounded_when_the_kernel_ignores_interrupts(tmp_path: Path) -> None:
    """A cell that ignores SIGINT cannot hold the job past its grace period."""
    nb = notebook(
        tmp_path / "nb.ipynb",
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('stubborn', flush=True)\nwhile True:\n    time.sleep(0.1)",
    )
    out = tmp_path / "out"
    run = start_nbjob("run", nb, "--output", out, "--stop-grace", "3")
    try:
        assert wait_until(lambda: "stubborn" in _log_text(out), 60), run.output()
        sent = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        result = run.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        run.kill()
    assert result.returncode == 143
    assert took < 3 + 4  # the grace period bounds the stop (generous safety margin)
    executed, record = results(out)
    assert record["status"] == "stopped" and record["cells"][0]["status"] == "interrupted"
    assert "stubborn" in texts(executed.cells[2])  # after the two banners


def _log_text(out: Path) -> str:
    return (out / "executor.log").read_text() if (out / "executor.log").exists() else ""


def test_results_are_written_during_the_run(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "print('first cell output')", "import time\ntime.sleep(8)")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [NBJOB, "run", str(nb), "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def running_with_first_output() -> bool:
            try:
                record = json.loads((out / "run.json").read_text())
                nb_now = nbformat.read(out / "nb.ipynb", as_version=4)
            except (OSError, ValueError):
                return False
            return record["status"] == "running" and "first cell output" in texts(nb_now.cells[0])

        assert wait_until(running_with_first_output, 30)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert results(out)[1]["status"] == "succeeded"


def test_termination_log_and_no_stray_kernels(tmp_path: Path) -> None:
    nb = notebook(
        tmp_path / "nb.ipynb",
        "import os\nopen('kernel.pid', 'w').write(str(os.getpid()))",
        "raise RuntimeError('boom')",
    )
    term_log = tmp_path / "termination-log"
    term_log.write_text("")
    proc = nbjob("run", nb, "--output", tmp_path / "out", "--termination-log", term_log)
    assert proc.returncode == 1
    assert term_log.read_text().strip() == "In [2] (cell 1) raised RuntimeError: boom"
    pid = int((tmp_path / "kernel.pid").read_text())
    assert wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10)


def test_artifacts_written_by_the_notebook_are_stored(tmp_path: Path) -> None:
    nb = notebook(
        tmp_path / "nb.ipynb",
        "import os, pathlib\nd = pathlib.Path(os.environ['NBJOB_ARTIFACTS_DIR'])\n"
        "(d / 'model').mkdir()\n(d / 'model' / 'weights.bin').write_bytes(b'\\x00' * 10)\n"
        "(d / 'metrics.json').write_text('{\"acc\": 0.9}')",
    )
    out = tmp_path / "out"
    assert (
        nbjob("run", nb, "--output", out, "--require-gpu", env={"PATH": os.defpath}).returncode == 7
    )
    assert not (out / "artifacts").exists()  # nothing ran, no empty folder left behind
    assert nbjob("run", nb, "--output", out).returncode == 0
    assert (out / "artifacts" / "model" / "weights.bin").read_bytes() == b"\x00" * 10
    assert results(out)[1]["artifacts"] == ["metrics.json", "model/weights.bin"]


def test_read_only_folder_source_runs_on_a_copy(tmp_path: Path) -> None:
    """A bundle folder on a read-only mount: cells can still write beside the notebook."""
    if shutil.which("unshare") is None or os.getuid() != 0:
        pytest.skip("needs root and unshare for a private read-only bind mount")
    src = tmp_path / "bundle"
    notebook(
        src / "nb.ipynb",
        "from helper import VALUE\nopen('scratch.txt', 'w').write('x')\n"
        "print(VALUE, open('scratch.txt').read())",
    )
    (src / "helper.py").write_text("VALUE = 7\n")
    out = tmp_path / "out"
    script = f"mount --bind -o ro {src} {src} && exec {NBJOB} run {src} --output {out}"
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    executed, _ = results(out)
    assert texts(executed.cells[0]) == "7 x\n"
    assert not (src / "scratch.txt").exists()
