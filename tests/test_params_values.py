"""Parameter values as given: long integers stay exact, a bad parameters file is exit 3, a
parameter that hides a Python built-in is named in a warning (issue 15, finding 8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nbjob import params
from nbjob.errors import ParameterError
from nbjob.languages.python import Python
from support import log_events, notebook, results, run_nbjob, texts

SEVENS = "7" * 5000  # more digits than Python's int-string limit (4300)
NINES = "9" * 5000
PRIME = 1_000_000_007


# -- in process --------------------------------------------------------------------------------


def test_a_long_integer_flag_stays_an_exact_integer() -> None:
    value = params.convert(SEVENS)
    assert isinstance(value, int) and value % PRIME == _mod(SEVENS)
    assert params.convert("-" + SEVENS) == -value
    assert params.convert("1_000") == 1000 and params.convert("1e400") == float("inf")
    assert params.convert("12abc") == "12abc" and params.convert("1__0") == "1__0"


def test_a_long_integer_literal_parses_back_to_the_same_value() -> None:
    value = params.convert(SEVENS)
    source = Python().parameters_cell({"n": value, "both": [-value, 12]})
    scope: dict[str, object] = {}
    exec(compile(source, "<injected>", "exec"), scope)
    assert scope["n"] == value and scope["both"] == [-value, 12]
    assert "n = 0x" in source  # a decimal literal of 5000 digits does not compile


def test_run_json_holds_a_long_integer_as_its_digits() -> None:
    record = params.recordable({"n": params.convert(SEVENS), "small": [3], "flag": True})
    assert record == {"n": SEVENS, "small": [3], "flag": True}
    json.loads(json.dumps(record))  # readable back, by Python's JSON too


def test_a_longer_integer_than_nbjob_takes_is_refused_from_any_source(tmp_path: Path) -> None:
    huge = "1" * (params.MAX_INT_DIGITS + 1)
    flags = params.ParameterSources(flags=(("n", params.convert(huge)),))
    with pytest.raises(ParameterError, match=r"command line: parameter n: an integer of 20001"):
        params.merge(flags)
    file = tmp_path / "p.yaml"
    file.write_text(f"n: {huge}\n")
    with pytest.raises(ParameterError, match=r"p.yaml: an integer of 20001 digits"):
        params.merge(params.ParameterSources(file=str(file)))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("when: 2020-13-45\n", "cannot be read: month must be in 1..12"),
        ("a: [1, 2\n", "not valid YAML/JSON"),
        ("- a: 1\n", "holds a list of 1 parameter sets"),
    ],
)
def test_any_error_reading_a_parameters_file_is_a_parameter_error(
    tmp_path: Path, text: str, reason: str
) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(text)
    with pytest.raises(ParameterError, match=reason):
        params.merge(params.ParameterSources(file=str(file)))
    file.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(ParameterError, match="not UTF-8"):
        params.merge(params.ParameterSources(file=str(file)))


def test_parameters_named_like_python_builtins_are_found() -> None:
    names = {"print": 1, "lr": 0.1, "input": "x", "Print": 2}
    assert params.shadowed_builtins(names, "Python") == ["print", "input"]


def _mod(digits: str) -> int:
    """``int(digits) % PRIME`` without converting the whole string at once (the limit)."""
    rest = 0
    for digit in digits:
        rest = (rest * 10 + int(digit)) % PRIME
    return rest


# -- real runs ---------------------------------------------------------------------------------


def test_long_integers_reach_the_kernel_exactly_and_a_shadowed_builtin_is_named(
    tmp_path: Path,
) -> None:
    file = tmp_path / "params.yaml"
    file.write_text(f"m: {NINES}\n")
    nb = notebook(
        tmp_path / "nb.ipynb",
        ("n = 0\nm = 0", ["parameters"]),
        "import sys\nsys.stdout.write(f'{n % 1000000007} {m % 1000000007} {n.bit_length()}"
        " {print!r}\\n')",
    )
    out = tmp_path / "out"
    args = ("run", nb, "--output", out, "--parameters-file", file, "-p", "n", SEVENS)
    result = run_nbjob(*args, "-p", "print", "1")
    assert result.returncode == 0, result.stderr
    executed, record = results(out)
    value = params.convert(SEVENS)
    assert texts(executed.cells[2]) == f"{_mod(SEVENS)} {_mod(NINES)} {value.bit_length()} 1\n"
    assert record["parameters"]["n"] == SEVENS and record["parameters"]["m"] == NINES
    warned = [e for e in log_events(out) if e["event"] == "parameter_shadows_builtin"]
    assert [e["names"] for e in warned] == [["print"]] and warned[0]["level"] == "warning"


def test_an_unreadable_parameters_file_ends_the_run_with_3_and_a_record(tmp_path: Path) -> None:
    file = tmp_path / "params.yaml"
    file.write_text("when: 2020-13-45\n")
    nb = notebook(tmp_path / "nb.ipynb", "print('never')")
    out = tmp_path / "out"
    result = run_nbjob("run", nb, "--output", out, "--parameters-file", file)
    assert result.returncode == 3, result.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "invalid_input" and record["exit_code"] == 3
    assert "month must be in 1..12" in record["reason"]
