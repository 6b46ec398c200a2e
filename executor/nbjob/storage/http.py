"""https:// and http:// sources: a plain GET, e.g. of a presigned S3 / GCS URL or an Azure SAS URL.

Results cannot be written to an https:// URL (use the store's own scheme). urllib3 retries
connection errors and 408/429/5xx with backoff; the signature in the query string is never shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from nbjob.errors import StorageError
from nbjob.logs import redact

from .base import CLIENT_TRIES, Backend, first_line, target_in
from .retry import BACKOFF_S, RETRY_STATUS, attempts


class HttpBackend(Backend):
    schemes: ClassVar[tuple[str, ...]] = ("http", "https")
    writable: ClassVar[bool] = False

    def __init__(self, endpoint_url: str | None = None) -> None:
        super().__init__(endpoint_url)
        self._http: Any = None

    def http(self) -> Any:
        if self._http is None:
            import urllib3

            retries = urllib3.Retry(
                total=min(attempts(), CLIENT_TRIES + 1) - 1,
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
            raise StorageError(
                f"fetch {redact(url)} failed after {attempts()} tries: {redact(first_line(exc))}"
            ) from None
        return target
