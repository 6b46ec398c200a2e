"""Read and write by URL: local paths, file://, https:// (incl. presigned) and s3://.

S3 goes through boto3's standard credential chain; ``endpoint_url`` (or ``AWS_ENDPOINT_URL``)
points it at IBM COS, MinIO or Ceph. Transient errors are retried with exponential backoff;
what still fails raises ``StorageError`` with a one-line, credential-free reason.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from nbjob.errors import InvalidInputError, StorageError
from nbjob.logs import redact

ATTEMPTS = 5  # per operation, the first try included
BACKOFF_S = 0.5  # doubled after each failed try
_RETRY_STATUS = (408, 429, 500, 502, 503, 504)


def scheme(url: str) -> str:
    return urlsplit(url).scheme.lower() if "://" in url else ""


def is_local(url: str) -> bool:
    return scheme(url) in ("", "file")


def local_path(url: str) -> Path:
    return Path(unquote(urlsplit(url).path)) if scheme(url) == "file" else Path(url)


def split_s3(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if not parts.netloc:
        raise InvalidInputError(f"{url}: an S3 URL needs a bucket (s3://bucket/key)")
    return parts.netloc, parts.path.lstrip("/")


def join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name if not is_local(base) else str(local_path(base) / name)


class Storage:
    """One object per run: holds the S3 client (created on first use) and the HTTP pool."""

    def __init__(self, endpoint_url: str | None = None) -> None:
        self.endpoint_url = endpoint_url
        self._s3: Any = None
        self._http: Any = None

    # -- clients -----------------------------------------------------------------------------

    def s3(self) -> Any:
        if self._s3 is None:
            import boto3  # imported here: most runs never touch S3, and it costs ~0.3 s
            from botocore.config import Config

            config = Config(
                retries={"max_attempts": ATTEMPTS, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                s3={"addressing_style": os.environ.get("NBJOB_S3_ADDRESSING_STYLE", "auto")},
            )
            self._s3 = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url or None, config=config
            )
        return self._s3

    def http(self) -> Any:
        if self._http is None:
            import urllib3

            retries = urllib3.Retry(
                total=ATTEMPTS - 1,
                backoff_factor=BACKOFF_S,
                status_forcelist=_RETRY_STATUS,
                allowed_methods=None,
                raise_on_status=True,
            )
            self._http = urllib3.PoolManager(retries=retries, timeout=urllib3.Timeout(10, 60))
        return self._http

    # -- reading -----------------------------------------------------------------------------

    def fetch(self, url: str, dest_dir: Path) -> Path:
        """Return a local path holding ``url``: local paths as they are, remote ones downloaded."""
        kind = scheme(url)
        if kind in ("", "file"):
            path = local_path(url)
            if not path.exists():
                raise InvalidInputError(f"source not found: {path}")
            return path
        name = Path(urlsplit(url).path).name or "bundle"
        target = dest_dir / name
        if kind == "s3":
            bucket, key = split_s3(url)
            if not key or key.endswith("/"):
                raise InvalidInputError(
                    f"{url}: an S3 source needs an object key (s3://bucket/key)"
                )
            self._s3_call(
                "download", url, lambda: self.s3().download_file(bucket, key, str(target))
            )
        elif kind in ("http", "https"):
            self._download_http(url, target)
        else:
            raise InvalidInputError(f"unsupported source scheme {kind!r} in {redact(url)}")
        return target

    def _download_http(self, url: str, target: Path) -> None:
        import urllib3

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
                f"fetch {redact(url)} failed after {ATTEMPTS} tries: {redact(_first_line(exc))}"
            ) from None

    # -- writing -----------------------------------------------------------------------------

    def put_bytes(self, url: str, data: bytes, content_type: str = "application/json") -> None:
        if is_local(url):
            _atomic_write(local_path(url), data)
        elif scheme(url) == "s3":
            bucket, key = split_s3(url)
            self._s3_call(
                "upload",
                url,
                lambda: self.s3().put_object(
                    Bucket=bucket, Key=key, Body=data, ContentType=content_type
                ),
            )
        else:
            raise StorageError(f"cannot write results to {redact(url)}: use a folder or s3://")

    def put_file(self, url: str, path: Path) -> None:
        if is_local(url):
            target = local_path(url)
            if target.resolve() != path.resolve():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                shutil.copyfile(path, tmp)
                os.replace(tmp, target)
        elif scheme(url) == "s3":
            bucket, key = split_s3(url)
            self._s3_call("upload", url, lambda: self.s3().upload_file(str(path), bucket, key))
        else:
            raise StorageError(f"cannot write results to {redact(url)}: use a folder or s3://")

    def check_writable(self, url: str) -> None:
        """Fail early (before any cell runs) when the destination cannot be written."""
        if is_local(url):
            try:
                local_path(url).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create results folder {url}: {exc.strerror}") from None
        elif scheme(url) != "s3":
            raise StorageError(f"cannot write results to {redact(url)}: use a folder or s3://")

    def _s3_call(self, what: str, url: str, call: Any) -> None:
        """Run ``call`` with retries on top of botocore's own (connection refused, resets)."""
        delay = BACKOFF_S
        for attempt in range(1, ATTEMPTS + 1):
            try:
                call()
                return
            except Exception as exc:
                transient, reason = _s3_error(exc)
                if not transient:
                    raise StorageError(f"{what} {url} failed: {redact(reason)}") from None
                if attempt == ATTEMPTS:
                    raise StorageError(
                        f"{what} {url} failed after {ATTEMPTS} tries: {redact(reason)}"
                    ) from None
            time.sleep(delay)
            delay *= 2


def _s3_error(exc: Exception) -> tuple[bool, str]:
    """(worth retrying?, one-line reason) for what an S3 call raised; anything else re-raised."""
    from boto3.exceptions import Boto3Error, RetriesExceededError
    from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, Boto3Error) and isinstance(exc.__context__, ClientError | BotoCoreError):
        exc = exc.__context__  # upload_file wraps the S3 error in S3UploadFailedError
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status in _RETRY_STATUS, f"{code or status} {err.get('Message', '')}".strip()
    if isinstance(exc, BotoConnectionError | HTTPClientError | RetriesExceededError | OSError):
        return True, _first_line(exc)
    if isinstance(exc, BotoCoreError | Boto3Error):  # no credentials, bad parameters...
        return False, " ".join(str(exc).split())[:300] or type(exc).__name__
    raise exc


def _first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
