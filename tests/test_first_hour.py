"""A new user's first hour (issue 21): what a newcomer meets on the first-run path works as
they would expect it to."""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbjob import bundle, cli, mask
from support import free_port, notebook, results, run_nbjob

LONG_TOKEN = "FwoGZXIvYXdzEFAKEsessionTOKEN0123456789"  # as long as a real one: still masked


def test_dummy_credentials_of_a_local_store_do_not_mask_ordinary_words(tmp_path: Path) -> None:
    """With ``test``/``test`` (what a local S3-compatible server accepts) a cell printing
    ``test`` keeps it in the console, executor.log and the stored notebook; a value as long as
    a real secret is still masked everywhere."""
    nb = notebook(
        tmp_path / "nb.ipynb",
        "import os\nprint('test passed:', os.environ['AWS_SECRET_ACCESS_KEY'])",
        "print(os.environ['AWS_SESSION_TOKEN'])",
    )
    out = tmp_path / "out"
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_SESSION_TOKEN": LONG_TOKEN,
    }
    result = run_nbjob("run", nb, "--output", out, env=env)
    assert result.returncode == 0, result.stderr
    executed, _ = results(out)
    printed = [c.outputs[0]["text"] for c in executed.cells if c.cell_type == "code"]
    assert printed == ["test passed: test\n", f"{mask.MASK}\n"]
    log = (out / "executor.log").read_text()
    for text in (result.stderr, log, (out / "nb.html").read_text()):
        assert "test passed: test" in text and mask.MASK in text
        assert LONG_TOKEN not in text


def test_the_help_names_every_source_and_explains_every_option() -> None:
    """``nbjob run --help`` names every scheme a source can have; ``nbjob pack --help`` says
    what each of its options is for."""
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run_help = " ".join(commands.choices["run"].format_help().split())
    assert "s3://, gs:// or az://" in run_help and "file://" in run_help
    pack = commands.choices["pack"]
    unexplained = [a.option_strings for a in pack._actions if not a.help]
    assert unexplained == []
    assert "S3-compatible endpoint" in " ".join(pack.format_help().split())


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# Each example, the modules its notebook imports that Python does not ship, and the
# distributions its requirements.txt must name for them.
IMPORTS = {
    "torch-digits": {"numpy": "numpy", "sklearn": "scikit-learn", "torch": "torch"},
    "tf-digits": {"numpy": "numpy", "sklearn": "scikit-learn", "keras": "keras"},
}


@pytest.mark.parametrize("example", sorted(IMPORTS))
def test_each_example_declares_what_its_notebook_imports(example: str) -> None:
    """nbjob's requirements check can warn only about what requirements.txt names."""
    folder = EXAMPLES / example
    (nb_path,) = folder.glob("*.ipynb")
    imported = set()
    for cell in nbformat.read(nb_path, as_version=4).cells:
        if cell.cell_type == "code":
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.Import):
                    imported |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module:
                    imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"IPython", "tensorflow"}
    assert third_party == set(IMPORTS[example])
    assert set(bundle.requirement_lines(folder)) == set(IMPORTS[example].values())


def test_the_torch_example_runs_as_shipped_and_records_its_accuracy(tmp_path: Path) -> None:
    """``nbjob run examples/torch-digits``, the folder as it is: every requirement met, the
    final accuracy in run.json's metrics as the notebook printed it."""
    needed = IMPORTS["torch-digits"]
    missing = [dist for module, dist in needed.items() if not importlib.util.find_spec(module)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (make test installs them; the images have them)")
    out = tmp_path / "out"
    result = run_nbjob("run", EXAMPLES / "torch-digits", "--output", out, timeout=300)
    assert result.returncode == 0, result.stderr
    executed, record = results(out, "digits_torch.ipynb")
    printed = "".join(
        o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs
    )
    (shown,) = re.findall(r"^accuracy=([0-9.]+)$", printed, re.M)
    assert record["unmet_requirements"] == []
    assert round(record["metrics"]["accuracy"], 4) == float(shown) > 0.9


@contextlib.contextmanager
def _unwritable(folder: Path) -> Iterator[Path]:
    """An existing folder nbjob cannot write: read-only by mode for a user, a read-only tmpfs
    mounted on it for root (whom modes do not stop)."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    mount = ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("root, and no read-only tmpfs can be mounted here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_an_output_folder_nbjob_cannot_write_is_exit_6_with_a_reason(tmp_path: Path) -> None:
    """As with ``docker run -v "$PWD/out:/out"`` and a root-owned ./out: exit 6 (storage) before
    any cell runs, the reason naming the folder and the local copy of the record, no traceback."""
    nb = notebook(tmp_path / "nb.ipynb", "print('ran')")
    with _unwritable(tmp_path / "out") as out:
        result = run_nbjob("run", nb, "--output", out)
    assert result.returncode == 6, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    events = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    (end,) = [e for e in events if e["event"] == "run_end"]
    assert end["status"] == "storage_error" and str(out) in end["reason"]
    copy = Path(re.findall(r"a local copy is in (\S+)", end["reason"])[0])
    assert json.loads((copy / "run.json").read_text())["status"] == "storage_error"
    assert not any(e["event"] == "cell_start" for e in events)  # found out before any work


ROOT = EXAMPLES.parent
WALKTHROUGH = EXAMPLES / "demo-s3" / "walkthrough.sh"


def _readme_walkthrough() -> str:
    """The README's bash block that starts the local S3 server."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if "moto_server -p 9000" in b]
    return str(block)


def test_the_readme_shows_the_walkthrough_make_demo_s3_runs() -> None:
    assert _readme_walkthrough() == WALKTHROUGH.read_text().split("set -euo pipefail\n", 1)[1]


def test_the_local_s3_walkthrough_works_as_written(tmp_path: Path) -> None:
    """The README's lines, run as they are (on a free port instead of 9000) in a folder with
    the repository's examples: pack, upload, a run stopped midway (143), the same command
    again resuming it (attempt 2, the saved place restored)."""
    # The venv's commands (nbjob, moto_server) first on PATH, as `make demo-s3` puts them and
    # an activated venv would: CI runs the tests without activating it.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if shutil.which("moto_server", path=path) is None or shutil.which("curl") is None:
        pytest.skip("needs moto_server (make test installs moto[server]) and curl")
    (tmp_path / "examples").symlink_to(EXAMPLES)
    port = free_port()
    script = _readme_walkthrough().replace("9000", str(port))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NBJOB_"))}
    env["PATH"] = path
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the server too, whatever happened
    assert proc.returncode == 0, stderr[-3000:]
    assert "stopped: exit 143" in stdout
    last = stdout.strip().splitlines()[-1]
    found = re.fullmatch(r"succeeded attempt 2 (\{.*\})", last)
    assert found, stdout[-2000:]
    metrics = ast.literal_eval(found.group(1))
    assert metrics["resumed_after"] > 0 and metrics["resumed_after"] + metrics["steps_run"] == 40
    assert "resumed_from=1" in stderr or '"resumed_from": 1' in stderr


def test_a_recorded_metric_leaves_stderr_json_lines_only(tmp_path: Path) -> None:
    """The examples' way of recording a metric: in run.json, and no nbconvert warning about
    an output it cannot show breaks the JSON lines of stderr."""
    record = (
        "from IPython.display import display\n"
        "display({'application/scrapbook.scrap.json+json':\n"
        "         {'name': 'accuracy', 'data': 0.97, 'encoder': 'json', 'version': 1}},\n"
        "        raw=True, metadata={'scrapbook': {'name': 'accuracy'}})"
    )
    nb = notebook(tmp_path / "nb.ipynb", record)
    out = tmp_path / "out"
    result = run_nbjob("run", nb, "--output", out)
    assert result.returncode == 0, result.stderr
    assert results(out)[1]["metrics"] == {"accuracy": 0.97}
    not_json = []
    for line in result.stderr.splitlines():
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not_json == []
