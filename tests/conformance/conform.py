"""The conformance suite's comparison: a notebook nbjob wrote against the one a peer wrote.

Both notebooks are brought to one canonical form (``canonical``) before they are compared:

- **streams as JupyterLab shows them**: consecutive outputs of the same stream merged, ``\\r``
  and ``\\b`` folded with terminal semantics (``fold``: an independent reference, not nbjob's
  own ``LineFolder``), streams left empty dropped. The peers write one output per message,
  unfolded; nbjob writes what JupyterLab shows. Output widgets' captured streams the same way.
- **volatile values masked** (``VOLATILE``): dates, uuids and widget model ids, memory
  addresses, the kernel's temporary cell files, the test's temporary folder.
- **what is the runner's own left out**: cell ids and ``nbformat_minor`` (issue 16 item 1,
  another change), the ``execution`` timing and ``papermill`` entries of cell metadata,
  papermill's notebook metadata, empty tag lists and empty output ``metadata``. The rest of
  the metadata (the user's, ``kernelspec``, ``language_info``) is compared.

Then ``classify`` names the result: **identical** when the canonical forms are equal;
**equivalent** when they are equal once the differences in ``EQUIVALENCES`` (each with the
reason it is right) are set aside; else **wrong**, with both forms for the diff.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from support import terminal

VIEW = "application/vnd.jupyter.widget-view+json"
WIDGETS = "application/vnd.jupyter.widget-state+json"
BANNER_TAGS = ("nbjob-error-banner", "papermill-error-cell-tag")
INJECTED = "injected-parameters"
# What each runner writes about its own run: timing (nbclient, nbjob) and papermill's record.
RUNNERS_CELL_METADATA = ("execution", "papermill")
RUNNERS_METADATA = ("papermill", "widgets")  # widget state is compared on its own

VOLATILE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?"), "<date>"),
    (re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}"), "<id>"),
    (re.compile(r"0x[0-9a-fA-F]{6,16}"), "<address>"),
    (re.compile(r"/tmp/ipykernel_\d+/\d+\.py"), "<ipykernel-cell>"),
)


def fold(text: str) -> str:
    """JupyterLab's stream text (``support.terminal``, the reference model), as one string."""
    done, line = terminal(text)
    return "".join(done) + line


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


class Masker:
    """Masks volatile values in strings; ``extra`` are literal strings (the tmp folder)."""

    def __init__(self, *extra: str) -> None:
        self.extra = [e for e in extra if e]

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            for literal in self.extra:
                value = value.replace(literal, "<tmp>")
            for pattern, mask in VOLATILE:
                value = pattern.sub(mask, value)
            return value
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        return value


def outputs(raw: list[Any], mask: Masker) -> list[dict[str, Any]]:
    """A cell's (or an Output widget's) outputs as JupyterLab shows them, masked."""
    merged: list[dict[str, Any]] = []
    for output in raw:
        out = copy.deepcopy(dict(output))
        if out.get("output_type") == "stream":
            out["text"] = _text(out.get("text"))
            last = merged[-1] if merged else {}
            if last.get("output_type") == "stream" and last.get("name") == out.get("name"):
                last["text"] += out["text"]
                continue
        merged.append(out)
    result = []
    for out in merged:
        if out.get("output_type") == "stream":
            out["text"] = fold(out["text"])
            if not out["text"]:
                continue
        if not out.get("metadata"):
            out.pop("metadata", None)
        data = out.get("data")
        if isinstance(data, dict):
            out["data"] = {k: _data(k, v) for k, v in data.items()}
        result.append(mask(out))
    return result


def _data(mime: str, value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)  # nbformat writes text (and SVG) as a list of lines
    if isinstance(value, str) and mime.startswith("image/") and mime != "image/svg+xml":
        return "".join(value.split())  # base64 line breaks differ between writers
    return value


def widget_state(nb: dict[str, Any], mask: Masker) -> list[str]:
    """Widget models as a sorted list of canonical JSON (model ids are masked anyway)."""
    widgets = (nb.get("metadata", {}).get("widgets") or {}).get(WIDGETS) or {}
    models = []
    for model in (widgets.get("state") or {}).values():
        model = copy.deepcopy(dict(model))
        state = model.get("state") or {}
        if "outputs" in state:
            state["outputs"] = outputs(state["outputs"], mask)
        models.append(json.dumps(mask(model), sort_keys=True))
    return sorted(models)


def canonical(nb: dict[str, Any], mask: Masker) -> dict[str, Any]:
    """The notebook as compared: its metadata, cells (type, source, tags, the rest of their
    metadata, count, outputs) and widget state, less what is the runner's own."""
    cells = []
    for cell in nb["cells"]:
        metadata = dict(cell.get("metadata") or {})
        tags = list(metadata.pop("tags", None) or [])
        entry: dict[str, Any] = {"type": cell["cell_type"], "source": _text(cell.get("source"))}
        if tags:
            entry["tags"] = tags
        metadata = {k: v for k, v in metadata.items() if k not in RUNNERS_CELL_METADATA}
        if metadata:
            entry["metadata"] = mask(metadata)
        if cell["cell_type"] == "code":
            entry["count"] = cell.get("execution_count")
            entry["outputs"] = outputs(cell.get("outputs") or [], mask)
        cells.append(entry)
    metadata = {k: v for k, v in (nb.get("metadata") or {}).items() if k not in RUNNERS_METADATA}
    return {"metadata": mask(metadata), "cells": cells, "widgets": widget_state(nb, mask)}


# -- differences that are right ----------------------------------------------------------------


def _no_banners(nb: dict[str, Any]) -> dict[str, Any]:
    cells = [c for c in nb["cells"] if not set(c.get("tags", [])) & set(BANNER_TAGS)]
    return {**nb, "cells": cells}


def _parameter_values(nb: dict[str, Any]) -> dict[str, Any]:
    cells = []
    for cell in nb["cells"]:
        if INJECTED in cell.get("tags", []):
            cell = {**cell, "source": _assignments(cell["source"])}
        cells.append(cell)
    return {**nb, "cells": cells}


def _assignments(source: str) -> str:
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return repr(sorted(values.items()))


def _no_pager_outputs(nb: dict[str, Any]) -> dict[str, Any]:
    cells = [
        {**c, "outputs": [o for o in c["outputs"] if o.get("output_type") != "display_data"]}
        if "pager" in c.get("tags", []) else c
        for c in nb["cells"]
    ]  # fmt: skip
    return {**nb, "cells": cells}


def _no_kernelspec(nb: dict[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in nb["metadata"].items() if k != "kernelspec"}
    return {**nb, "metadata": metadata}


def _no_widget_state(nb: dict[str, Any]) -> dict[str, Any]:
    return {**nb, "widgets": []}


@dataclass(frozen=True)
class Equivalence:
    reason: str
    apply: Callable[[dict[str, Any]], dict[str, Any]]
    failed_only: bool = False  # applies only when the run failed


EQUIVALENCES: dict[str, Equivalence] = {
    "error banners": Equivalence(
        "Both mark a failed run with red markdown banner cells, at the top and before the cell "
        "that failed, in their own words (papermill: 'An Exception was encountered at In [N]'; "
        "nbjob: 'This run did not finish: ...' naming the cell). The banners are compared "
        "away; the failing cell's error output is compared in full.",
        _no_banners,
    ),
    "parameter quoting": Equivalence(
        "The injected-parameters cell assigns the same values; papermill writes strings with "
        "double quotes, nbjob with repr's quotes. Compared as the values the cell assigns.",
        _parameter_values,
    ),
    "widget state of a failed run": Equivalence(
        "nbclient writes widget state only when every cell succeeded (nbclient "
        "set_widgets_metadata); nbjob writes it whatever ended the run, so a failed run's "
        "widget views still render. Compared without widget state when the run failed.",
        _no_widget_state,
        failed_only=True,
    ),
    "kernel written": Equivalence(
        "The notebook names no kernel or another one than ran (--kernel): nbjob writes the "
        "kernel that ran into its kernelspec, as JupyterLab does on a change of kernel; "
        "papermill keeps the notebook's (papermill#856). Compared without the kernelspec.",
        _no_kernelspec,
    ),
    "pager output": Equivalence(
        "A pager payload (`len?`, `%pdoc`) is shown by JupyterLab as an output of the cell and "
        "kept by nbjob as a display output; nbclient drops it. Compared without the display "
        "outputs of the cells tagged `pager` in the suite's notebook.",
        _no_pager_outputs,
    ),
}


@dataclass
class Verdict:
    name: str
    peer: str
    result: str  # identical | equivalent | wrong
    used: list[str] = field(default_factory=list)
    ours: dict[str, Any] = field(default_factory=dict)
    theirs: dict[str, Any] = field(default_factory=dict)


def classify(
    name: str, peer: str, ours: dict[str, Any], theirs: dict[str, Any], failed: bool
) -> Verdict:
    """Identical, equivalent (with the equivalences that made it so) or wrong."""
    if ours == theirs:
        return Verdict(name, peer, "identical", [], ours, theirs)
    used, start = [], (ours, theirs)
    for key, equivalence in EQUIVALENCES.items():
        if equivalence.failed_only and not failed:
            continue
        a, b = equivalence.apply(ours), equivalence.apply(theirs)
        if (a, b) != (ours, theirs):
            used.append(key)
            ours, theirs = a, b
    if ours != theirs:
        return Verdict(name, peer, "wrong", used, ours, theirs)
    needed = [key for key in used if not _equal_without(key, used, start)]
    return Verdict(name, peer, "equivalent", needed, ours, theirs)


def _equal_without(key: str, used: list[str], start: tuple[Any, Any]) -> bool:
    """Whether the two are equal with every used equivalence but ``key``: it was not needed."""
    ours, theirs = start
    for other in used:
        if other != key:
            ours, theirs = EQUIVALENCES[other].apply(ours), EQUIVALENCES[other].apply(theirs)
    return bool(ours == theirs)


# -- the summary -------------------------------------------------------------------------------

VERDICTS: list[Verdict] = []  # every comparison of this session, for the summary table


def summary(verdicts: list[Verdict]) -> str:
    """One line per notebook and the totals, as the terminal summary prints it."""
    lines = [f"{'notebook':<40} {'peer':<9} {'result':<11} equivalences"]
    for v in sorted(verdicts, key=lambda v: (v.peer, v.name)):
        lines.append(f"{v.name:<40} {v.peer:<9} {v.result:<11} {', '.join(v.used)}")
    counts = {r: sum(v.result == r for v in verdicts) for r in ("identical", "equivalent", "wrong")}
    lines.append(", ".join(f"{n} {r}" for r, n in counts.items()) + f" of {len(verdicts)}")
    used = sorted({key for v in verdicts for key in v.used})
    lines += ["", "why each equivalence is right:"] if used else []
    lines += [f"- {key}: {EQUIVALENCES[key].reason}" for key in used]
    return "\n".join(lines)
