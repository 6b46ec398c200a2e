"""A new user's first hour (issue 21): what a newcomer meets on the first-run path works as
they would expect it to."""

from __future__ import annotations

import argparse
from pathlib import Path

from nbjob import cli, mask
from support import notebook, results, run_nbjob

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
