"""Kernel sessions: one interface (``base.KernelSession``), one file per kind of kernel.

``open_session`` is the one place a session is made: ``KINDS`` maps a kind to its factory and
the settings pick the kind (a gateway URL means ``gateway``, else ``local``). To add a kind,
write a ``KernelSession`` subclass in its own module and a factory line in ``KINDS``.
``fake.FakeKernel`` (scripted messages, for tests of the executor) is not a kind.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbjob import languages
from nbjob.errors import NoSuchKernelError
from nbjob.kernel.base import DEFAULT_KERNEL, KernelSession, Message

__all__ = [
    "DEFAULT_KERNEL",
    "KINDS",
    "KernelSession",
    "Message",
    "SessionOptions",
    "choose",
    "gateway_token",
    "gateway_url",
    "open_session",
    "session_kind",
]

TOKEN_ENV = ("NBJOB_GATEWAY_AUTH_TOKEN", "JUPYTER_GATEWAY_AUTH_TOKEN")


@dataclass(frozen=True)
class SessionOptions:
    """What a factory needs besides the kernel's name and folder."""

    startup_timeout: float = 60.0
    workdir: Path = Path(".")
    env: dict[str, str] = field(default_factory=dict)  # extra variables for a local kernel
    run_id: str = "run"
    gateway_url: str | None = None
    gateway_token: str | None = None
    request_timeout: float = 60.0
    python: str | None = None  # a local Python kernel's interpreter instead of its spec's


def _local(name: str, cwd: Path, o: SessionOptions) -> KernelSession:
    from nbjob.kernel.local import LocalKernel

    return LocalKernel(name, cwd, o.startup_timeout, o.workdir / "ipc", env=o.env, python=o.python)


def _gateway(name: str, cwd: Path, o: SessionOptions) -> KernelSession:
    from nbjob.kernel.gateway import GatewayKernel
    from nbjob.kernel.rest import GatewayAPI

    api = GatewayAPI(o.gateway_url or "", o.gateway_token, o.request_timeout)
    return GatewayKernel(name, cwd, o.startup_timeout, api, o.run_id)


KINDS: dict[str, Callable[[str, Path, SessionOptions], KernelSession]] = {
    "local": _local,
    "gateway": _gateway,
}


def gateway_url(settings: Any, environ: Mapping[str, str]) -> str | None:
    """--gateway-url / NBJOB_GATEWAY_URL, else JUPYTER_GATEWAY_URL (jupyter_server's name)."""
    return getattr(settings, "gateway_url", None) or environ.get("JUPYTER_GATEWAY_URL") or None


def gateway_token(environ: Mapping[str, str]) -> str | None:
    return next((environ[k] for k in TOKEN_ENV if environ.get(k)), None)


def session_kind(settings: Any, environ: Mapping[str, str] | None = None) -> str:
    url = gateway_url(settings, os.environ if environ is None else environ)
    return "gateway" if url else "local"


def open_session(
    settings: Any,
    name: str,
    cwd: Path,
    *,
    workdir: Path,
    env: dict[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    python: str | None = None,
) -> KernelSession:
    """A new, unstarted session of the kind the settings ask for."""
    environ = os.environ if environ is None else environ
    options = SessionOptions(
        startup_timeout=settings.kernel_start_timeout,
        workdir=workdir,
        env=env or {},
        run_id=settings.run_id,
        gateway_url=gateway_url(settings, environ),
        gateway_token=gateway_token(environ),
        request_timeout=getattr(settings, "gateway_request_timeout", 60.0),
        python=python,
    )
    return KINDS[session_kind(settings, environ)](name, cwd, options)


def choose(
    notebook_meta: Mapping[str, Any],
    override: str | None,
    installed: Mapping[str, Mapping[str, Any]],
) -> str:
    """The kernel to run: override, else the notebook's kernelspec, else one of its language
    (the language's ``default_kernel`` first: ``python3`` for Python)."""
    if override:
        if override not in installed:
            raise NoSuchKernelError(
                f"kernel {override!r} is not installed; installed: {', '.join(sorted(installed))}"
            )
        return override
    spec = notebook_meta.get("kernelspec") or {}
    name = spec.get("name")
    if name in installed:
        return str(name)
    language = spec.get("language") or (notebook_meta.get("language_info") or {}).get("name")
    if not name and not language:
        language = languages.DEFAULT_LANGUAGE
    if language:
        preferred = languages.get(language).default_kernel
        if preferred and preferred in installed:
            return str(preferred)
        for candidate, meta in sorted(installed.items()):
            if meta.get("language") == language:
                return candidate
    raise NoSuchKernelError(
        f"No such kernel: the notebook asks for {name or language!r}, which is not installed "
        f"here; installed: {', '.join(sorted(installed))} (choose one with --kernel)"
    )
