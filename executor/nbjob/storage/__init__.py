"""Read and write by URL; one backend per kind of store, chosen by the URL's scheme.

============  ===========================  ======================================  =================
scheme        backend                      module (client, imported on first use)  can do
============  ===========================  ======================================  =================
(none), file  local paths                  ``local.py``                            read, list, write
http(s)       GET, e.g. presigned URLs     ``http.py`` (urllib3)                   read
s3            S3 and S3-compatible stores  ``s3.py`` (boto3)                       read, list, write
gs            Google Cloud Storage         ``gcs.py`` (google-cloud-storage)       read, list, write
az, abfs(s)   Azure Blob Storage           ``azure.py`` (azure-storage-blob)       read, list, write
============  ===========================  ======================================  =================

Each writing backend can also create an object only if it is absent (``Capability.EXCLUSIVE``:
``O_CREAT | O_EXCL``, S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``, Azure
``If-None-Match: *``), which the destination's lease (``nbjob.lease``) is built on.

Add a backend in one file: a module with a ``Backend`` subclass (``base.py``) and one line in
``REGISTRY``. ``Storage`` is the facade the rest of nbjob uses: one per run, built from the
settings' ``Options``, it makes each backend on first use, so a run that never touches GCS never
imports Google's libraries. ``check_source`` and ``check_destination`` hold a URL against what
its backend declares it can do; the settings call them, before any kernel starts. The registry
also gathers every backend's credential variables and secret parameters for the redaction in
``nbjob.logs`` (``credential_env``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from urllib.parse import urlsplit

from nbjob import logs
from nbjob.errors import InvalidInputError, StorageError, UsageError

from .base import Backend, Capability, Options
from .local import local_path

__all__ = [
    "REGISTRY",
    "Backend",
    "Capability",
    "Options",
    "Storage",
    "backend_class",
    "check_destination",
    "check_source",
    "credential_env",
    "is_local",
    "join",
    "local_path",
    "scheme",
    "supported_schemes",
]

# scheme -> "module:Class" inside this package. One line per scheme.
REGISTRY: dict[str, str] = {
    "": "local:LocalBackend",
    "file": "local:LocalBackend",
    "http": "http:HttpBackend",
    "https": "http:HttpBackend",
    "s3": "s3:S3Backend",
    "gs": "gcs:GCSBackend",
    "az": "azure:AzureBackend",
    "abfs": "azure:AzureBackend",
    "abfss": "azure:AzureBackend",
}


def scheme(url: str) -> str:
    return urlsplit(url).scheme.lower() if "://" in url else ""


def is_local(url: str) -> bool:
    return scheme(url) in ("", "file")


def join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name if not is_local(base) else str(local_path(base) / name)


def supported_schemes() -> str:
    return ", ".join(f"{s}://" for s in REGISTRY if s)


def backend_class(kind: str) -> type[Backend]:
    """The Backend class for a scheme (its module is imported now, its client library later)."""
    module, _, name = REGISTRY[kind].partition(":")
    cls: type[Backend] = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    return cls


def _backend_classes() -> dict[type[Backend], str]:
    """Each backend class once, with the first scheme it is registered for."""
    classes: dict[type[Backend], str] = {}
    for kind in REGISTRY:
        classes.setdefault(backend_class(kind), kind)
    return classes


def _targets() -> str:
    """Where results can go, for messages: "a folder, s3://, gs:// or az://"."""
    names = [
        f"{kind}://" if kind else "a folder"
        for cls, kind in _backend_classes().items()
        if cls.capabilities >= DESTINATION_NEEDS
    ]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


# What a run does with each end: fetch its source; read and list earlier attempts at its
# destination, then write its results there (EXCLUSIVE, for the lease, is welcome, not needed).
SOURCE_NEEDS = frozenset({Capability.READ})
DESTINATION_NEEDS = frozenset({Capability.READ, Capability.LIST, Capability.WRITE})


def check_source(url: str) -> None:
    """Refuse, as a usage error, a source whose backend cannot be read from. An unknown scheme
    is left to the run (bad input, exit 3, with run.json stored at the destination)."""
    kind = scheme(url)
    if kind in REGISTRY and not backend_class(kind).capabilities >= SOURCE_NEEDS:
        raise UsageError(f"{logs.redact(url)}: {kind}:// cannot be read (destinations only)")


def check_destination(url: str, origin: str = "--output") -> None:
    """Refuse, as a one-line usage error, a destination whose backend cannot read, list and
    write (e.g. https://), or whose scheme no backend knows: called while the settings are
    resolved, so no kernel is started for a run that could store nothing."""
    kind = scheme(url)
    where = f"{origin} {logs.redact(url)}"
    if kind not in REGISTRY:
        raise UsageError(f"{where}: unsupported scheme {kind!r}; use {_targets()}")
    can = backend_class(kind).capabilities
    if not can >= DESTINATION_NEEDS:
        what = (
            "are read-only (sources only)"
            if can == SOURCE_NEEDS
            else "cannot " + " or ".join(sorted(c.value for c in DESTINATION_NEEDS - can))
        )
        raise UsageError(f"{where}: {kind}:// destinations {what}; use {_targets()}")


def credential_env() -> tuple[str, ...]:
    """Every backend's credential variables (their values are scrubbed wherever nbjob writes)."""
    return tuple(dict.fromkeys(n for cls in _backend_classes() for n in cls.credential_env))


def _register_secrets() -> None:
    """Every backend's credential variables and secret URL parameters go to the redaction."""
    for cls in _backend_classes():
        logs.register_secrets(cls.secret_values, cls.secret_params)


class Storage:
    """One object per run: picks the backend for each URL and keeps it (and its client)."""

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self._backends: dict[type[Backend], Backend] = {}

    def backend(self, url: str) -> Backend:
        kind = scheme(url)
        if kind not in REGISTRY:
            raise InvalidInputError(
                f"unsupported scheme {kind!r} in {logs.redact(url)}: use a local path or "
                f"{supported_schemes()}"
            )
        cls = backend_class(kind)
        if cls not in self._backends:
            self._backends[cls] = cls(self.options)
        return self._backends[cls]

    def _writer(self, url: str) -> Backend:
        try:
            backend = self.backend(url)
        except InvalidInputError:
            backend = None
        if backend is None or Capability.WRITE not in backend.capabilities:
            raise StorageError(f"cannot write results to {logs.redact(url)}: use {_targets()}")
        return backend

    def _able(self, url: str, capability: Capability) -> Backend:
        """The backend for ``url`` when it declares ``capability`` (a read, a listing)."""
        backend = self.backend(url)
        if capability not in backend.capabilities:
            can = " and ".join(sorted(c.value for c in backend.capabilities)) or "nothing"
            raise StorageError(
                f"cannot {capability.value} {logs.redact(url)}: {scheme(url)}:// can {can} only"
            )
        return backend

    def fetch(self, url: str, dest_dir: Path) -> Path:
        """Return a local path holding ``url``: local paths as they are, remote ones downloaded."""
        return self._able(url, Capability.READ).fetch(url, dest_dir)

    def put_bytes(self, url: str, data: bytes, content_type: str = "application/json") -> None:
        self._writer(url).put_bytes(url, data, content_type)

    def put_file(self, url: str, path: Path, content_type: str | None = None) -> None:
        self._writer(url).put_file(url, path, content_type)

    def get_bytes(self, url: str) -> bytes | None:
        """The object at ``url``; None when there is none."""
        return self._able(url, Capability.READ).get_bytes(url)

    def list_names(self, url: str) -> list[str]:
        """Relative names of the objects under the folder ``url`` (none: empty)."""
        return self._able(url, Capability.LIST).list_names(url)

    def check_writable(self, url: str) -> None:
        """Fail early (before any cell runs) when the destination cannot be written."""
        self._writer(url).check_writable(url)

    def exclusive(self, url: str) -> bool:
        """Whether ``url``'s backend can create an object only if absent (``EXCLUSIVE``)."""
        return Capability.EXCLUSIVE in self.backend(url).capabilities

    def create_exclusive(self, url: str, data: bytes) -> bool:
        """Create ``url`` holding ``data`` if there is none: True when this call created it."""
        return self._able(url, Capability.EXCLUSIVE).create_exclusive(url, data)

    def remove(self, url: str) -> None:
        """Remove the object ``url`` (none there: nothing to do)."""
        self._able(url, Capability.EXCLUSIVE).remove(url)


_register_secrets()
