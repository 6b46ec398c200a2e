"""Papermill-compatible parameters: parsing, and injection as a tagged cell.

``-p NAME VALUE`` converts True/False/None, ints and floats like papermill; ``-r`` keeps the
raw string; files and NBJOB_PARAMETERS are YAML (JSON is YAML too). Integers stay exact
whatever their length (up to ``MAX_INT_DIGITS``): Python's int-string conversion limit (4300
digits) would otherwise make a long ``-p`` integer a float ``inf`` and a long YAML integer an
error; run.json and the log hold such an integer as a string of its digits (``recordable``).
A parameters file may hold a list of parameter sets (a sweep): the shard index picks one
(``load_file``); any error reading it is a ``ParameterError``. The CLI and config only collect
the sources as given (``ParameterSources``); ``merge`` parses, validates and merges them in one
place when the run starts, so every bad parameter, whatever its source,
is a ``ParameterError``: exit 3 with run.json stored. The injected cell is tagged
``injected-parameters`` and goes right after the first cell tagged ``parameters`` (replacing an
injected cell from an earlier run), or at the top when there is none; the notebook's language
writes its source (``nbjob.languages``: papermill's for Python).
"""

from __future__ import annotations

import builtins
import decimal
import functools
import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbjob import languages
from nbjob.errors import ParameterError

INJECTED_TAG = "injected-parameters"
PARAMETERS_TAG = "parameters"
# The longest integer a parameter may be: converting decimal digits costs time quadratic in
# their number (0.05 s for 20,000 digits); a longer one is a ParameterError (exit 3).
MAX_INT_DIGITS = 20_000
# Integers longer than this (in bits; 14,000 bits < 4300 decimal digits, Python's default
# int-string limit) are held in run.json and the log as strings of their digits.
LONG_INT_BITS = 14_000
_DIGITS = re.compile(r"\s*([+-]?)\s*(\d[\d_]*)\s*")


def exact_int(text: str) -> int | None:
    """The integer ``text`` spells in decimal (underscores allowed, as ``int`` takes them),
    exact whatever its length: Python's own ``int(text)`` refuses more than 4300 digits. None
    when ``text`` is not one; ``ParameterError`` beyond ``MAX_INT_DIGITS`` digits."""
    found = _DIGITS.fullmatch(text)
    if found is None or "__" in found[2] or found[2].endswith("_"):
        return None
    digits = found[2].replace("_", "")
    if len(digits.lstrip("0")) > MAX_INT_DIGITS:
        raise ParameterError(
            f"an integer of {len(digits)} digits is longer than nbjob takes ({MAX_INT_DIGITS})"
        )
    with decimal.localcontext() as ctx:  # Decimal -> int has no digit limit; exact
        ctx.prec = len(digits) + 1
        return int(decimal.Decimal(found[1] + digits))


class TooLongInteger(str):
    """A ``-p`` value that is an integer longer than ``MAX_INT_DIGITS``: ``merge`` refuses it
    (exit 3 with run.json stored), as it would from any other source."""


def convert(value: str) -> Any:
    """papermill's ``-p`` conversion: True/False/None, then int, then float, else the string.
    Integers are exact whatever their length (``exact_int``), never a float ``inf``."""
    if value in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[value]
    try:
        return int(value)
    except ValueError:
        pass
    try:
        if (number := exact_int(value)) is not None:
            return number
    except ParameterError:
        return TooLongInteger(value)
    try:
        return float(value)
    except ValueError:
        return value


@functools.cache
def _loader() -> Any:
    """YAML's safe loader, with integers exact whatever their length (PyYAML's ``int()``
    raises a plain ValueError beyond 4300 digits); made at the first use (yaml's import is
    ~15 ms of every run's start, before the kernel's launch, otherwise)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_yaml_int(self, node: Any) -> Any:
            try:
                return super().construct_yaml_int(node)
            except ValueError:
                number = exact_int(str(self.construct_scalar(node)))
                if number is None:
                    raise
                return number

    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
    return Loader


def _load_yaml(text: str, origin: str) -> Any:
    """``text`` as YAML (JSON is YAML too); any error reading it is a ``ParameterError``."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())
    except ParameterError as exc:
        raise ParameterError(f"{origin}: {exc.reason}") from None
    except yaml.YAMLError as exc:
        raise ParameterError(f"{origin}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ParameterError(f"{origin}: cannot be read: {first[:300]}") from None


def parse_mapping(text: str, origin: str) -> dict[str, Any]:
    return _mapping(_load_yaml(text, origin), origin)


def _mapping(data: Any, origin: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError(f"{origin}: parameters must be a mapping of names to values")
    return data


def load_file(path: str | Path, shard: int | None = None) -> dict[str, Any]:
    """A file's parameters; a file holding a list of sets (a sweep) gives entry ``shard``."""
    origin = f"parameters file {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ParameterError(f"{origin}: {exc.strerror or exc}") from None
    except (UnicodeError, ValueError) as exc:
        raise ParameterError(f"{origin}: not UTF-8 text ({exc})") from None
    data = _load_yaml(text, origin)
    if not isinstance(data, list):
        return _mapping(data, origin)
    if shard is None:
        raise ParameterError(
            f"{origin} holds a list of {len(data)} parameter sets (a sweep): pick one with"
            " --shard N, SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX"
        )
    if not 0 <= shard < len(data):
        raise ParameterError(f"{origin}: shard {shard} is out of range (0..{len(data) - 1})")
    if not isinstance(data[shard], dict):
        raise ParameterError(f"{origin}: entry {shard} is not a mapping of names to values")
    return data[shard]


@dataclass(frozen=True)
class ParameterSources:
    """Parameters as given, not yet parsed or checked (``merge`` does both)."""

    file: str | None = None  # --parameters-file
    env_text: str | None = None  # NBJOB_PARAMETERS
    flags: tuple[tuple[str, Any], ...] = ()  # -p (converted) and -r, in command-line order
    shard: int | None = None  # the entry of a parameters file that holds a list (a sweep)


def merge(sources: ParameterSources, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Manifest defaults < parameters file < NBJOB_PARAMETERS < -p/-r, each name and value checked.

    Raises ``ParameterError`` (exit 3) for a bad name from any source, bad YAML, an unreadable
    file or a value of a type the injected cell cannot hold.
    """
    layers: list[tuple[str, Mapping[Any, Any]]] = [("bundle manifest", manifest or {})]
    if sources.file:
        layers.append((f"parameters file {sources.file}", load_file(sources.file, sources.shard)))
    if sources.env_text:
        layers.append(("NBJOB_PARAMETERS", parse_mapping(sources.env_text, "NBJOB_PARAMETERS")))
    layers.append(("command line", dict(sources.flags)))
    merged: dict[str, Any] = {}
    for origin, values in layers:
        for name, value in values.items():
            _check(origin, name, value)
            merged[name] = value
    return merged


def _check(origin: str, name: Any, value: Any) -> None:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ParameterError(f"{origin}: {name!r} is not a valid parameter name")
    try:
        if isinstance(value, TooLongInteger):
            exact_int(value)  # raises: the reason says how long
        languages.check_value(value)
    except ParameterError as exc:
        raise ParameterError(f"{origin}: parameter {name}: {exc.reason}") from None


def inject(nb: Any, parameters: Mapping[str, Any], language: str) -> list[str]:
    """Insert the injected-parameters cell, written by the notebook's ``language``; return the
    names the parameters cell does not declare. Parameters for a language that cannot take
    them are a ``ParameterError`` (exit 3): the run would otherwise ignore what was asked."""
    import nbformat

    if not parameters:
        return []
    lang = languages.get(language)
    if not lang.supports("parameters"):
        able = ", ".join(languages.supporting("parameters"))
        raise ParameterError(
            f"parameters need a kernel of a language nbjob writes them in ({able}); "
            f"this notebook's is {language!r}"
        )
    source = lang.parameters_cell(parameters)
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": [INJECTED_TAG]})
    cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    marked = [i for i, c in enumerate(cells) if PARAMETERS_TAG in c.metadata.get("tags", [])]
    unknown: list[str] = []
    if marked:
        declared = lang.declared_names(cells[marked[0]].source)
        if declared is not None:
            unknown = [k for k in parameters if k not in declared]
        cells.insert(marked[0] + 1, cell)
    else:
        cells.insert(0, cell)
    nb.cells = cells
    return unknown


def shadowed_builtins(parameters: Mapping[str, Any], language: str) -> list[str]:
    """The parameters named like a Python built-in (``print``, ``input``): the injected cell
    hides that built-in in the notebook. A warning, not an error: papermill allows it."""
    if languages.get(language).name != "python":
        return []
    return [name for name in parameters if hasattr(builtins, name)]


def recordable(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``parameters`` as run.json and the log hold them: an integer longer than
    ``LONG_INT_BITS`` becomes the string of its decimal digits (JSON readers, Python's
    included, refuse numbers that long)."""
    return {name: _recordable(value) for name, value in parameters.items()}


def _recordable(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() <= LONG_INT_BITS:
            return value
        return str(decimal.Decimal(value))  # exact, and without int's digit limit
    if isinstance(value, dict):
        return {_recordable(k): _recordable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_recordable(v) for v in value]
    return value
