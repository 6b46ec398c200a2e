"""The parameters cell of each language, as text: golden strings for the values that are hard
to write (quotes, backslashes, newlines, tabs, non-ASCII, None, booleans, big and non-finite
numbers, nested lists and mappings), papermill's shapes with papermill's mistakes fixed (each
language module says which). bash's cell also runs through ``bash -c`` and R's through
``Rscript`` (where R is installed): the values read back are the ones given.
Real kernels of R and bash run the same cells in tests/test_languages.py and
tests/test_language_runs.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from nbjob import languages
from nbjob.errors import ParameterError
from support.kernels import bash_holds, missing, r_holds

TEXT = 'it\'s "q" \\ $HOME\n\tü 日本 😀'
VALUES: dict[str, Any] = {
    "text": TEXT,
    "none": None,
    "yes": True,
    "no": False,
    "count": -42,
    "long": 2**40,
    "big": 2**70,
    "rate": 0.25,
    "nan": float("nan"),
    "inf": float("inf"),
    "minus_inf": float("-inf"),
    "items": [1, "two", None, [3.5]],
    "nested": {"a": {"b": [True, {"c": None}]}, "k": "v"},
    "empty": [],
    "blank": {},
}

# C#'s and F#'s nested mapping, too long for one line of source.
NESTED_CS = (
    'var nested = new Dictionary<string,Object>{ { "a" , new Dictionary<string,Object>{ { "b" , '
    'new object[] { true, new Dictionary<string,Object>{ { "c" , (object)null } } } } } }, '
    '{ "k" , "v" } };'
)
NESTED_FS = (
    'let nested = [ ("a", [ ("b", [ box (true); box ([ ("c", None :> System.IComparable) ] '
    "|> Map.ofList) ] :> System.IComparable) ] |> Map.ofList :> System.IComparable); "
    '("k", "v" :> System.IComparable) ] |> Map.ofList'
)
GOLDEN = {
    "r": r"""# Parameters
text = "it's \"q\" \\ $HOME\n\t\u00fc \u65e5\u672c \U0001f600"
none = NULL
yes = TRUE
no = FALSE
count = -42
long = 1099511627776
big = 1180591620717411303424
rate = 0.25
nan = NaN
inf = Inf
minus_inf = -Inf
items = list(1, "two", NULL, list(3.5))
nested = list("a" = list("b" = list(TRUE, list("c" = NULL))), "k" = "v")
empty = list()
blank = list()
""",
    "bash": r"""# Parameters
text=$'it\'s "q" \\ $HOME\n\tü 日本 😀'
none=''
yes=true
no=false
count=-42
long=1099511627776
big=1180591620717411303424
rate=0.25
nan=nan
inf=inf
minus_inf=-inf
unset items; items=(1 two '' '[3.5]')
unset nested; declare -A nested=([a]='{"b": [true, {"c": null}]}' [k]=v)
unset empty; empty=()
unset blank; declare -A blank=()
""",
    "julia": r"""# Parameters
text = "it's \"q\" \\ \$HOME\n\tü 日本 😀"
none = nothing
yes = true
no = false
count = -42
long = 1099511627776
big = 1180591620717411303424
rate = 0.25
nan = NaN
inf = Inf
minus_inf = -Inf
items = [1, "two", nothing, [3.5]]
nested = Dict("a" => Dict("b" => [true, Dict("c" => nothing)]), "k" => "v")
empty = []
blank = Dict()
""",
    "scala": r"""// Parameters
val text = "it's \"q\" \\ $HOME\n\tü 日本 😀"
val none = None
val yes = true
val no = false
val count = -42
val long = 1099511627776L
val big = BigInt("1180591620717411303424")
val rate = 0.25
val nan = Double.NaN
val inf = Double.PositiveInfinity
val minus_inf = Double.NegativeInfinity
val items = Seq(1, "two", None, Seq(3.5))
val nested = Map("a" -> Map("b" -> Seq(true, Map("c" -> None))), "k" -> "v")
val empty = Seq()
val blank = Map()
""",
    "c#": r"""// Parameters
var text = "it's \"q\" \\ $HOME\n\tü 日本 😀";
var none = (object)null;
var yes = true;
var no = false;
var count = -42;
var @long = 1099511627776L;
var big = System.Numerics.BigInteger.Parse("1180591620717411303424");
var rate = 0.25;
var nan = double.NaN;
var inf = double.PositiveInfinity;
var minus_inf = double.NegativeInfinity;
var items = new object[] { 1, "two", (object)null, new [] { 3.5 } };
NESTED
var empty = new object[] {  };
var blank = new Dictionary<string,Object>{  };
""".replace("NESTED", NESTED_CS),
    "f#": r"""(* Parameters *)
let text = "it's \"q\" \\ $HOME\n\tü 日本 😀"
let none = None
let yes = true
let no = false
let count = -42
let long = 1099511627776L
let big = 1180591620717411303424I
let rate = 0.25
let nan = nan
let inf = infinity
let minus_inf = -infinity
let items = [ box (1); box ("two"); box (None); box ([ 3.5 ]) ]
NESTED
let empty = List.empty<obj>
let blank = Map.empty<string, System.IComparable>
""".replace("NESTED", NESTED_FS),
    "powershell": r"""# Parameters
$text = "it's `"q`" \ `$HOME`n`tü 日本 😀"
$none = $Null
$yes = $True
$no = $False
$count = -42
$long = 1099511627776L
$big = [bigint]'1180591620717411303424'
$rate = 0.25
$nan = [double]::NaN
$inf = [double]::PositiveInfinity
$minus_inf = [double]::NegativeInfinity
$items = @(1, "two", $Null, @(3.5))
$nested = @{"a" = @{"b" = @($True, @{"c" = $Null})}; "k" = "v"}
$empty = @()
$blank = @{}
""",
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_the_parameters_cell_is_the_golden_text(name: str) -> None:
    language = languages.get(name)
    source = language.parameters_cell(VALUES)
    assert source == GOLDEN[name]
    assert language.declared_names(source) == set(VALUES)


def test_every_language_but_python_has_golden_text() -> None:
    assert set(languages.names()) - {"python"} == set(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_a_value_of_no_parameter_type_is_refused(name: str) -> None:
    with pytest.raises(ParameterError, match="unsupported type"):
        languages.get(name).parameters_cell({"when": [{1, 2}]})


@pytest.mark.parametrize("name", ["r", "bash", "julia", "scala", "c#", "f#"])
def test_a_nul_character_is_refused(name: str) -> None:
    with pytest.raises(ParameterError, match="NUL"):
        languages.get(name).parameters_cell({"text": "a\0b"})


@pytest.mark.parametrize(
    ("name", "word", "line"),
    [
        ("r", "function", "`function` = 1"),
        ("r", "_private", "private = 1"),  # as papermill: R names cannot start with "_"
        ("julia", "end", 'var"end" = 1'),
        ("scala", "type", "val `type` = 1"),
        ("c#", "string", "var @string = 1;"),
        ("f#", "type", "let ``type`` = 1"),
        ("powershell", "naïve", "${naïve} = 1"),
    ],
)
def test_a_reserved_word_is_a_name_the_language_can_hold(name: str, word: str, line: str) -> None:
    language = languages.get(name)
    source = language.parameters_cell({word: 1})
    assert source.splitlines()[1] == line
    assert language.declared_names(source) == {word.lstrip("_") if name == "r" else word}


def test_bash_refuses_a_name_bash_cannot_hold() -> None:
    with pytest.raises(ParameterError, match="not a bash variable name"):
        languages.get("bash").parameters_cell({"naïve": 1})


def test_an_integer_longer_than_pythons_digit_limit_is_written_whole() -> None:
    huge = 7**6000  # 5071 digits: str() would refuse it
    for name in ("r", "bash", "julia"):
        assert str(len(languages.get(name).literal(huge))) == "5071"


# -- the cells run through the language itself ---------------------------------------------------

_DUMP = r"""
dump() {
  local -n v=$1
  case "$(declare -p "$1")" in
    "declare -A"*) printf 'A\0'; for k in "${!v[@]}"; do printf '%s\0%s\0' "$k" "${v[$k]}"; done;;
    "declare -a"*) printf 'a\0'; for x in "${v[@]}"; do printf '%s\0' "$x"; done;;
    *) printf 's\0%s\0' "$v";;
  esac
  printf '\036'
}
"""


def _undump(out: bytes) -> list[Any]:
    values: list[Any] = []
    for record in out.decode().split("\036")[:-1]:
        kind, *fields = record.split("\0")[:-1]
        if kind == "A":
            values.append(dict(zip(fields[::2], fields[1::2], strict=True)))
        else:
            values.append(fields if kind == "a" else fields[0])
    return values


def test_the_bash_cell_gives_bash_the_values() -> None:
    source = languages.get("bash").parameters_cell(VALUES)
    script = source + _DUMP + "".join(f"dump {name}\n" for name in VALUES)
    done = subprocess.run(["bash", "-c", script], capture_output=True, timeout=30, check=True)
    assert _undump(done.stdout) == [bash_holds(v) for v in VALUES.values()]


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R is not installed")
def test_the_r_cell_gives_r_the_values() -> None:
    if reason := missing("ir"):  # jsonlite comes with IRkernel
        pytest.skip(reason)
    source = languages.get("r").parameters_cell(VALUES)
    fields = ", ".join(f"{name} = {name}" for name in VALUES)
    script = (
        source + f"json = jsonlite::toJSON(list({fields}), auto_unbox = TRUE, null = 'null',"
        " na = 'string', digits = NA)\nwriteLines(enc2utf8(json), useBytes = TRUE)\n"
    )
    env = {**os.environ, "LC_ALL": "C"}  # the escapes hold in any locale (output: UTF-8)
    done = subprocess.run(
        ["Rscript", "-e", script], capture_output=True, timeout=60, check=True, env=env
    )
    got = json.loads(done.stdout)
    assert got == {name: r_holds(v) for name, v in VALUES.items()}


def test_the_manual_lists_every_language() -> None:
    """docs/running/languages.md's first table has a row for each registered language."""
    page = Path(__file__).resolve().parents[1] / "docs" / "running" / "languages.md"
    lines = page.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Language (kernelspec"))
    rows = lines[start + 2 : lines.index("", start)]
    listed = {name.strip().lower() for row in rows for name in row.split("|")[1].split(",")}
    assert set(languages.names()) <= listed
