"""Before the first cell: fetch and unpack the source, read the notebook, merge the parameters.

Runs while the kernel starts (job.py starts it first). Blocking steps run through
``stop.wait_for``, so a stop request ends them within a fraction of a second.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nbjob import banners, languages, params, stop
from nbjob import bundle as bundles
from nbjob.config import Settings
from nbjob.errors import GPUNotVisibleError, NbjobError, NotebookError
from nbjob.kernel import KernelSession
from nbjob.start import read_only_folder, source_is_local
from nbjob.storage import Storage


def open_source(
    s: Settings, storage: Storage, workdir: Path, token: stop.StopToken, log: Any
) -> bundles.Bundle:
    """Fetch ``s.source`` and open it as a bundle (unpacked under ``workdir/bundle``)."""
    started = time.monotonic()
    download = workdir / "download"
    download.mkdir(exist_ok=True)
    fetched = stop.wait_for(token, lambda: storage.fetch(s.source, download), "the fetch")
    if not source_is_local(s.source):
        log.info(
            "fetched", bytes=fetched.stat().st_size, seconds=round(time.monotonic() - started, 3)
        )
        if fetched.suffix == ".ipynb" and bundles.archive_kind(fetched) is None:
            fetched = bundles.place_notebook(fetched, workdir / "bundle")
    elif read_only_folder(s.source):
        log.info("read_only_source", copied_to=str(workdir / "bundle"))
        source = fetched

        def copy() -> Path:
            return Path(shutil.copytree(source, workdir / "bundle", dirs_exist_ok=True))

        fetched = stop.wait_for(token, copy, "the copy of the source")

    def unpack() -> bundles.Bundle:
        return bundles.open_bundle(
            fetched, workdir / "bundle", s.notebook, s.max_bundle_files, s.max_bundle_bytes
        )

    bundle = stop.wait_for(token, unpack, "the unpack")
    log.info("bundle", root=str(bundle.root), notebook=bundle.relative_notebook)
    return bundle


def read_notebook(path: Path, log: Any) -> Any:
    """The notebook at ``path`` as nbformat 4.5, without stale error banners; NotebookError
    when unreadable.

    An nbformat 3 notebook is converted to 4 first, then checked like any other. Every
    notebook is brought to 4.5 with an id on every cell (``current``), as papermill and
    JupyterLab do: the cells nbjob adds (parameters, error banners) carry ids, which a notebook
    older than 4.5 may not have, so the executed notebook is always nbformat-valid. Metadata
    the schema does not allow is dropped.
    """
    from nbjob.nodes import Node

    try:
        with path.open("rb") as f:
            raw = json.load(f, object_hook=Node)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise NotebookError(
            f"{path.name} is not a readable notebook: {str(exc).splitlines()[0][:300]}"
        ) from None
    raw = _from_v3(raw, path.name)
    _check_shape(raw, path.name)
    nb = _as_v4(raw, path.name)
    upgraded = current(nb)
    if upgraded is not None:
        log.info("notebook_upgraded", **upgraded)
    nb = _valid(nb, log)
    banners.remove(nb)
    return nb


def _as_v4(raw: Any, name: str) -> Any:
    """The notebook node of ``raw`` (nbformat 4, parsed into notebook nodes: used as it is, no
    second parse or copy, as nbformat's reader would make; a 20,000-cell notebook reads in half
    the time and memory); multi-line sources joined, transient metadata dropped, a missing
    metadata mapping added. Any other version goes through nbformat's reader."""
    import nbformat
    from nbformat.v4.nbjson import rejoin_lines, strip_transient

    from nbjob.nodes import Node

    try:
        if raw.get("nbformat") == 4:
            nb: Any = raw if type(raw) is Node else nbformat.from_dict(raw)
            for part in (nb, *nb.cells):  # a hand-written notebook may leave it out
                part.setdefault("metadata", nbformat.NotebookNode())
            return strip_transient(rejoin_lines(nb))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicate ids: repaired by current(), and logged
            return nbformat.reads(json.dumps(raw), as_version=4)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise NotebookError(f"{name} is not a valid notebook: {type(exc).__name__}") from None


def _valid(nb: Any, log: Any) -> Any:
    """``nb``, or when the schema refuses it, a copy without the metadata the schema does not
    allow (``nbformat.validator.normalize``); what is still wrong is logged, and run anyway."""
    import nbformat

    try:
        nbformat.validate(nb)
        return nb
    except nbformat.ValidationError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stripped, normalized = nbformat.validator.normalize(nb, strip_invalid_metadata=True)
    nb = nbformat.from_dict(normalized)
    dropped = _drop_unknown_keys(nb)
    if stripped or dropped:
        log.info("notebook_repaired", metadata_fixes=stripped, dropped_keys=dropped)
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        log.warning("notebook_invalid", reason=str(exc).splitlines()[0][:300])
    return nb


def _from_v3(raw: Any, name: str) -> Any:
    """An nbformat 3 notebook (worksheets of cells) as nbformat 4; anything else as it is."""
    import nbformat

    if not isinstance(raw, dict) or raw.get("nbformat") != 3 or "cells" in raw:
        return raw
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its validity is checked after the upgrade
            return json.loads(nbformat.writes(nbformat.reads(json.dumps(raw), as_version=4)))
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise NotebookError(
            f"{name} is an nbformat 3 notebook that cannot be upgraded: {type(exc).__name__}"
        ) from None


_TEXT_CELL = frozenset({"id", "cell_type", "metadata", "source", "attachments"})
_CELL_KEYS = {
    "code": frozenset({"id", "cell_type", "metadata", "source", "outputs", "execution_count"}),
    "markdown": _TEXT_CELL,
    "raw": _TEXT_CELL,
}
_NOTEBOOK_KEYS = frozenset({"metadata", "nbformat", "nbformat_minor", "cells"})


def _drop_unknown_keys(nb: Any) -> list[str]:
    """Remove the keys the schema does not allow in the notebook and its cells (a markdown
    cell's ``outputs``, a tool's own key); their names."""
    dropped = [key for key in nb if key not in _NOTEBOOK_KEYS]
    for key in dropped:
        del nb[key]
    for cell in nb.cells:
        allowed = _CELL_KEYS.get(cell.get("cell_type"), frozenset(cell))
        for key in [k for k in cell if k not in allowed]:
            del cell[key]
            dropped.append(f"cells[].{key}")
    return sorted(set(dropped))


_CELL_ID = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")


def current(nb: Any) -> dict[str, Any] | None:
    """Bring ``nb`` to nbformat 4.5 in place, every cell with a unique, valid id (the upgrade
    papermill makes on reading); what changed, or None when nothing did."""
    import nbformat

    minor = nb.get("nbformat_minor")
    minor = minor if isinstance(minor, int) else 0
    if minor < 5:
        nb["nbformat_minor"] = minor
        nbformat.v4.upgrade(nb, from_version=4, from_minor=minor)  # ids for every cell
        nb.metadata.pop("orig_nbformat_minor", None)  # nbformat's mark; papermill writes none
    seen: set[str] = set()
    repaired = 0
    for cell in nb.cells:
        cell_id = cell.get("id")
        if not isinstance(cell_id, str) or not _CELL_ID.match(cell_id) or cell_id in seen:
            cell["id"] = nbformat.v4.nbbase.random_cell_id()
            repaired += 1
        seen.add(cell["id"])
    if minor >= 5 and not repaired:
        return None
    return {"from_minor": minor, "ids_repaired": repaired}


def _check_shape(raw: Any, name: str) -> None:
    """What nbjob relies on: a mapping with a list of cells, each with a type and text source."""
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        raise NotebookError(f"{name} is not a notebook (no list of cells)")
    for index, cell in enumerate(raw["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise NotebookError(f"{name}: cell {index} is not a code, markdown or raw cell")
        source = cell.get("source", "")
        text = isinstance(source, str) or (
            isinstance(source, list) and all(isinstance(line, str) for line in source)
        )
        if not text:
            raise NotebookError(f"{name}: cell {index}'s source is not text")
        if not isinstance(cell.get("metadata", {}), dict):
            raise NotebookError(f"{name}: cell {index}'s metadata is not a mapping")


def use_kernel(nb: Any, name: str, installed: Mapping[str, Mapping[str, Any]]) -> str:
    """Write the kernel that runs the notebook into its ``kernelspec`` (name, display name,
    language), as JupyterLab does on a change of kernel: papermill leaves the notebook's own,
    naming a kernel that did not run (papermill#856). A kernelspec that names this kernel
    already is kept as the notebook has it. Returns the kernel's language (the parameters
    cell's): its kernelspec's, else the one its name is known to be of (papermill's map:
    ``sparkrkernel`` is R), else the notebook's."""
    import nbformat

    old = nb.metadata.get("kernelspec") or {}
    spec = installed.get(name) or {}
    info = nb.metadata.get("language_info") or {}
    language = str(
        spec.get("language") or _language_of(name) or old.get("language") or info.get("name") or ""
    )
    if old.get("name") != name:
        nb.metadata["kernelspec"] = nbformat.from_dict(
            {
                "name": name,
                "display_name": str(spec.get("display_name") or name),
                "language": language,
            }
        )
    return language or languages.DEFAULT_LANGUAGE


def _language_of(kernel: str) -> str | None:
    """The language a kernel of this name is known to be (sparkmagic's name none)."""
    return next((n for n in languages.names() if kernel in languages.get(n).kernels), None)


def inject_parameters(
    nb: Any, bundle: bundles.Bundle, s: Settings, log: Any, language: str | None = None
) -> dict[str, Any]:
    """Merge and check every parameter source (``params.merge``), inject them in ``language``
    (the kernel's; else the notebook's); the merged dict as run.json holds it
    (``params.recordable``)."""
    merged = params.merge(s.parameters, bundle.parameters)
    if not language:
        spec = nb.metadata.get("kernelspec") or {}
        language = spec.get("language") or languages.DEFAULT_LANGUAGE
    if unknown := params.inject(nb, merged, language):
        log.warning("unknown_parameters", names=unknown)
    if shadowed := params.shadowed_builtins(merged, language):
        log.warning("parameter_shadows_builtin", names=shadowed)
    return params.recordable(merged)


def kernel_at(
    kernel: KernelSession,
    name: str,
    cwd: Path,
    root: Path,
    replace: Callable[[str, Path], KernelSession],
    log: Any,
) -> KernelSession:
    """The started kernel, or ``replace(name, cwd)`` started when the notebook needs another
    kernel or folder; the bundle's files reach the kernel's folder first (a remote kernel gets
    a copy)."""
    try:
        kernel.wait_started()
        if kernel.name == name and (kernel.cwd == cwd or kernel.lang.supports("chdir")):
            return _in_folder(kernel, cwd, root, log)
    except NbjobError:
        if kernel.name == name:
            raise
    kernel.shutdown(grace=0)
    kernel = replace(name, cwd)
    kernel.start()
    return _in_folder(kernel, cwd, root, log)


def _in_folder(kernel: KernelSession, cwd: Path, root: Path, log: Any) -> KernelSession:
    started = time.monotonic()
    if sent := kernel.upload_files(root):
        log.info("files_uploaded", files=sent, seconds=round(time.monotonic() - started, 3))
    if kernel.cwd != cwd:  # notebook in a subfolder: the kernel changes folder (kernel_at)
        kernel.chdir(cwd)
    return kernel


def check_environment(
    kernel: Any, root: Path, require_gpu: bool, token: stop.StopToken, record: Any, log: Any
) -> None:
    """Inside the kernel: the bundle's requirements (reported, never installed) and the GPUs it
    sees; ``GPUNotVisibleError`` (exit 7) when a GPU is required and none is visible."""
    lines = bundles.requirement_lines(root)
    unmet = stop.wait_for(token, lambda: kernel.check_requirements(lines), "the requirements check")
    record.requirements_checked(unmet)
    if unmet:
        log.warning(
            "requirements_unmet",
            requirements=unmet,
            hint="nbjob installs nothing at job start; use an image with them",
        )
    probe = stop.wait_for(token, kernel.probe_gpus, "the GPU check")
    record.gpus_probed(probe)
    log.info(
        "gpus", gpus=probe.get("gpus", []), visible=probe.get("env", {}), error=probe.get("error")
    )
    if require_gpu and not probe.get("gpus"):
        raise GPUNotVisibleError(
            "a GPU is required (--require-gpu) but the kernel sees none"
            + (f": {probe['error']}" if probe.get("error") else "")
        )
