"""gs://bucket/key on Google Cloud Storage, through the official ``google-cloud-storage`` client.

Credentials: application-default credentials (``GOOGLE_APPLICATION_CREDENTIALS``, workload
identity, the metadata server...). ``STORAGE_EMULATOR_HOST`` (the standard variable) points the
client at an emulator, with anonymous credentials. Files above 8 MiB go up as resumable uploads
in 8 MiB chunks. The client's own retries are switched off: the shared loop in ``retry.py``
retries, so a dead endpoint fails in seconds, not after the client's 120 s deadline.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar

from .base import (
    CHUNK_SIZE,
    CHUNK_THRESHOLD,
    Backend,
    Options,
    first_line,
    need_key,
    split_url,
    target_in,
)
from .retry import RETRY_STATUS, with_retries

EXAMPLE = "gs://bucket/key"
_PHRASES = {s.value for s in HTTPStatus}
_KEY_FILE_SECRETS = ("private_key", "private_key_id", "client_secret", "refresh_token")


class GCSBackend(Backend):
    credential_env: ClassVar[tuple[str, ...]] = (
        "CLOUDSDK_AUTH_ACCESS_TOKEN",
        "GOOGLE_OAUTH_ACCESS_TOKEN",
    )
    # V4 and V2 signed URLs.
    secret_params: ClassVar[tuple[str, ...]] = (
        "X-Goog-Signature",
        "X-Goog-Credential",
        "GoogleAccessId",
        "Signature",
    )

    def __init__(self, options: Options | None = None) -> None:
        super().__init__(options)
        self._client: Any = None

    def client(self) -> Any:
        """The one GCS client (made on first use, once, however many threads ask)."""
        if self._client is None:
            with self.client_lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        from google.cloud import storage  # imported here: only gs:// runs pay for it

        project = os.environ.get("GOOGLE_CLOUD_PROJECT") or None
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            return storage.Client(project=project or "nbjob", credentials=AnonymousCredentials())
        return storage.Client(project=project)

    @property
    def timeouts(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)

    def _blob(self, url: str) -> Any:
        bucket, key = split_url(url, "a GCS", EXAMPLE)
        return self.client().bucket(bucket).blob(key)

    def fetch(self, url: str, dest_dir: Path) -> Path:
        _, key = split_url(url, "a GCS", EXAMPLE)
        need_key(url, key, "a GCS", EXAMPLE)
        target = target_in(dest_dir, url)
        with_retries(
            self,
            "download",
            url,
            lambda: self._blob(url).download_to_filename(
                str(target), retry=None, timeout=self.timeouts
            ),
        )
        return target

    def put_bytes(self, url: str, data: bytes, content_type: str = "application/json") -> None:
        with_retries(
            self,
            "upload",
            url,
            lambda: self._blob(url).upload_from_string(
                data, content_type=content_type, retry=None, timeout=self.timeouts
            ),
        )

    def put_file(self, url: str, path: Path, content_type: str | None = None) -> None:
        def upload() -> None:
            blob = self._blob(url)
            if path.stat().st_size > CHUNK_THRESHOLD:
                blob.chunk_size = CHUNK_SIZE  # resumable upload, one request per chunk
            blob.upload_from_filename(
                str(path), content_type=content_type, retry=None, timeout=self.timeouts
            )

        with_retries(self, "upload", url, upload)

    def create_exclusive(self, url: str, data: bytes) -> bool:
        """An upload with ``ifGenerationMatch=0``: 412 (the object exists) is False."""
        from google.api_core.exceptions import PreconditionFailed

        def put() -> bool:
            try:
                self._blob(url).upload_from_string(
                    data,
                    content_type="application/json",
                    if_generation_match=0,
                    retry=None,
                    timeout=self.timeouts,
                )
            except PreconditionFailed:
                return False
            return True

        return with_retries(self, "create", url, put)

    def remove(self, url: str) -> None:
        from google.api_core.exceptions import NotFound

        def delete() -> None:
            with contextlib.suppress(NotFound):
                self._blob(url).delete(retry=None, timeout=self.timeouts)

        with_retries(self, "remove", url, delete)

    def get_bytes(self, url: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        def get() -> bytes | None:
            try:
                return bytes(self._blob(url).download_as_bytes(retry=None, timeout=self.timeouts))
            except NotFound:
                return None

        return with_retries(self, "read", url, get)

    def list_names(self, url: str) -> list[str]:
        bucket, key = split_url(url, "a GCS", EXAMPLE)
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""

        def names() -> list[str]:
            client = self.client()
            blobs = client.list_blobs(bucket, prefix=prefix, retry=None, timeout=self.timeouts)
            return sorted(b.name[len(prefix) :] for b in blobs)

        return with_retries(self, "list", url, names)

    def classify(self, exc: Exception) -> tuple[bool, str]:
        from google.api_core.exceptions import GoogleAPICallError
        from google.auth.exceptions import GoogleAuthError, TransportError

        if isinstance(exc, GoogleAPICallError):
            status = int(exc.code or 0)
            message = first_line(Exception(exc.message))
            if "://" in message:  # "GET http://...: ('Request failed with status code', 404..."
                message = HTTPStatus(status).phrase if status in _PHRASES else "error"
            return status in RETRY_STATUS, f"{status} {message}"
        if isinstance(exc, TransportError):
            return True, first_line(exc)
        if isinstance(exc, GoogleAuthError):  # no or bad credentials: no retry fixes that
            return False, first_line(exc)
        import requests

        if isinstance(exc, requests.RequestException | OSError):
            return True, first_line(exc)
        return False, first_line(exc)

    @classmethod
    def secret_values(cls, environ: Mapping[str, str]) -> list[str]:
        """The env tokens, and the secrets inside the GOOGLE_APPLICATION_CREDENTIALS file."""
        key_file = environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
        return super().secret_values(environ) + list(_key_file_secrets(key_file))


@functools.lru_cache(maxsize=4)
def _key_file_secrets(key_file: str) -> tuple[str, ...]:
    """Private key, key id, client secret, refresh token of a credentials file (read once)."""
    try:
        if key_file and os.path.getsize(key_file) < 1 << 16:
            with open(key_file, encoding="utf-8") as f:
                info = json.load(f)
            return tuple(str(info[k]) for k in _KEY_FILE_SECRETS if info.get(k))
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    return ()
