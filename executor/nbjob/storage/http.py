"""https:// and http:// sources: a plain GET, e.g. of a presigned S3 / GCS URL or an Azure SAS URL.

Read only: results cannot be written to an https:// URL, nor can a folder be listed (use the
store's own scheme), so an https:// destination is refused before the run starts. urllib3
retries connection errors and 408/429/5xx with backoff; the signature in the query string is
never shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from nbjob.errors import StorageError
from nbjob.logs import redact

from .base import CLIENT_TRIES, Backend, Capability, Options, first_line, target_in
from .retry import BACKOFF_S, RETRY_STATUS


class HttpBackend(Backend):
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.READ})

    def __init__(self, options: Options | None = None) -> None:
        super().__init__(options)
        self._http: Any = None

    def http(self) -> Any:
        if self._http is None:
            import urllib3

            retries = urllib3.Retry(
                total=min(self.options.attempts, CLIENT_TRIES + 1) - 1,
                backoff_factor=BACKOFF_S,
                status_forcelist=RETRY_STATUS,
                allowed_methods=None,
                raise_on_status=True,
            )
            self._http = urllib3.PoolManager(
                retries=retries,
                timeout=urllib3.Timeout(self.connect_timeout * 2, self.read_timeout),
            )
        return self._http

    def fetch(self, url: str, dest_dir: Path) -> Path:
        import urllib3

        target = target_in(dest_dir, url)
        try:
            response = self.http().request("GET", url, preload_content=False)
            try:
                if response.status >= 400:
                    raise StorageError(f"fetch {redact(url)} failed: HTTP {response.status}")
                with target.open("wb") as f:
                    for chunk in response.stream(1 << 20):
                        f.write(chunk)
            finally:
                response.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            raise self._failed("fetch", url, exc) from None
        return target

    def get_bytes(self, url: str) -> bytes | None:
        """The body of a GET of ``url``; None when the server has no such object (404)."""
        import urllib3

        try:
            response = self.http().request("GET", url)
        except urllib3.exceptions.HTTPError as exc:
            raise self._failed("read", url, exc) from None
        if response.status == 404:
            return None
        if response.status >= 400:
            raise StorageError(f"read {redact(url)} failed: HTTP {response.status}")
        return bytes(response.data)

    def _failed(self, what: str, url: str, exc: Exception) -> StorageError:
        reason = redact(first_line(exc))
        tries = self.options.attempts
        return StorageError(f"{what} {redact(url)} failed after {tries} tries: {reason}")
