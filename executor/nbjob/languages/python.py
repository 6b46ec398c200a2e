"""Python (ipykernel and any kernel whose language is ``python``): every capability.

The parameters cell is papermill's: ``# Parameters`` then one ``name = literal`` line each. An
integer too long for a decimal literal (Python refuses to parse one of more than 4300 digits,
``sys.set_int_max_str_digits``) is written in hexadecimal, which has no such limit: the same
exact value in any kernel.
The helper snippets define a ``_nbjob_*`` function, call it and delete it, so a notebook's
namespace keeps nothing of nbjob's once a step is done.
"""

from __future__ import annotations

import ast
import json
from typing import Any, ClassVar

from nbjob.languages._base import Language, check_value, finite

__all__ = ["Python"]

# Integers longer than this (in bits; fewer than 4300 decimal digits) are hexadecimal literals.
_DECIMAL_BITS = 14_000

# What GPUs does the kernel see?
_GPU_PROBE = r"""
def _nbjob_probe():
    import importlib, json, os, shutil, subprocess
    importlib.invalidate_caches()
    gpus, error = [], None
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            )
            for line in out.stdout.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) >= 3:
                    gpus.append({"index": parts[0], "name": parts[1], "memory": parts[2]})
            if out.returncode:
                error = (out.stderr or out.stdout).strip()[:300]
        except Exception as exc:  # reported, never fatal
            error = str(exc)[:300]
    env = {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
           if k in os.environ}
    return json.dumps({"gpus": gpus, "nvidia_smi": smi, "error": error, "env": env})
_nbjob_result = _nbjob_probe()
del _nbjob_probe
"""

# Which requirement lines does the kernel's environment not satisfy? ``packaging`` when the
# kernel has it; else a plain check of the name and an ``==`` pin.
_REQUIREMENTS_CHECK = r"""
def _nbjob_unmet(lines):
    import json, re
    from importlib.metadata import PackageNotFoundError, version
    try:
        from packaging.requirements import Requirement
    except ImportError:
        Requirement = None
    unmet = []
    for line in lines:
        try:
            if Requirement is None:
                name = re.split(r"[\s<>=!~;\[@]", line, maxsplit=1)[0]
                pin = re.search(r"==\s*([^\s,;]+)", line)
                if pin and version(name) != pin.group(1):
                    unmet.append(line)
                elif not pin:
                    version(name)
                continue
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate():
                continue
            if not req.specifier.contains(version(req.name), prereleases=True):
                unmet.append(line)
        except Exception:
            unmet.append(line)
    return json.dumps(unmet)
_nbjob_result = _nbjob_unmet(LINES)
del _nbjob_unmet
"""

# A remote kernel's folders: a temporary one without a Contents API, and the artifacts folder.
_SETUP = """
def _nbjob_setup(artifacts, make_temp):
    import json, os, tempfile
    if make_temp:
        top = tempfile.mkdtemp(prefix="nbjob-")
        os.makedirs(os.path.join(top, "bundle"))
        os.chdir(os.path.join(top, "bundle"))
    artifacts = os.path.abspath(artifacts)
    os.makedirs(artifacts, exist_ok=True)
    os.environ["NBJOB_ARTIFACTS_DIR"] = artifacts
    return json.dumps({"cwd": os.getcwd(), "artifacts": artifacts})
"""

_PUT = """
def _nbjob_put(path, data, append):
    import base64, os
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "ab" if append else "wb") as f:
        f.write(base64.b64decode(data))
"""

_LIST = """
def _nbjob_list(root):
    import json, os
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                found.append([os.path.relpath(path, root).replace(os.sep, "/"),
                              os.path.getsize(path)])
    return json.dumps(sorted(found))
_nbjob_result = _nbjob_list(ROOT)
del _nbjob_list
"""

_GET = """
def _nbjob_get(path, offset, size):
    import base64, json
    with open(path, "rb") as f:
        f.seek(offset)
        return json.dumps(base64.b64encode(f.read(size)).decode())
"""


class Python(Language):
    """Python kernels: the code nbjob has always sent, in one place."""

    name: ClassVar[str] = "python"
    default_kernel: ClassVar[str | None] = "python3"
    kernels: ClassVar[tuple[str, ...]] = ("pysparkkernel",)  # sparkmagic's PySpark

    def literal(self, value: Any) -> str:
        if not finite(value):
            return f"float({str(value)!r})"
        if isinstance(value, dict):
            items = (f"{self.literal(k)}: {self.literal(v)}" for k, v in value.items())
            return "{" + ", ".join(items) + "}"
        if isinstance(value, list | tuple):
            return "[" + ", ".join(self.literal(v) for v in value) + "]"
        check_value(value)  # ParameterError for any other type
        if isinstance(value, int) and value.bit_length() > _DECIMAL_BITS:
            return hex(value)  # int() of a power-of-two base has no digit limit
        return repr(value)

    def assign(self, name: str, source: str) -> str:
        return f"{name} = {source}"

    def comment(self, text: str) -> str:
        return f"# {text}"

    def declared_names(self, source: str) -> set[str] | None:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return None
        names: set[str] = set()
        for node in tree.body:
            targets = (
                node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            )
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        return names

    def set_env(self, name: str, value: str) -> str:
        return f"import os as _o; _o.environ[{name!r}] = {value!r}; del _o"

    def chdir(self, path: str) -> str:
        return f"import os as _o; _o.chdir({path!r}); del _o"

    def forget(self, name: str) -> str:
        return f"del {name}"

    def decode(self, text_plain: str) -> Any:
        """The JSON string's value: ``text/plain`` is its ``repr``."""
        return json.loads(ast.literal_eval(text_plain))

    def gpu_probe(self) -> str:
        return _GPU_PROBE

    def requirements_check(self, lines: list[str]) -> str:
        return _REQUIREMENTS_CHECK.replace("LINES", repr(lines))

    def remote_setup(self, artifacts: str, make_temp: bool) -> str:
        call = f"{self.RESULT} = _nbjob_setup({artifacts!r}, {make_temp})"
        return f"{_SETUP}\n{call}\ndel _nbjob_setup\n"

    def put_setup(self) -> str:
        return _PUT

    def put_chunk(self, path: str, data: str, append: bool) -> str:
        return f"_nbjob_put({path!r}, {data!r}, {append})"

    def list_files(self, root: str) -> str:
        return _LIST.replace("ROOT", repr(root))

    def get_chunk(self, path: str, offset: int, size: int) -> str:
        call = f"{self.RESULT} = _nbjob_get({path!r}, {offset}, {size})"
        return f"{_GET}\n{call}\ndel _nbjob_get\n"

    def remove_tree(self, path: str) -> str:
        return f"import shutil; shutil.rmtree({path!r}, True)"
