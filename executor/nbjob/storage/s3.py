"""s3:// on AWS S3 and S3-compatible stores (IBM COS, MinIO, Ceph) through boto3.

Credentials come from boto3's standard chain; ``endpoint_url`` (``--s3-endpoint-url``,
``NBJOB_S3_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL``) points it at another store and
``--s3-addressing-style`` (``NBJOB_S3_ADDRESSING_STYLE``) picks path or virtual-host
addressing. Files above 8 MiB go up as multipart uploads in 8 MiB parts, through one transfer
manager per backend: at most ``PART_THREADS`` parts in flight (and buffered) however many big
files are sent at once. One client serves every thread (bench/artifacts.py: a client per
artifact thread cost a third more CPU and twice the memory). botocore's default CRC32 checksums
stay on (``aws s3 sync`` sends them too): without them the bench used ~10 % less CPU and no
less time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from .base import (
    CHUNK_THRESHOLD,
    CLIENT_TRIES,
    Backend,
    Options,
    first_line,
    need_key,
    split_url,
    target_in,
)
from .retry import RETRY_STATUS, with_retries

EXAMPLE = "s3://bucket/key"
PART_BYTES = CHUNK_THRESHOLD  # multipart part size
PART_THREADS = 10  # parts in flight, across every big file being sent
# Connections kept open: the artifact stream's workers plus the part threads (botocore's
# default, 10, makes it drop and reopen connections when they overlap).
POOL_CONNECTIONS = 32


class S3Backend(Backend):
    credential_env: ClassVar[tuple[str, ...]] = (
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "COS_HMAC_SECRET_ACCESS_KEY",
        "NBJOB_S3_SECRET_ACCESS_KEY",
    )
    # Presigned URLs: SigV4 (X-Amz-*), SigV2 and IBM COS (Signature, AWSAccessKeyId).
    secret_params: ClassVar[tuple[str, ...]] = (
        "X-Amz-Signature",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "Signature",
        "AWSAccessKeyId",
    )

    def __init__(self, options: Options | None = None) -> None:
        super().__init__(options)
        self._s3: Any = None
        self._transfers: Any = None

    def s3(self) -> Any:
        """The one boto3 client (made on first use, once, however many threads ask)."""
        if self._s3 is None:
            with self.client_lock:
                if self._s3 is None:
                    self._s3 = self._make_client()
        return self._s3

    def _make_client(self) -> Any:
        import boto3  # imported here: most runs never touch S3, and it costs ~0.3 s
        from botocore.config import Config

        tries = min(self.options.attempts, CLIENT_TRIES)
        config = Config(
            retries={"max_attempts": tries, "mode": "standard"},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            s3={"addressing_style": self.options.addressing_style},
            max_pool_connections=POOL_CONNECTIONS,
        )
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url or None, config=config
        )

    def transfers(self) -> Any:
        """One transfer manager for every multipart upload: its threads and part buffers are
        shared, so several big files at once stay within ``PART_THREADS`` parts in flight
        (boto3's ``upload_file`` makes a manager of its own, 10 threads, for every call)."""
        if self._transfers is None:
            client = self.s3()
            with self.client_lock:
                if self._transfers is None:
                    from boto3.s3.transfer import TransferConfig, create_transfer_manager

                    config = TransferConfig(
                        multipart_threshold=CHUNK_THRESHOLD,
                        multipart_chunksize=PART_BYTES,
                        max_concurrency=PART_THREADS,
                    )
                    self._transfers = create_transfer_manager(client, config)
        return self._transfers

    def fetch(self, url: str, dest_dir: Path) -> Path:
        bucket, key = split_url(url, "an S3", EXAMPLE)
        need_key(url, key, "an S3", EXAMPLE)
        target = target_in(dest_dir, url)
        with_retries(
            self, "download", url, lambda: self.s3().download_file(bucket, key, str(target))
        )
        return target

    def put_bytes(self, url: str, data: bytes, content_type: str = "application/json") -> None:
        bucket, key = split_url(url, "an S3", EXAMPLE)
        with_retries(
            self,
            "upload",
            url,
            lambda: self.s3().put_object(
                Bucket=bucket, Key=key, Body=data, ContentType=content_type
            ),
        )

    def put_file(self, url: str, path: Path, content_type: str | None = None) -> None:
        bucket, key = split_url(url, "an S3", EXAMPLE)
        extra = {"ContentType": content_type} if content_type else {}

        def upload() -> None:
            if path.stat().st_size <= CHUNK_THRESHOLD:  # one request, no transfer threads
                with path.open("rb") as f:
                    self.s3().put_object(Bucket=bucket, Key=key, Body=f, **extra)
            else:
                self.transfers().upload(str(path), bucket, key, extra_args=extra).result()

        with_retries(self, "upload", url, upload)

    def create_exclusive(self, url: str, data: bytes) -> bool:
        """PutObject with ``If-None-Match: *``: 412 (the key exists) or 409 (another
        conditional write to it is under way) is False. Stores that ignore the header (older
        MinIO, s3rver) overwrite: ``nbjob.lease`` reads its lease back to notice that."""
        from botocore.exceptions import ClientError

        bucket, key = split_url(url, "an S3", EXAMPLE)

        def put() -> bool:
            try:
                self.s3().put_object(
                    Bucket=bucket,
                    Key=key,
                    Body=data,
                    ContentType="application/json",
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status in (409, 412):
                    return False
                raise
            return True

        return with_retries(self, "create", url, put)

    def remove(self, url: str) -> None:
        bucket, key = split_url(url, "an S3", EXAMPLE)
        with_retries(self, "remove", url, lambda: self.s3().delete_object(Bucket=bucket, Key=key))

    def get_bytes(self, url: str) -> bytes | None:
        from botocore.exceptions import ClientError

        bucket, key = split_url(url, "an S3", EXAMPLE)

        def get() -> bytes | None:
            try:
                return bytes(self.s3().get_object(Bucket=bucket, Key=key)["Body"].read())
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise

        return with_retries(self, "read", url, get)

    def list_names(self, url: str) -> list[str]:
        bucket, key = split_url(url, "an S3", EXAMPLE)
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""

        def names() -> list[str]:
            pages = (
                self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            )
            return sorted(o["Key"][len(prefix) :] for p in pages for o in p.get("Contents", []))

        return with_retries(self, "list", url, names)

    def classify(self, exc: Exception) -> tuple[bool, str]:
        """(worth retrying?, one-line reason) for an S3 error; anything else is re-raised."""
        from boto3.exceptions import Boto3Error, RetriesExceededError
        from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        if isinstance(exc, Boto3Error) and isinstance(exc.__context__, ClientError | BotoCoreError):
            exc = exc.__context__  # upload_file wraps the S3 error in S3UploadFailedError
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            return status in RETRY_STATUS, f"{code or status} {err.get('Message', '')}".strip()
        if isinstance(exc, BotoConnectionError | HTTPClientError | RetriesExceededError | OSError):
            return True, first_line(exc)
        if isinstance(exc, BotoCoreError | Boto3Error):  # no credentials, bad parameters...
            return False, " ".join(str(exc).split())[:300] or type(exc).__name__
        raise exc
