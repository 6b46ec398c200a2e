"""Requirements installed at start, opt-in (``--install-requirements``): an overlay environment.

Off by default: nothing is installed and nothing is downloaded besides the bundle, so jobs run
on air-gapped clusters. When asked, the bundle's ``requirements.txt`` is installed into an
*overlay*: a virtual environment made from the kernel's own interpreter with the image's
packages still visible (``--system-site-packages``, plus a ``.pth`` line for the site folders
of an interpreter that is itself a venv), so the image's torch or TensorFlow are used, never
installed again. The kernel is then started from the overlay's python, with its ``bin`` first
on ``PATH``.

Installer: ``uv`` when it is on ``PATH``, else ``pip`` (the image's, seen from the overlay).
uv does not see packages of ``--system-site-packages`` (astral-sh/uv#7358), so the requirement
lines the image already satisfies are left out and every other package the image has is
excluded from uv's resolution (``--excludes``): both installers keep the image's packages.
Offline from the bundle's ``wheelhouse/`` when there is one (``--no-index --find-links``), else
from the configured index (``PIP_INDEX_URL`` / ``UV_INDEX_URL``; passed in the environment,
never logged).

Cache (``--env-cache URL``): the overlay is keyed by a hash of the requirements, the
interpreter (path, version, platform), the image's packages and the wheelhouse's listing, kept
as ``<key>.tar.gz`` at the URL, and unpacked on a hit (``nbjob.envcache``). A venv is not
relocatable, so it always lives at the same absolute path, ``$TMPDIR/nbjob-envs/<key[:24]>``
(the same on every node with the same temporary folder, which is part of the key); a folder
already complete there is used as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbjob import envcache, logs
from nbjob.errors import EnvironmentUnfitError
from nbjob.storage import Storage

REQUIREMENTS = "requirements.txt"
WHEELHOUSE = "wheelhouse"
META = "nbjob-env.json"  # inside a complete overlay: what was installed, by which installer
PTH = "_nbjob_image.pth"
# Index settings each installer reads; the other's names are passed on when its own are unset.
INDEX_VARS = (
    ("PIP_INDEX_URL", "UV_INDEX_URL"),
    ("PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL"),
    ("PIP_FIND_LINKS", "UV_FIND_LINKS"),
)
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
# uv's tree of causes (box drawing, a multiplication sign) and its "cause:" labels
_DECORATION = re.compile("^[\\s\u00d7\u2570\u2500\u25b6\u2502|:]*(cause:\\s*)?")

# Run by an interpreter (or exec'd here, for nbjob's own): what the key and the overlay need.
_DESCRIBE = """
import json, os, platform, site, sys, sysconfig
dists = set()  # "name-version", from the metadata folders' names: no metadata file is read
for folder in filter(None, sys.path):
    try:
        found = os.listdir(folder)
    except OSError:
        continue
    dists.update(n.rsplit(".", 1)[0] for n in found if n.endswith((".dist-info", ".egg-info")))
dists = sorted(dists)
RESULT = {"version": platform.python_version(), "implementation": sys.implementation.name,
    "platform": sysconfig.get_platform(), "purelib": sysconfig.get_paths()["purelib"],
    "sites": site.getsitepackages(), "dists": dists}
"""


@dataclass(frozen=True)
class Overlay:
    """An environment the kernel starts from: its python and the variables that select it."""

    path: Path
    python: Path

    def kernel_env(self) -> dict[str, str]:
        path = os.environ.get("PATH", "")
        return {"VIRTUAL_ENV": str(self.path), "PATH": f"{self.path / 'bin'}{os.pathsep}{path}"}


@dataclass
class Report:
    """What run.json records as ``environment``."""

    installer: str | None = None
    cache: str = "off"  # hit | miss | off
    source: str = "install"  # install | cache | folder: where the overlay came from
    offline: bool = False  # from the bundle's wheelhouse
    requirements: list[str] = field(default_factory=list)
    installed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    key: str | None = None
    path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "installed": self.installed,
            "seconds": self.seconds,
            "cache": self.cache,
            "from": self.source,
            "installer": self.installer,
            "offline": self.offline,
            "requirements": self.requirements,
            "key": self.key,
            "path": self.path,
        }


def kernel_python(argv: list[str]) -> str | None:
    """The interpreter a kernelspec's ``argv`` starts (``python3`` is nbjob's own, as
    jupyter_client does), or None when it is not started by a Python interpreter."""
    if not argv or not _PYTHON.match(Path(argv[0]).name):
        return None
    major, minor = sys.version_info[:2]
    if argv[0] in {"python", f"python{major}", f"python{major}.{minor}"}:
        return sys.executable
    return argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0])


def overlays_root() -> Path:
    return Path(tempfile.gettempdir()) / "nbjob-envs"


def prepare(
    root: Path, argv: list[str], cache_url: str | None, storage: Storage, log: Any
) -> tuple[Overlay | None, Report]:
    """The overlay for the bundle at ``root`` (None when it has no requirements), from the
    cache, an earlier run on this node or a new install; ``EnvironmentUnfitError`` (exit 7)
    when the kernel is not a Python one or the install fails."""
    started = time.monotonic()
    req = root / REQUIREMENTS
    if not req.is_file():  # nothing to install: the image's environment as it is
        return None, Report()
    report = Report(cache="miss" if cache_url else "off")
    base = kernel_python(argv)
    if base is None:
        raise EnvironmentUnfitError(
            "--install-requirements needs a kernel started by a Python interpreter; this one"
            f" starts {argv[0] if argv else 'nothing known'!r}"
        )
    wheelhouse = root / WHEELHOUSE if (root / WHEELHOUSE).is_dir() else None
    facts = describe(base)
    key = cache_key(req.read_text(encoding="utf-8", errors="replace"), base, facts, wheelhouse)
    path = overlays_root() / key[:24]
    report.key, report.path, report.offline = key, str(path), wheelhouse is not None
    with envcache.locked(path):
        if (path / META).is_file():
            report.source, report.cache = "folder", "hit"
        elif cache_url and envcache.download(storage, cache_url, key, path, META, log):
            report.source, report.cache = "cache", "hit"
        else:
            _build(path, base, facts, req, wheelhouse, log)
            if cache_url:
                envcache.upload(storage, cache_url, key, path, log)
    meta = json.loads((path / META).read_text())
    report.installer, report.installed = meta["installer"], meta["installed"]
    report.requirements = meta["requirements"]
    report.seconds = round(time.monotonic() - started, 3)
    return Overlay(path, path / "bin" / "python"), report


def describe(python: str | Path) -> dict[str, Any]:
    """The interpreter's version, platform, site folders and installed distributions (read in
    this process when the interpreter is nbjob's own: the usual ``python3`` kernel)."""
    if str(python) == sys.executable:
        namespace: dict[str, Any] = {}
        exec(_DESCRIBE, namespace)
        return dict(namespace["RESULT"])
    done = _run([str(python), "-c", _DESCRIBE + "print(json.dumps(RESULT))"], "describe")
    if done.returncode != 0:
        raise EnvironmentUnfitError(f"{python} cannot run: {last_line(done.stdout)}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def cache_key(text: str, base: str, facts: dict[str, Any], wheelhouse: Path | None) -> str:
    """A hash of what decides the overlay's contents and its validity here."""
    listing = sorted(
        f"{p.name}:{p.stat().st_size}" for p in (wheelhouse.iterdir() if wheelhouse else [])
    )
    material = {
        "requirements": text,
        "python": base,
        "version": facts["version"],
        "implementation": facts["implementation"],
        "platform": facts["platform"],
        "image": facts["dists"],
        "wheelhouse": listing,
        "root": str(overlays_root()),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


# -- building -----------------------------------------------------------------------------------


def _build(
    path: Path, base: str, facts: dict[str, Any], req: Path, wheelhouse: Path | None, log: Any
) -> None:
    """Create the overlay at ``path`` and install what the image lacks; META marks it done."""
    shutil.rmtree(path, ignore_errors=True)  # an earlier, unfinished try
    uv = shutil.which("uv")
    installer = "uv" if uv else "pip"
    try:
        _create(path, base, uv)
        python = path / "bin" / "python"
        own = describe(python)
        extra = [d for d in facts["sites"] if d not in own["sites"]]
        if extra:  # the kernel's interpreter is a venv: its packages are the image's too
            line = (  # one line, run by site in a scope of its own (no names in comprehensions)
                "import site; list(map(site.addsitedir,"
                f" [d for d in {extra!r} if d not in __import__('sys').path]))"
            )
            (Path(own["purelib"]) / PTH).write_text(line + "\n")
        lines = unmet(python, requirement_names(req))
        if lines:
            argv = _install_argv(installer, uv, python, req, lines, facts, wheelhouse, path)
            started = time.monotonic()
            done = _run(argv, installer, _installer_env(path))
            log.info(
                "requirements_install",
                installer=installer,
                requirements=lines,
                offline=wheelhouse is not None,
                exit_code=done.returncode,
                seconds=round(time.monotonic() - started, 3),
            )
            if done.returncode != 0:
                raise EnvironmentUnfitError(
                    f"installing the requirements failed ({installer}): {last_line(done.stdout)}"
                )
        meta = {"installer": installer, "requirements": lines, "installed": installed(own)}
        (path / META).write_text(json.dumps(meta))
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def _create(path: Path, base: str, uv: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if uv:
        argv = [uv, "venv", "--quiet", "--python", base, "--system-site-packages", str(path)]
    else:
        argv = [base, "-m", "venv", "--system-site-packages", "--without-pip", str(path)]
    done = _run(argv, "venv", _installer_env(path))
    if done.returncode != 0:
        raise EnvironmentUnfitError(
            f"the overlay environment cannot be made: {last_line(done.stdout)}"
        )


def _install_argv(
    installer: str,
    uv: str | None,
    python: Path,
    req: Path,
    lines: list[str],
    facts: dict[str, Any],
    wheelhouse: Path | None,
    path: Path,
) -> list[str]:
    """pip installs from the file (it sees the image's packages itself); uv gets the image's
    other packages as exclusions (it does not see them, astral-sh/uv#7358)."""
    offline = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else []
    if installer == "pip":
        return [str(python), "-m", "pip", "install", "--no-input", "-r", str(req), *offline]
    wanted = {normalize(re.split(r"[\s<>=!~;\[@(]", line, maxsplit=1)[0]) for line in lines}
    image = {normalize(d.split("-", 1)[0]) for d in facts["dists"]}
    excludes = path / "nbjob-excludes.txt"
    excludes.write_text("".join(f"{name}\n" for name in sorted(image - wanted)))
    return [
        str(uv),
        "pip",
        "install",
        "--python",
        str(python),
        "--excludes",
        str(excludes),
        *offline,
        *lines,
    ]


def _installer_env(path: Path) -> dict[str, str]:
    """The installer's environment: the index settings under both installers' names, no
    interpreter downloads, caches under the overlays' folder when HOME cannot be written."""
    env = dict(os.environ)
    for pip_name, uv_name in INDEX_VARS:
        if env.get(pip_name) and not env.get(uv_name):
            env[uv_name] = env[pip_name]
        elif env.get(uv_name) and not env.get(pip_name):
            env[pip_name] = env[uv_name]
    env.pop("VIRTUAL_ENV", None)
    env.update(
        UV_PYTHON_DOWNLOADS="never",
        UV_NO_PROGRESS="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHONNOUSERSITE="1",
    )
    home = env.get("HOME", "")
    if not (home and os.access(home, os.W_OK)):
        env.setdefault("UV_CACHE_DIR", str(path.parent / "uv-cache"))
        env.setdefault("PIP_CACHE_DIR", str(path.parent / "pip-cache"))
    return env


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> Any:
    try:
        return subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            check=False,
        )
    except OSError as exc:
        raise EnvironmentUnfitError(f"{what} cannot start: {exc}") from None


def requirement_names(req: Path) -> list[str]:
    """The requirement lines of a requirements file (no comments, no options)."""
    text = req.read_text(encoding="utf-8", errors="replace")
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def unmet(python: Path, lines: list[str]) -> list[str]:
    """The ``lines`` the environment of ``python`` does not satisfy (the kernel's own check)."""
    from nbjob.languages.python import _REQUIREMENTS_CHECK

    code = f"LINES = {lines!r}\n{_REQUIREMENTS_CHECK}\nprint(_nbjob_result)"
    done = _run([str(python), "-c", code], "the requirements check")
    if done.returncode != 0:
        return list(lines)
    result: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def installed(own: dict[str, Any]) -> list[dict[str, str]]:
    """The distributions in the overlay itself (not the image's), by name."""
    from importlib.metadata import distributions

    found = {
        (d.metadata["Name"], d.version)
        for d in distributions(path=[own["purelib"]])
        if d.metadata["Name"]
    }
    return [{"name": n, "version": v} for n, v in sorted(found, key=lambda nv: nv[0].lower())]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def last_line(output: str) -> str:
    """The installer's last meaningful line (uv's explanation, pip's last ``ERROR:``), without
    hints, decoration or credentials."""
    lines = [_DECORATION.sub("", line).strip() for line in output.splitlines()]
    skip = ("hint", "help", "[notice]")
    lines = [line for line in lines if line and not line.lower().startswith(skip)]
    line = (lines or ["no output"])[-1]
    return logs.redact(line)[:400]
