"""Read and write by URL; one backend per kind of store, chosen by the URL's scheme.

============  ===========================  =====================================
scheme        backend                      module (client, imported on first use)
============  ===========================  =====================================
(none), file  local paths                  ``local.py``
http(s)       GET, e.g. presigned URLs     ``http.py`` (urllib3)
s3            S3 and S3-compatible stores  ``s3.py`` (boto3)
gs            Google Cloud Storage         ``gcs.py`` (google-cloud-storage)
az, abfs(s)   Azure Blob Storage           ``azure.py`` (azure-storage-blob)
============  ===========================  =====================================

Add a backend in one file: a module with a ``Backend`` subclass (``base.py``) and one line in
``REGISTRY``. ``Storage`` is the facade the rest of nbjob uses: one per run, it makes each
backend on first use, so a run that never touches GCS never imports Google's libraries.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from urllib.parse import urlsplit

from nbjob import logs
from nbjob.errors import InvalidInputError, StorageError

from .base import Backend
from .local import local_path

__all__ = [
    "REGISTRY",
    "Backend",
    "Storage",
    "backend_class",
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


def _register_secrets() -> None:
    """Every backend's credential variables and secret URL parameters go to the redaction."""
    for cls in {backend_class(kind) for kind in REGISTRY}:
        logs.register_secrets(cls.secret_values, cls.secret_params)


class Storage:
    """One object per run: picks the backend for each URL and keeps it (and its client)."""

    def __init__(self, endpoint_url: str | None = None, timeout: float | None = None) -> None:
        self.endpoint_url = endpoint_url
        self.timeout = timeout  # --storage-timeout (None: the backends' default, 60 s)
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
            backend = cls(self.endpoint_url)
            if self.timeout:
                backend.timeout = self.timeout
            self._backends[cls] = backend
        return self._backends[cls]

    def _writer(self, url: str) -> Backend:
        try:
            backend = self.backend(url)
        except InvalidInputError:
            backend = None
        if backend is None or not backend.writable:
            targets = ", ".join(
                f"{s}://" for s in REGISTRY if s and backend_class(s).writable and s != "file"
            )
            raise StorageError(
                f"cannot write results to {logs.redact(url)}: use a folder or {targets}"
            )
        return backend

    def fetch(self, url: str, dest_dir: Path) -> Path:
        """Return a local path holding ``url``: local paths as they are, remote ones downloaded."""
        return self.backend(url).fetch(url, dest_dir)

    def put_bytes(self, url: str, data: bytes, content_type: str = "application/json") -> None:
        self._writer(url).put_bytes(url, data, content_type)

    def put_file(self, url: str, path: Path) -> None:
        self._writer(url).put_file(url, path)

    def get_bytes(self, url: str) -> bytes | None:
        """The object at ``url``; None when there is none."""
        return self.backend(url).get_bytes(url)

    def list_names(self, url: str) -> list[str]:
        """Relative names of the objects under the folder ``url`` (none: empty)."""
        return self.backend(url).list_names(url)

    def check_writable(self, url: str) -> None:
        """Fail early (before any cell runs) when the destination cannot be written."""
        self._writer(url).check_writable(url)


_register_secrets()
