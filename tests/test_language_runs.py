"""``nbjob run`` of R and bash notebooks with parameters, in real kernels (IRkernel from Debian's
``r-cran-irkernel``, ``bash_kernel`` from PyPI; their kernelspecs written by the test,
``support.kernels``): the parameters reach the notebook's code with their types, what the
language cannot do is listed in run.json's ``kernel.unsupported`` (never fatal), and the written
notebook names the kernel that ran (``kernelspec`` and ``language_info``). Skipped, with the
reason, where a kernel is absent.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbjob import prepare
from support import answers, free_port, make_notebook, results, run_nbjob, serve, texts
from support.kernels import kernel_specs, missing

TOKEN = "nbjob-languages-token"
LACKS = ["gpu_probe", "requirements_check", "file_transfer"]
PARAMETERS = {
    "msg": 'it\'s "quoted"\\ ü',
    "n": 41,
    "rate": 0.5,
    "flag": True,
    "nothing": None,
    "items": [1, "two", 3.5],
}


@pytest.fixture
def kernels(tmp_path: Path) -> dict[str, str]:
    """The environment under which the bash and R kernels present here are installed."""
    return kernel_specs(tmp_path / "jupyter")


def _run(folder: Path, env: dict[str, str], *args: str | Path) -> tuple[Any, dict[str, Any]]:
    """Run the bundle ``folder`` (its ``nb.ipynb``) with ``PARAMETERS``; notebook, run.json."""
    params = folder.parent / "parameters.json"
    params.write_text(json.dumps(PARAMETERS))
    out = folder.parent / "out"
    result = run_nbjob(
        "run", folder, "--notebook", "nb.ipynb", "--output", out, "--parameters-file", params,
        *args, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return results(out)


def test_an_r_notebook_runs_with_parameters(tmp_path: Path, kernels: dict[str, str]) -> None:
    if reason := missing("ir"):
        pytest.skip(reason)
    bundle = tmp_path / "bundle"
    defaults = 'msg = "default"\nn = 0\nrate = 1\nflag = FALSE\nnothing = 1\nitems = list()'
    make_notebook(
        bundle / "nb.ipynb",
        [
            ("code", defaults, ["parameters"]),
            'cat(msg, "\\n")\ncat(class(n), n + 1, rate * 2, "\\n")',
            'cat(isTRUE(flag), is.null(nothing), "\\n")\n'
            'cat(length(items), items[[2]], items[[3]], "\\n")',
            'cat(Sys.getenv("NBJOB_ATTEMPT"), "\\n")',
        ],
        {"name": "ir", "display_name": "R", "language": "R"},
    )
    (bundle / "requirements.txt").write_text("nbjob-no-such-package==1.0\n")
    nb, record = _run(bundle, kernels)
    assert record["status"] == "succeeded"
    assert record["kernel"]["name"] == "ir" and record["kernel"]["language"] == "R"
    assert record["kernel"]["unsupported"] == LACKS
    assert record["unmet_requirements"] == []  # not checked: nothing claimed unmet
    assert record["gpus"] == [] and "'R'" in record["gpu_probe"]["error"]
    assert record["parameters"] == PARAMETERS
    injected = nb.cells[1]
    assert "injected-parameters" in injected.metadata.tags
    assert 'msg = "it\'s \\"quoted\\"\\\\ \\u00fc"' in injected.source
    assert texts(nb.cells[2]) == 'it\'s "quoted"\\ ü \nnumeric 42 1 \n'
    assert texts(nb.cells[3]) == "TRUE TRUE \n3 two 3.5 \n"
    assert texts(nb.cells[4]) == "1 \n"  # set_env works in R: the attempt number
    assert nb.metadata.kernelspec == {"name": "ir", "display_name": "R", "language": "R"}
    assert nb.metadata.language_info.name == "R"


def test_a_bash_notebook_runs_with_parameters_in_the_kernel_asked_for(
    tmp_path: Path, kernels: dict[str, str]
) -> None:
    """The notebook names no kernel; ``--kernel bash`` runs it, and the notebook says so."""
    if reason := missing("bash"):
        pytest.skip(reason)
    make_notebook(
        tmp_path / "bundle" / "nb.ipynb",
        [
            ("code", "msg=default\nn=0\nitems=()", ["parameters"]),
            'printf "%s|%s|%s|%s|[%s]\\n" "$msg" "$((n + 1))" "$rate" "$flag" "$nothing"',
            'echo "${#items[@]} ${items[1]} ${items[2]}"; echo "attempt $NBJOB_ATTEMPT"',
        ],
        kernelspec=None,
    )
    nb, record = _run(tmp_path / "bundle", kernels, "--kernel", "bash")
    assert record["status"] == "succeeded"
    assert record["kernel"]["name"] == "bash" and record["kernel"]["language"] == "bash"
    assert record["kernel"]["unsupported"] == LACKS
    assert texts(nb.cells[2]) == 'it\'s "quoted"\\ ü|42|0.5|true|[]\n'
    assert texts(nb.cells[3]) == "3 two 3.5\nattempt 1\n"
    assert nb.metadata.kernelspec == {"name": "bash", "display_name": "Bash", "language": "bash"}
    assert nb.metadata.language_info.name == "bash"


@pytest.fixture
def r_server(tmp_path: Path, kernels: dict[str, str]) -> Iterator[tuple[str, Path]]:
    """A Jupyter Server on loopback with IRkernel installed: its URL and root folder."""
    if reason := missing("ir"):
        pytest.skip(reason)
    root, port = tmp_path / "server-root", free_port()
    root.mkdir()
    url = f"http://127.0.0.1:{port}"
    argv = [
        str(Path(sys.executable).with_name("jupyter-server")),
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--ServerApp.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
        "--allow-root",
        "--no-browser",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBJOB_")} | kernels
    ready = functools.partial(answers, f"{url}/api/kernelspecs?token={TOKEN}")
    log = tmp_path / "server.log"
    with serve("jupyter-server", argv, log, ready=ready, env=env, cwd=root, group=True, grace=15):
        yield url, root


def test_an_r_notebook_in_a_bundle_subfolder_runs_there_on_a_jupyter_server(
    tmp_path: Path, r_server: tuple[str, Path]
) -> None:
    """R changes folder (``setwd``): the notebook runs in its subfolder of the uploaded bundle;
    the in-kernel file transfer it lacks is not needed with the server's Contents API."""
    url, root = r_server
    bundle = tmp_path / "bundle"
    make_notebook(
        bundle / "sub" / "nb.ipynb",
        [("code", 'msg = ""', ["parameters"]), 'cat(msg, readLines("data.txt"), getwd(), "\\n")'],
        {"name": "ir", "display_name": "R", "language": "R"},
    )
    (bundle / "sub" / "data.txt").write_text("from the bundle\n")
    out = tmp_path / "out"
    env = {"NBJOB_GATEWAY_URL": url, "JUPYTER_GATEWAY_AUTH_TOKEN": TOKEN}
    result = run_nbjob(
        "run", bundle, "--notebook", "sub/nb.ipynb", "--output", out, "-p", "msg", "hi", env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    nb, record = results(out)
    assert record["kernel"]["kind"] == "gateway" and record["kernel"]["files"] == "contents_api"
    assert record["kernel"]["unsupported"] == LACKS
    folder = root / "nbjob-runs" / record["run_id"] / "bundle" / "sub"
    assert texts(nb.cells[2]) == f"hi from the bundle {folder} \n"


def test_the_kernel_that_runs_is_written_into_the_kernelspec() -> None:
    """In process: the kernelspec names the kernel chosen (kept when it already does), and the
    kernel's language is the one its parameters are written in."""
    installed = {
        "ir": {"display_name": "R", "language": "R"},
        "python3": {"display_name": "Python 3 (ipykernel)", "language": "python"},
    }
    unnamed = nbformat.v4.new_notebook()
    assert prepare.use_kernel(unnamed, "ir", installed) == "R"
    assert unnamed.metadata.kernelspec == {"name": "ir", "display_name": "R", "language": "R"}
    other = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "r", "display_name": "r"}})
    assert prepare.use_kernel(other, "ir", installed) == "R"
    assert other.metadata.kernelspec.name == "ir"
    own = {"name": "python3", "display_name": "Python 3", "language": "python"}
    same = nbformat.v4.new_notebook(metadata={"kernelspec": dict(own)})
    assert prepare.use_kernel(same, "python3", installed) == "python"
    assert same.metadata.kernelspec == own  # the notebook's own words kept
    # sparkmagic's kernelspecs name no language; papermill knows them by name, so does nbjob
    spark = nbformat.v4.new_notebook(metadata={"language_info": {"name": "sparkR"}})
    assert prepare.use_kernel(spark, "sparkrkernel", {"sparkrkernel": {}}) == "r"
    assert spark.metadata.kernelspec.language == "r"
