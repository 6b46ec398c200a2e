"""Papermill-compatible parameters: parsing, and injection as a tagged cell.

``-p NAME VALUE`` converts True/False/None, ints and floats like papermill; ``-r`` keeps the
raw string; files and NBJOB_PARAMETERS are YAML (JSON is YAML too). A parameters file may
hold a list of parameter sets (a sweep): the shard index picks one (``load_file``). The CLI and
config only collect the sources as given (``ParameterSources``); ``merge`` parses, validates
and merges them in one place when the run starts, so every bad parameter, whatever its source,
is a ``ParameterError``: exit 3 with run.json stored. The injected cell is tagged
``injected-parameters`` and goes right after the first cell tagged ``parameters`` (replacing an
injected cell from an earlier run), or at the top when there is none; the notebook's language
writes its source (``nbjob.languages``: papermill's for Python).
"""

from __future__ import annotations

import keyword
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nbjob import languages
from nbjob.errors import ParameterError

INJECTED_TAG = "injected-parameters"
PARAMETERS_TAG = "parameters"


def convert(value: str) -> Any:
    """papermill's ``-p`` conversion: True/False/None, then int, then float, else the string."""
    if value in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[value]
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def parse_mapping(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParameterError(f"{origin}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
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
        raise ParameterError(f"{origin}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None  # parse_mapping reports it
    if not isinstance(data, list):
        return parse_mapping(text, origin)
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
        raise ParameterError(f"parameters need a {able} kernel; this notebook's is {language!r}")
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
