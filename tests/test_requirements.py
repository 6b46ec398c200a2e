"""--install-requirements: the bundle's requirements.txt in an overlay over the image's packages.

A tiny pure-Python package is built into a wheel here; runs install it offline from the
bundle's wheelhouse (with uv and with pip), from a real local index (pypiserver on loopback),
and from the environment cache on a second run. The kernel must see the new package and still
the image's (nbformat). Times are printed, never asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nbjob import environment
from support import (
    S3Server,
    answers,
    free_port,
    log_events,
    notebook_json,
    results,
    run_nbjob,
    serve,
    texts,
)

PACKAGE = "nbjob_tinypkg"
CELL = (
    "import sys, nbformat, nbjob_tinypkg\n"
    "print('value', nbjob_tinypkg.VALUE, 'prefix', sys.prefix, 'nbformat', nbformat.__version__)"
)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding nbjob_tinypkg-1.2.3's wheel, built with ``pip wheel``."""
    project = tmp_path_factory.mktemp("tinypkg")
    (project / PACKAGE).mkdir()
    (project / PACKAGE / "__init__.py").write_text("VALUE = 42\n")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{PACKAGE}"\nversion = "1.2.3"\n'
        f'[tool.setuptools]\npackages = ["{PACKAGE}"]\n'
    )
    out = tmp_path_factory.mktemp("wheels")
    argv = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*argv, "-w", str(out), str(project)], check=True, timeout=120)
    assert [p.name for p in out.glob("*.whl")], "no wheel built"
    return out


def bundle(tmp_path: Path, requirements: str, wheels: Path | None = None) -> Path:
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "nb.ipynb").write_bytes(notebook_json([CELL]))
    (folder / "requirements.txt").write_text(requirements)
    if wheels is not None:
        shutil.copytree(wheels, folder / "wheelhouse")
    return folder


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A temporary folder of the test's own (the overlays live under it), uv on PATH, and
    ``extra``."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return {"TMPDIR": str(tmp), "PATH": with_uv(), **extra}


def with_uv() -> str:
    """PATH with this venv's folder first, where the test extra installs ``uv`` (nbjob uses uv
    when it is on PATH; `make test` runs without an activated venv)."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def without_uv() -> str:
    """PATH without the folders holding ``uv`` (nbjob then installs with pip)."""
    folders = with_uv().split(os.pathsep)
    return os.pathsep.join(f for f in folders if not (Path(f) / "uv").exists())


def check_installed(out: Path) -> dict[str, Any]:
    nb, run = results(out)
    assert run["status"] == "succeeded", run["reason"]
    env = run["environment"]
    names = [i["name"].replace("-", "_").lower() for i in env["installed"]]
    assert names == [PACKAGE], env
    assert env["installed"][0]["version"] == "1.2.3"
    text = texts(nb.cells[0])
    assert "value 42" in text  # the new package
    assert f"prefix {env['path']}" in text  # the kernel runs from the overlay
    assert "nbformat " in text  # and still sees the image's packages
    return dict(env)


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_wheelhouse_installs_offline(tmp_path: Path, wheels: Path, installer: str) -> None:
    # nbformat is the image's and not in the wheelhouse: kept, never installed again
    folder = bundle(tmp_path, f"{PACKAGE}==1.2.3\nnbformat\n", wheels)
    env = env_for(tmp_path, PIP_INDEX_URL="http://127.0.0.1:9/none", UV_INDEX_URL="")
    if installer == "pip":
        env["PATH"] = without_uv()
    out = tmp_path / "out"
    r = run_nbjob("run", folder, "--output", out, "--install-requirements", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    found = check_installed(out)
    assert found["installer"] == installer
    assert found["offline"] is True and found["cache"] == "off"
    print(f"\n{installer} offline install: {found['seconds']} s")


def test_without_requirements_nothing_is_made(tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "nb.ipynb").write_bytes(notebook_json(["import sys; print('prefix', sys.prefix)"]))
    out = tmp_path / "out"
    r = run_nbjob("run", folder, "--output", out, "--install-requirements", env=env_for(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    nb, run = results(out)
    assert run["environment"]["installed"] == [] and run["environment"]["cache"] == "off"
    assert f"prefix {sys.prefix}" in texts(nb.cells[0])  # the image's own interpreter
    assert not (tmp_path / "tmp" / "nbjob-envs").exists()


def test_default_installs_nothing(tmp_path: Path, wheels: Path) -> None:
    folder = bundle(tmp_path, f"{PACKAGE}==1.2.3\n", wheels)
    out = tmp_path / "out"
    r = run_nbjob("run", folder, "--output", out, env=env_for(tmp_path))
    assert r.returncode == 1  # the import fails: nothing was installed
    run = json.loads((out / "run.json").read_text())
    assert "environment" not in run
    assert run["unmet_requirements"] == [f"{PACKAGE}==1.2.3"]
    assert not (tmp_path / "tmp" / "nbjob-envs").exists()


def test_cache_hit_on_second_run(tmp_path: Path, wheels: Path) -> None:
    folder = bundle(tmp_path, f"{PACKAGE}\n", wheels)
    cache = tmp_path / "env-cache"
    env = env_for(tmp_path)
    args = ["--install-requirements", "--env-cache", str(cache)]
    first = run_nbjob("run", folder, "--output", tmp_path / "out1", *args, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    miss = check_installed(tmp_path / "out1")
    assert (miss["cache"], miss["from"]) == ("miss", "install")
    assert [p.name for p in cache.iterdir()] == [f"{miss['key']}.tar.gz"]
    shutil.rmtree(miss["path"])  # as on another node: only the cache has it

    second = run_nbjob("run", folder, "--output", tmp_path / "out2", *args, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    hit = check_installed(tmp_path / "out2")
    assert (hit["cache"], hit["from"], hit["key"]) == ("hit", "cache", miss["key"])
    assert any(e["event"] == "env_cache_hit" for e in log_events(tmp_path / "out2"))
    print(f"\ninstall (miss): {miss['seconds']} s; from the cache (hit): {hit['seconds']} s")


def test_cache_in_s3(tmp_path: Path, wheels: Path, s3_server: S3Server, bucket: str) -> None:
    """The cache at any store nbjob writes: an S3 prefix (moto on loopback)."""
    folder = bundle(tmp_path, f"{PACKAGE}\n", wheels)
    env = {**s3_server.env, **env_for(tmp_path)}
    args = ["--install-requirements", "--env-cache", f"s3://{bucket}/envs"]
    first = run_nbjob("run", folder, "--output", tmp_path / "out1", *args, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    miss = check_installed(tmp_path / "out1")
    assert s3_server.keys(bucket) == [f"envs/{miss['key']}.tar.gz"]
    shutil.rmtree(miss["path"])
    second = run_nbjob("run", folder, "--output", tmp_path / "out2", *args, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    hit = check_installed(tmp_path / "out2")
    assert (miss["cache"], hit["cache"], hit["from"]) == ("miss", "hit", "cache")
    print(f"\ns3 cache: install {miss['seconds']} s, hit {hit['seconds']} s")


def test_local_index_and_no_credentials_logged(tmp_path: Path, wheels: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "pypiserver", "run", "-i", "127.0.0.1", "-p", str(port)]
    argv += ["--disable-fallback", "-a", ".", "-P", ".", str(wheels)]
    health = f"http://127.0.0.1:{port}/health"
    with serve("pypiserver", argv, tmp_path / "pypiserver.log", ready=lambda: answers(health)):
        index = f"http://nbjob-user:s3cr3t-index-pw@127.0.0.1:{port}/simple/"
        folder = bundle(tmp_path, f"{PACKAGE}>=1\n")
        out = tmp_path / "out"
        env = env_for(tmp_path, PIP_INDEX_URL=index, UV_INDEX_URL="")
        r = run_nbjob("run", folder, "--output", out, "--install-requirements", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    found = check_installed(out)
    assert found["offline"] is False
    for text in (r.stderr, (out / "executor.log").read_text(), (out / "run.json").read_text()):
        assert "s3cr3t-index-pw" not in text
    print(f"\nfrom the local index: {found['seconds']} s")


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_unknown_requirement_ends_with_7(tmp_path: Path, wheels: Path, installer: str) -> None:
    folder = bundle(tmp_path, "nbjob-no-such-package-xyz==0.1\n", wheels)
    env = env_for(tmp_path)
    if installer == "pip":
        env["PATH"] = without_uv()
    out = tmp_path / "out"
    r = run_nbjob("run", folder, "--output", out, "--install-requirements", env=env)
    assert r.returncode == 7, r.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert (run["status"], run["exit_code"]) == ("environment_unfit", 7)
    reason = run["reason"]
    assert "\n" not in reason and "nbjob-no-such-package-xyz" in reason, reason
    assert reason.startswith(f"installing the requirements failed ({installer})")
    assert r.last_event["event"] == "run_end" and r.last_event["reason"] == reason
    assert not list((tmp_path / "tmp" / "nbjob-envs").glob("*/bin"))  # nothing half-made kept
    print(f"\n{installer}: {reason}")


# -- the fast layer: no process ---------------------------------------------------------------


def test_kernel_python() -> None:
    assert environment.kernel_python(["python", "-m", "ipykernel_launcher"]) == sys.executable
    assert environment.kernel_python(["/opt/conda/bin/python3.11", "-m", "x"]) == (
        "/opt/conda/bin/python3.11"
    )
    assert environment.kernel_python(["R", "--slave"]) is None
    assert environment.kernel_python([]) is None


def test_last_line_is_the_error_without_credentials() -> None:
    uv = (
        "  \u00d7 No solution found when resolving dependencies:\n"
        "  ╰─▶ Because foo was not found in the package registry, we can conclude that"
        " your requirements are unsatisfiable.\n\n"
        "      hint: an index URL (https://u:pw@example.org/simple) could not be queried\n"
    )
    assert environment.last_line(uv).startswith("Because foo was not found")
    pip = (
        "Looking in indexes: https://user:hunter2@example.org/simple\n"
        "ERROR: Could not find a version that satisfies the requirement foo (from versions: none)\n"
        "ERROR: No matching distribution found for foo\n"
    )
    assert environment.last_line(pip) == "ERROR: No matching distribution found for foo"
    assert "hunter2" not in environment.last_line("Looking in https://user:hunter2@x.org/simple")


def test_cache_key_follows_what_decides_the_environment(tmp_path: Path) -> None:
    facts = {"version": "3.11.7", "implementation": "cpython", "platform": "linux-x86_64"}
    facts["dists"] = ["nbformat-5.10.4"]
    key = environment.cache_key("foo==1\n", "/usr/bin/python3", facts, None)
    assert key == environment.cache_key("foo==1\n", "/usr/bin/python3", dict(facts), None)
    assert key != environment.cache_key("foo==2\n", "/usr/bin/python3", facts, None)
    assert key != environment.cache_key("foo==1\n", "/opt/py/bin/python3", facts, None)
    assert key != environment.cache_key("foo==1\n", "/usr/bin/python3", facts | {"dists": []}, None)
    (tmp_path / "foo-1-py3-none-any.whl").write_bytes(b"x")
    assert key != environment.cache_key("foo==1\n", "/usr/bin/python3", facts, tmp_path)
