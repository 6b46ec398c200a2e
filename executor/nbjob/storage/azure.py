"""az://container/blob (and abfs[s]://container@account.dfs.core.windows.net/blob) on Azure Blob.

Through the official ``azure-storage-blob`` client. Credentials, first match wins:
``AZURE_STORAGE_CONNECTION_STRING``; else ``AZURE_STORAGE_ACCOUNT`` (or the account in an
abfs:// URL) with ``AZURE_STORAGE_KEY``, or a SAS token in ``AZURE_STORAGE_SAS_TOKEN``, or else
``DefaultAzureCredential`` (``azure-identity``: managed identity, workload identity, service
principal variables...). ``AZURE_STORAGE_BLOB_ENDPOINT`` overrides the account's endpoint
(https://ACCOUNT.blob.core.windows.net). Files above 8 MiB go up as blocks of 8 MiB.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from nbjob.errors import InvalidInputError, StorageError

from .base import (
    CHUNK_SIZE,
    CHUNK_THRESHOLD,
    CLIENT_TRIES,
    Backend,
    Options,
    first_line,
    need_key,
    target_in,
)
from .retry import BACKOFF_S, RETRY_STATUS, with_retries

EXAMPLE = "az://container/blob"
_CONN_SECRETS = ("AccountKey", "SharedAccessSignature")


def split_az(url: str) -> tuple[str | None, str, str]:
    """(account or None, container, blob) of an az:// or abfs[s]:// URL."""
    parts = urlsplit(url)
    account = None
    container = parts.netloc
    if parts.scheme.lower() in ("abfs", "abfss"):
        container, _, host = parts.netloc.partition("@")
        account = host.split(".", 1)[0] or None
    if not container:
        raise InvalidInputError(f"{url}: an Azure URL needs a container ({EXAMPLE})")
    return account, container, parts.path.lstrip("/")


class AzureBackend(Backend):
    credential_env: ClassVar[tuple[str, ...]] = (
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_CLIENT_SECRET",
    )
    # SAS tokens (sig=...) and the secret parts of a connection string.
    secret_params: ClassVar[tuple[str, ...]] = ("sig", *_CONN_SECRETS)

    def __init__(self, options: Options | None = None) -> None:
        super().__init__(options)
        self._clients: dict[str | None, Any] = {}

    def service(self, account: str | None) -> Any:
        """One BlobServiceClient per account, made on first use (once, however many threads
        ask)."""
        if account not in self._clients:
            with self.client_lock:
                if account not in self._clients:
                    self._clients[account] = self._make_service(account)
        return self._clients[account]

    def _make_service(self, account: str | None) -> Any:
        from azure.storage.blob import BlobServiceClient, LinearRetry

        options: dict[str, Any] = {
            "retry_policy": LinearRetry(
                backoff=BACKOFF_S,  # type: ignore[arg-type]  # seconds; a float works
                random_jitter_range=0,
                retry_total=min(self.options.attempts, CLIENT_TRIES) - 1,
            ),
            "connection_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "max_single_put_size": CHUNK_THRESHOLD,
            "max_block_size": CHUNK_SIZE,
            "max_single_get_size": CHUNK_THRESHOLD,
            "max_chunk_get_size": CHUNK_SIZE,
        }
        env = os.environ
        if env.get("AZURE_STORAGE_CONNECTION_STRING"):
            client = BlobServiceClient.from_connection_string(
                env["AZURE_STORAGE_CONNECTION_STRING"], **options
            )
            if account and account != client.account_name:
                raise StorageError(
                    f"the URL names the Azure account {account!r}, but "
                    f"AZURE_STORAGE_CONNECTION_STRING is for {client.account_name!r}"
                )
            return client
        else:
            name = account or env.get("AZURE_STORAGE_ACCOUNT")
            if not name:
                raise StorageError(
                    "no Azure account: set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT"
                )
            endpoint = env.get("AZURE_STORAGE_BLOB_ENDPOINT") or (
                f"https://{name}.blob.core.windows.net"
            )
            credential: Any
            if env.get("AZURE_STORAGE_KEY"):
                credential = {"account_name": name, "account_key": env["AZURE_STORAGE_KEY"]}
            elif env.get("AZURE_STORAGE_SAS_TOKEN"):
                credential = env["AZURE_STORAGE_SAS_TOKEN"].lstrip("?")
            else:
                from azure.identity import DefaultAzureCredential  # only when needed

                credential = DefaultAzureCredential()
            return BlobServiceClient(endpoint, credential, **options)

    def _blob(self, url: str) -> Any:
        account, container, blob = split_az(url)
        return self.service(account).get_blob_client(container, blob)

    def fetch(self, url: str, dest_dir: Path) -> Path:
        need_key(url, split_az(url)[2], "an Azure", EXAMPLE)
        target = target_in(dest_dir, url)

        def download() -> None:
            with target.open("wb") as f:
                self._blob(url).download_blob(max_concurrency=2).readinto(f)

        try:
            with_retries(self, "download", url, download)
        except StorageError:
            target.unlink(missing_ok=True)
            raise
        return target

    def put_bytes(self, url: str, data: bytes, content_type: str = "application/json") -> None:
        from azure.storage.blob import ContentSettings

        with_retries(
            self,
            "upload",
            url,
            lambda: self._blob(url).upload_blob(
                data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
            ),
        )

    def put_file(self, url: str, path: Path, content_type: str | None = None) -> None:
        from azure.storage.blob import ContentSettings

        settings = ContentSettings(content_type=content_type) if content_type else None

        def upload() -> None:
            with path.open("rb") as f:
                self._blob(url).upload_blob(
                    f,
                    length=path.stat().st_size,
                    overwrite=True,
                    max_concurrency=2,
                    content_settings=settings,
                )

        with_retries(self, "upload", url, upload)

    def create_exclusive(self, url: str, data: bytes) -> bool:
        """Put Blob with ``If-None-Match: *`` (``overwrite=False``): 409 (the blob exists) or
        412 is False."""
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        def put() -> bool:
            try:
                self._blob(url).upload_blob(data, overwrite=False)
            except (ResourceExistsError, ResourceModifiedError):
                return False
            return True

        return with_retries(self, "create", url, put)

    def remove(self, url: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        def delete() -> None:
            with contextlib.suppress(ResourceNotFoundError):
                self._blob(url).delete_blob()

        with_retries(self, "remove", url, delete)

    def get_bytes(self, url: str) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        def get() -> bytes | None:
            try:
                return bytes(self._blob(url).download_blob().readall())
            except ResourceNotFoundError:
                return None

        return with_retries(self, "read", url, get)

    def list_names(self, url: str) -> list[str]:
        account, container, key = split_az(url)
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""

        def names() -> list[str]:
            client = self.service(account).get_container_client(container)
            return sorted(b.name[len(prefix) :] for b in client.list_blobs(name_starts_with=prefix))

        return with_retries(self, "list", url, names)

    def classify(self, exc: Exception) -> tuple[bool, str]:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        if isinstance(exc, ClientAuthenticationError):
            return False, first_line(exc)
        if isinstance(exc, HttpResponseError):
            status = int(exc.status_code or 0)
            code = getattr(exc, "error_code", None) or exc.reason or ""
            return status in RETRY_STATUS, f"{status} {code}: {first_line(exc)}"
        if isinstance(exc, ServiceRequestError | ServiceResponseError | OSError):
            return True, first_line(exc)
        return False, first_line(exc)  # a malformed connection string, bad parameters...

    @classmethod
    def secret_values(cls, environ: Mapping[str, str]) -> list[str]:
        """The env values, and the key / SAS inside a connection string on their own."""
        values = super().secret_values(environ)
        for part in environ.get("AZURE_STORAGE_CONNECTION_STRING", "").split(";"):
            name, _, value = part.partition("=")
            if name.strip() in _CONN_SECRETS and value:
                values.append(value.strip())
        return values
