"""S3 on loopback: moto's standalone server, fake credentials, and a view of the server.

The credentials are distinctive: tests grep for them to prove they are never written anywhere.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .e2e import starts_processes
from .net import free_port, serves
from .processes import serve

__all__ = ["ACCESS_KEY", "REGION", "SECRET_KEY", "S3Server", "moto_server", "s3_env"]

ACCESS_KEY = "AKIATESTNBJOB00000001"
SECRET_KEY = "nbjobTestSecret/With+Special=Chars0123"
REGION = "us-east-1"


def s3_env(
    endpoint: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY
) -> dict[str, str]:
    """What ``nbjob`` needs to reach ``endpoint``: credentials, region, nothing from ~/.aws."""
    return {
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,  # nothing from the machine's ~/.aws
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NBJOB_S3_ENDPOINT_URL": endpoint,
    }


@dataclass
class S3Server:
    endpoint_url: str
    client: Any  # boto3 S3 client with the fake credentials
    pid: int
    env: dict[str, str] = field(default_factory=dict)

    def env_for(self, endpoint_url: str | None = None) -> dict[str, str]:
        """``env`` with another endpoint (e.g. a proxy's URL)."""
        return {**self.env, "NBJOB_S3_ENDPOINT_URL": endpoint_url or self.endpoint_url}

    def new_bucket(self) -> str:
        name = f"nbjob-test-{uuid.uuid4().hex[:16]}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())


@starts_processes
@contextlib.contextmanager
def moto_server(log_dir: Path) -> Iterator[S3Server]:
    """moto's server, ``moto_server -H 127.0.0.1 -p PORT``, for a ``with`` block."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = Path(sys.executable).with_name("moto_server")
    argv = [str(moto), "-H", "127.0.0.1", "-p", str(port)]
    ready = functools.partial(serves, endpoint + "/")
    with serve("moto_server", argv, log_dir / "moto.log", ready=ready, timeout=30) as server:
        client = boto3.session.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
        ).client("s3", endpoint_url=endpoint)
        yield S3Server(endpoint, client, server.pid, s3_env(endpoint))
