"""Kernel languages (``nbjob.languages``): one contract, run against every registered language.

Each language's code runs in a real kernel of that language (Python: ipykernel): the parameters
cell's values read back, an environment variable set, a folder changed, the GPU probe (with an
``nvidia-smi`` on the kernel's PATH), the requirements check and the in-kernel file transfer.
A language without an installed kernel is skipped; one without a way to read values back here
(``READERS``) fails, so a new language cannot go untested. A kernel whose language nbjob does
not know (a small real wrapper kernel, ``echo``) runs its notebook, with what it lacks in
run.json; a language from another package arrives through the ``nbjob.languages`` entry point.
"""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbjob import languages
from nbjob.config import Settings
from nbjob.errors import ParameterError
from nbjob.kernel import KernelSession, open_session, transfer
from nbjob.kernel.specs import installed_kernels
from support import make_notebook, read_json, run_nbjob
from support.kernels import bash_holds, kernel_specs, missing, r_holds


@dataclass(frozen=True)
class Reader:
    """Expressions, in the language, that read a kernel's state back as a JSON string: user
    expressions, or (``printed``) code whose output is the JSON, for kernels that answer no
    user expressions (IRkernel, bash_kernel). ``holds`` is what the language holds of a
    parameter value, as that JSON reads back (bash: strings)."""

    json_of: Callable[[str], str]  # the JSON of a variable
    env_of: Callable[[str], str]  # the JSON of an environment variable
    cwd: str  # the JSON of the working folder
    names: str  # the JSON of the names the notebook's code can see
    printed: bool = False
    holds: Callable[[Any], Any] = lambda value: value


_R_JSON = 'cat(jsonlite::toJSON({}, auto_unbox = TRUE, null = "null", na = "string", digits = NA))'
_PY_JSON = f"{sys.executable} -c 'import json, sys; a = sys.stdin.buffer.read().decode(); "
_BASH_ITEMS = 'for v in "${{{0}[@]}}"; do printf "%s\\0" "$v"; done'
_BASH_PAIRS = 'for k in "${{!{0}[@]}}"; do printf "%s\\0%s\\0" "$k" "${{{0}[$k]}}"; done'


def _bash_json(name: str) -> str:
    """bash that prints the JSON of the variable ``name``: a string, array or mapping."""
    scalar = f'printf "%s" "${name}" | {_PY_JSON}print(json.dumps(a))\''
    items = f"{_BASH_ITEMS.format(name)} | {_PY_JSON}print(json.dumps(a.split(chr(0))[:-1]))'"
    pairs = (
        f"{_BASH_PAIRS.format(name)} | {_PY_JSON}"
        "p = a.split(chr(0))[:-1]; print(json.dumps(dict(zip(p[::2], p[1::2]))))'"
    )
    return (
        f'case "$(declare -p {name})" in "declare -A"*) {pairs};; '
        f'"declare -a"*) {items};; *) {scalar};; esac'
    )


READERS = {
    "python": Reader(
        json_of=lambda name: f"__import__('json').dumps({name})",
        env_of=lambda name: f"__import__('json').dumps(__import__('os').environ.get({name!r}))",
        cwd="__import__('json').dumps(__import__('os').getcwd())",
        names="__import__('json').dumps(sorted(globals()))",
    ),
    "r": Reader(
        json_of=lambda name: _R_JSON.format(name),
        env_of=lambda name: _R_JSON.format(f'Sys.getenv("{name}")'),
        cwd=_R_JSON.format("getwd()"),
        names=_R_JSON.format("ls(all.names = TRUE)"),
        printed=True,
        holds=r_holds,
    ),
    "bash": Reader(
        json_of=_bash_json,
        env_of=_bash_json,
        cwd=_bash_json("PWD"),
        names="compgen -v | " + _PY_JSON + "print(json.dumps(a.split()))'",
        printed=True,
        holds=bash_holds,
    ),
}
# Languages whose kernels are not packaged for this image: their cells are checked as text
# (tests/test_translators.py), each nbjob step they lack is recorded as unsupported.
NO_KERNEL_HERE = {"julia", "scala", "c#", "f#", "powershell"}
UNSUPPORTED = {
    "python": [],
    "r": ["gpu_probe", "requirements_check", "file_transfer"],
    "bash": ["gpu_probe", "requirements_check", "file_transfer"],
}

VALUES: dict[str, Any] = {
    "none": None,
    "text": 'it\'s "quoted"\n\tü, 日本',
    "empty": "",
    "yes": True,
    "no": False,
    "count": 42,
    "big": 2**70,
    "negative": -3,
    "rate": 0.1,
    "tiny": 1e-300,
    "nan": float("nan"),
    "inf": float("inf"),
    "minus_inf": float("-inf"),
    "items": [1, "two", None, [3.5]],
    "nested": {"a": {"b": [True, {"c": None}]}, "k": "v"},
    "nothing": [],
    "blank": {},
}


@pytest.fixture(scope="module", params=languages.names())
def language(request: pytest.FixtureRequest) -> languages.Language:
    name: str = request.param
    if name not in READERS and name not in NO_KERNEL_HERE:
        pytest.fail(f"add a Reader for {name!r} to READERS so the contract runs for it")
    return languages.get(name)


@pytest.fixture(scope="module", autouse=True)
def other_kernels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """bash_kernel's and IRkernel's kernelspecs, where they are present, installed here."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in kernel_specs(tmp_path_factory.mktemp("jupyter")).items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def gpu_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with an ``nvidia-smi`` that answers as one H200 would."""
    folder = tmp_path_factory.mktemp("bin")
    smi = folder / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, NVIDIA H200, 143771 MiB, GPU-5f3a9c'\n")
    smi.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def session(
    language: languages.Language, gpu_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KernelSession]:
    """A started local kernel of ``language``, its GPU faked by ``gpu_bin``."""
    kernel = language.default_kernel
    if language.name in NO_KERNEL_HERE:
        pytest.skip(f"no {language.name} kernel is packaged for this image (text tests only)")
    if not kernel or kernel not in installed_kernels():
        reason = missing(kernel) if kernel in ("bash", "ir") else None
        pytest.skip(reason or f"no {language.name} kernel ({kernel}) is installed here")
    workdir = tmp_path_factory.mktemp("kernel")
    env = {"PATH": f"{gpu_bin}{os.pathsep}{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": "0"}
    settings = Settings(source="-", output="-", run_id="languages", kernel_start_timeout=60)
    started = open_session(settings, kernel, workdir, workdir=workdir, env=env, environ={})
    started.start()
    yield started
    started.shutdown(grace=3.0)


def read(session: KernelSession, expression: str) -> Any:
    """The JSON value of ``expression``, evaluated silently in the kernel (or, for a
    ``printed`` reader, run and its output read)."""
    if READERS[session.lang.name].printed:
        return json.loads(printed(session, expression))
    reply = session.run_silent("", {"v": expression})
    return session.lang.decode(reply["user_expressions"]["v"]["data"]["text/plain"])


def printed(session: KernelSession, code: str, timeout: float = 30) -> str:
    """What ``code`` prints on stdout (run not silently: kernels print nothing otherwise)."""
    msg_id = session.execute(code, silent=False, store_history=False)
    out: list[str] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = session.next_message(0.25)
        if got is None or got[1].get("parent_header", {}).get("msg_id") != msg_id:
            continue
        msg = got[1]
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out)
    raise TimeoutError(f"no answer to {code!r}")


def same(got: Any, want: Any) -> bool:
    """Equal, with NaN equal to NaN and tuples as lists."""
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(same(got[k], v) for k, v in want.items())
        )
    if isinstance(want, list | tuple):
        return isinstance(got, list) and len(got) == len(want) and all(map(same, got, want))
    return type(got) is type(want) and got == want


# -- the contract, against a real kernel of each language --------------------------------------


def test_the_language_is_what_the_kernel_says(session: KernelSession) -> None:
    assert session.lang is languages.get(session.language)
    assert session.lang.unsupported() == UNSUPPORTED[session.lang.name]


def test_parameters_of_every_type_read_back(
    session: KernelSession, language: languages.Language
) -> None:
    source = language.parameters_cell(VALUES)
    reply = session.run_silent(source, {})
    assert reply["status"] == "ok", reply
    reader = READERS[language.name]
    for name, value in VALUES.items():
        got, want = read(session, reader.json_of(name)), reader.holds(value)
        assert same(got, want), (name, got, want)
    assert language.declared_names(source) == set(VALUES)


def test_unsupported_parameter_types_are_refused(language: languages.Language) -> None:
    with pytest.raises(ParameterError, match="unsupported type"):
        language.parameters_cell({"when": {1, 2}})


def needs(language: languages.Language, capability: str) -> None:
    if not language.supports(capability):
        pytest.skip(f"{language.name} has no {capability} (run.json records it unsupported)")


def test_environment_variable_is_set(session: KernelSession, language: languages.Language) -> None:
    needs(language, "set_env")
    value = 'it\'s "odd" ü $HOME'
    assert session.set_env("NBJOB_LANGUAGE_TEST", value) is True
    assert read(session, READERS[language.name].env_of("NBJOB_LANGUAGE_TEST")) == value


def test_folder_changes(
    session: KernelSession, language: languages.Language, tmp_path: Path
) -> None:
    needs(language, "chdir")
    folder = tmp_path / "it's a folder"
    folder.mkdir()
    session.chdir(folder)
    assert read(session, READERS[language.name].cwd) == str(folder)
    assert session.cwd == folder


def test_gpu_probe_sees_the_kernels_gpus(session: KernelSession) -> None:
    needs(session.lang, "gpu_probe")
    probe = session.probe_gpus()
    assert probe["gpus"] == [{"index": "0", "name": "NVIDIA H200", "memory": "143771 MiB"}]
    assert probe["nvidia_smi"].endswith("/nvidia-smi") and probe["error"] is None
    assert probe["env"] == {"CUDA_VISIBLE_DEVICES": "0"}


def test_requirements_check_names_what_is_missing(session: KernelSession) -> None:
    needs(session.lang, "requirements_check")
    lines = ["ipykernel>=1", "nbjob-no-such-package==1.0"]
    assert session.check_requirements(lines) == ["nbjob-no-such-package==1.0"]


def test_files_travel_through_the_kernel(
    session: KernelSession, language: languages.Language, tmp_path: Path
) -> None:
    needs(language, "file_transfer")
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    blob = os.urandom(transfer.CHUNK + 17)  # more than one chunk each way
    (source / "sub" / "blob.bin").write_bytes(blob)
    (source / "it's.txt").write_text("quote\n")
    remote = tmp_path / "remote"  # the "kernel's machine" is this one
    transfer.kernel_upload(session, str(remote), list(transfer.local_files(source)))
    assert (remote / "sub" / "blob.bin").read_bytes() == blob
    back = tmp_path / "back"
    names = transfer.kernel_download(session, str(remote), back, deadline=float("inf"))
    assert names == ["it's.txt", "sub/blob.bin"]
    assert (back / "sub" / "blob.bin").read_bytes() == blob
    left = [n for n in read(session, READERS[language.name].names) if n.startswith("_nbjob")]
    assert left == []  # the helpers leave nothing in the notebook's namespace


# -- the registry ------------------------------------------------------------------------------


def test_the_public_surface_is_exact() -> None:
    assert sorted(languages.__all__) == [
        "CAPABILITIES",
        "DEFAULT_LANGUAGE",
        "ENTRY_POINT_GROUP",
        "Language",
        "UnsupportedCapability",
        "check_value",
        "forget_found",
        "get",
        "names",
        "supporting",
    ]
    assert all(getattr(languages, name) is not None for name in languages.__all__)
    assert languages.ENTRY_POINT_GROUP == "nbjob.languages"


def test_registry_finds_languages_by_kernel_language_name() -> None:
    assert "python" in languages.names() and languages.DEFAULT_LANGUAGE == "python"
    assert languages.get("Python") is languages.get("python")
    assert languages.get("python").default_kernel == "python3"
    assert languages.supporting("gpu_probe") == ["python"]


def test_an_unknown_language_lacks_every_capability_and_says_which() -> None:
    cobol = languages.get("cobol")
    assert cobol.name == "cobol" and cobol.default_kernel is None
    assert cobol.unsupported() == list(languages.CAPABILITIES)
    with pytest.raises(languages.UnsupportedCapability, match="cobol"):
        cobol.set_env("A", "1")


def _plugin(root: Path, module: str, code: str, name: str = "echo") -> None:
    """An installed distribution (a dist-info folder on sys.path) with one language."""
    (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[nbjob.languages]\n{name} = {module}:Echo\n")


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    languages.forget_found()
    yield tmp_path
    languages.forget_found()


def test_a_language_from_another_package_is_found_by_entry_point(plugins: Path) -> None:
    _plugin(
        plugins,
        "nbjob_echo_language",
        """
        from nbjob.languages import Language

        class Echo(Language):
            name = "echo"
            default_kernel = "echo"

            def set_env(self, name, value):
                return f"export {name}={value}"
        """,
    )
    echo = languages.get("echo")
    assert type(echo).__module__ == "nbjob_echo_language" and "echo" in languages.names()
    assert echo.supports("set_env") and echo.set_env("A", "1") == "export A=1"
    assert "set_env" not in echo.unsupported() and "parameters" in echo.unsupported()
    assert languages.get("python").__class__.__module__ == "nbjob.languages.python"


def test_a_broken_language_plugin_is_an_unknown_language(plugins: Path) -> None:
    _plugin(plugins, "nbjob_broken_language", "raise RuntimeError('broken on import')\n")
    broken = languages.get("echo")
    assert broken.unsupported() == list(languages.CAPABILITIES)


# -- a kernel whose language nbjob does not know -----------------------------------------------

ECHO_KERNEL = '''
"""A real kernel of the language "echo": each cell's code comes back as its output."""
from ipykernel.kernelapp import IPKernelApp
from ipykernel.kernelbase import Kernel


class EchoKernel(Kernel):
    implementation = "echo"
    implementation_version = "1.0"
    language_info = {"name": "echo", "mimetype": "text/plain", "file_extension": ".txt"}
    banner = "echo"

    def do_execute(self, code, silent, store_history=True, user_expressions=None,
                   allow_stdin=False, **kwargs):
        if not silent:
            self.send_response(self.iopub_socket, "stream", {"name": "stdout", "text": code})
        return {"status": "ok", "execution_count": self.execution_count, "payload": [],
                "user_expressions": {}}


if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=EchoKernel)
'''


@pytest.fixture
def echo_kernel(tmp_path: Path) -> dict[str, str]:
    """The environment that makes the ``echo`` kernel installed (for nbjob's subprocess)."""
    code = tmp_path / "echo_code"
    code.mkdir()
    (code / "echo_kernel.py").write_text(ECHO_KERNEL)
    spec = tmp_path / "jupyter" / "kernels" / "echo"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "echo_kernel", "-f", "{connection_file}"]
    kernel_json = {"argv": argv, "display_name": "Echo", "language": "echo"}
    kernel_json["env"] = {"PYTHONPATH": str(code)}  # type: ignore[assignment]
    (spec / "kernel.json").write_text(json.dumps(kernel_json))
    return {"JUPYTER_PATH": str(tmp_path / "jupyter")}


def test_a_kernel_of_an_unknown_language_runs_with_what_it_lacks_recorded(
    tmp_path: Path, echo_kernel: dict[str, str]
) -> None:
    folder = tmp_path / "bundle"
    make_notebook(
        folder / "sub" / "nb.ipynb",
        ["hello from echo"],
        {"name": "echo", "language": "echo", "display_name": "Echo"},
    )
    (folder / "requirements.txt").write_text("nbjob-no-such-package==1.0\n")
    out = tmp_path / "out"
    result = run_nbjob(
        "run", folder, "--notebook", "sub/nb.ipynb", "--output", out, env=echo_kernel
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = read_json(out / "run.json")
    assert record["status"] == "succeeded"
    assert record["kernel"]["name"] == "echo" and record["kernel"]["language"] == "echo"
    assert record["kernel"]["unsupported"] == list(languages.CAPABILITIES)
    assert record["unmet_requirements"] == []  # not checked: nothing claimed unmet
    assert record["gpus"] == [] and "echo" in record["gpu_probe"]["error"]
    executed = nbformat.read(out / "nb.ipynb", as_version=4)
    assert executed.cells[0].outputs[0].text == "hello from echo"


def test_parameters_for_an_unknown_language_are_exit_3(
    tmp_path: Path, echo_kernel: dict[str, str]
) -> None:
    nb = make_notebook(
        tmp_path / "nb.ipynb", ["x"], {"name": "echo", "language": "echo", "display_name": "E"}
    )
    result = run_nbjob("run", nb, "--output", tmp_path / "out", "-p", "x", "1", env=echo_kernel)
    assert result.returncode == 3
    reason = json.loads(result.stderr.splitlines()[-1])["reason"]
    assert reason.startswith("parameters need a kernel of a language nbjob writes them in (")
    assert "python, r, scala)" in reason and reason.endswith("this notebook's is 'echo'")
