"""Storage servers on loopback for the contract suite, and one ``Store`` view of each.

A pytest plugin (tests/conftest.py names it in ``pytest_plugins``), so its fixtures reach every
test; its helpers come from the ``support`` package.

Each server starts once per session, on a free port, as a subprocess in its own session; it is
stopped by PID at the end (``support.serve``). Readiness is a bounded loop. The servers:

- moto (``s3_server`` in tests/conftest.py) and s3rver (npm): two independent S3 servers;
- gcp-storage-emulator (PyPI): Google Cloud Storage, reached through ``STORAGE_EMULATOR_HOST``;
- Azurite (npm): Azure Blob, the dev account ``devstoreaccount1`` in a connection string;
- and plain local folders.

A ``Store`` reads and writes objects with the store's own client (never through nbjob), so the
tests check what nbjob left there independently of nbjob's storage code. The npm servers come
from ``make venv`` (``.npm/``); where they are missing the tests are skipped, except under CI.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    S3Server,
    answers,
    free_port,
    s3_env,
    serve,
    starts_processes,
)

ROOT = Path(__file__).resolve().parents[2]
NPM_BIN = ROOT / ".npm" / "node_modules" / ".bin"

# Azurite's published development account (not a secret anywhere; still never to be logged).
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# s3rver accepts only the access key S3RVER; with --allow-mismatched-signatures any secret works.
S3RVER_SECRET = "nbjobS3rverSecret/Fake+Value=0042"
GCS_TOKEN = "ya29.nbjobFakeGoogleToken0123456789"


@dataclass
class Server:
    url: str
    pid: int


@starts_processes
def _server(name: str, argv: Callable[[int], list[str]], log_dir: Path) -> Iterator[Server]:
    """Start a server on a free port; ready when it answers HTTP (bounded); stopped by PID.

    SIGKILL after 1 s: a server may wait for idle keep-alive connections.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = log_dir / f"{name}.log"
    with serve(name, argv(port), log, ready=lambda: answers(url + "/"), grace=1) as server:
        yield Server(url, server.pid)


def _npm_tool(name: str) -> Path:
    tool = NPM_BIN / name
    if not tool.exists():
        message = f"{tool} is missing: run 'make venv' (needs npm)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return tool


@pytest.fixture(scope="session")
def s3rver_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tool, data = _npm_tool("s3rver"), tmp_path_factory.mktemp("s3rver")
    flags = ["-a", "127.0.0.1", "--silent", "--allow-mismatched-signatures", "--no-vhost-buckets"]
    yield from _server("s3rver", lambda p: [str(tool), "-d", str(data), *flags, "-p", str(p)], data)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tool = Path(sys.executable).with_name("gcp-storage-emulator")
    flags = ["start", "--host", "127.0.0.1", "--in-memory"]
    logs = tmp_path_factory.mktemp("gcs")
    yield from _server(
        "gcp-storage-emulator", lambda p: [str(tool), *flags, "--port", str(p)], logs
    )


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tool, data = _npm_tool("azurite-blob"), tmp_path_factory.mktemp("azurite")
    flags = [
        "--blobHost",
        "127.0.0.1",
        "--location",
        str(data),
        "--silent",
        "--skipApiVersionCheck",
    ]
    yield from _server("azurite", lambda p: [str(tool), *flags, "--blobPort", str(p)], data)


# -- one view of every store ----------------------------------------------------------------


@dataclass
class Store:
    """A store as the tests see it: URLs, nbjob's env, and the store's own client."""

    name: str
    env: dict[str, str]  # what nbjob needs to reach the store (credentials, endpoint)
    secrets: list[str]  # credential values in ``env`` that must never be written anywhere
    _new_root: Callable[[], str]
    _get: Callable[[str], bytes | None]  # URL -> bytes, None if there is no such object
    _put: Callable[[str, bytes], None]
    dead_env: Callable[[int], dict[str, str]] = lambda port: {}  # the store on a closed port
    presign: Callable[[str], str] | None = None  # URL -> signed https URL, where supported
    endpoint_url: str | None = None  # for Storage(endpoint_url) (S3)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def remote(self) -> bool:
        return self.name != "local"

    def new_root(self) -> str:
        """A fresh, empty bucket / container / folder, as a URL without a trailing slash."""
        return self._new_root()

    def get(self, url: str) -> bytes | None:
        return self._get(url)

    def put(self, url: str, data: bytes) -> None:
        self._put(url, data)


def _split(url: str) -> tuple[str, str]:
    bucket, _, key = url.split("://", 1)[1].partition("/")
    return bucket, key


def _unique() -> str:
    return f"nbjob-{uuid.uuid4().hex[:16]}"


def s3_store(name: str, endpoint: str, access_key: str, secret_key: str) -> Store:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    client = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=REGION
    ).client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}))
    env = {**s3_env(endpoint, access_key, secret_key), "NBJOB_S3_ADDRESSING_STYLE": "path"}

    def new_root() -> str:
        bucket = _unique()
        client.create_bucket(Bucket=bucket)
        return f"s3://{bucket}"

    def get(url: str) -> bytes | None:
        bucket, key = _split(url)
        try:
            return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError:
            return None

    def put(url: str, data: bytes) -> None:
        client.put_object(Bucket=_split(url)[0], Key=_split(url)[1], Body=data)

    def presign(url: str) -> str:
        bucket, key = _split(url)
        return str(
            client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600
            )
        )

    return Store(
        name,
        env,
        [secret_key, access_key] if access_key != "S3RVER" else [secret_key],
        new_root,
        get,
        put,
        dead_env=lambda port: {**env, "NBJOB_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"},
        presign=presign,
        endpoint_url=endpoint,
        extra={"client": client},
    )


def gcs_store(server: Server) -> Store:
    from google.api_core.exceptions import NotFound
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="nbjob-test", credentials=AnonymousCredentials())
    client._connection.API_BASE_URL = server.url  # the emulator, whatever the env says
    env = {"STORAGE_EMULATOR_HOST": server.url, "CLOUDSDK_AUTH_ACCESS_TOKEN": GCS_TOKEN}

    def new_root() -> str:
        bucket = _unique()
        client.create_bucket(bucket)
        return f"gs://{bucket}"

    def get(url: str) -> bytes | None:
        bucket, key = _split(url)
        try:
            return bytes(client.bucket(bucket).blob(key).download_as_bytes())
        except NotFound:
            return None

    def put(url: str, data: bytes) -> None:
        client.bucket(_split(url)[0]).blob(_split(url)[1]).upload_from_string(data)

    def presign(url: str) -> str:
        """A V4 signed URL made with a throwaway service-account key (the emulator ignores it)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from google.oauth2 import service_account

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        creds = service_account.Credentials.from_service_account_info(
            {
                "type": "service_account",
                "client_email": "nbjob-test@nbjob-test.iam.gserviceaccount.com",
                "private_key": pem,
                "private_key_id": "nbjob-test-key",
                "token_uri": "http://127.0.0.1:9/token",
            }
        )
        bucket, key_name = _split(url)
        return str(
            client.bucket(bucket)
            .blob(key_name)
            .generate_signed_url(
                version="v4",
                expiration=dt.timedelta(minutes=10),
                credentials=creds,
                api_access_endpoint=server.url,
            )
        )

    return Store(
        "gcs",
        env,
        [GCS_TOKEN],
        new_root,
        get,
        put,
        dead_env=lambda port: {**env, "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"},
        presign=presign,
    )


def azure_connection_string(url: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZ_ACCOUNT};AccountKey={AZ_KEY};"
        f"BlobEndpoint={url}/{AZ_ACCOUNT};"
    )


def azure_store(server: Server) -> Store:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

    conn = azure_connection_string(server.url)
    service = BlobServiceClient.from_connection_string(conn)
    env = {"AZURE_STORAGE_CONNECTION_STRING": conn}

    def new_root() -> str:
        container = _unique()
        service.create_container(container)
        return f"az://{container}"

    def get(url: str) -> bytes | None:
        try:
            return bytes(service.get_blob_client(*_split(url)).download_blob().readall())
        except ResourceNotFoundError:
            return None

    def put(url: str, data: bytes) -> None:
        service.get_blob_client(*_split(url)).upload_blob(data, overwrite=True)

    def presign(url: str) -> str:
        container, blob = _split(url)
        sas = generate_blob_sas(
            AZ_ACCOUNT,
            container,
            blob,
            account_key=AZ_KEY,
            permission=BlobSasPermissions(read=True),
            expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10),
        )
        return f"{server.url}/{AZ_ACCOUNT}/{container}/{blob}?{sas}"

    return Store(
        "azurite",
        env,
        [AZ_KEY, conn],
        new_root,
        get,
        put,
        dead_env=lambda port: {
            "AZURE_STORAGE_CONNECTION_STRING": azure_connection_string(f"http://127.0.0.1:{port}")
        },
        presign=presign,
        extra={"service": service},
    )


def local_store(base: Path) -> Store:
    def new_root() -> str:
        folder = base / _unique()
        folder.mkdir()
        return str(folder)

    def get(url: str) -> bytes | None:
        path = Path(url)
        return path.read_bytes() if path.is_file() else None

    def put(url: str, data: bytes) -> None:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        Path(url).write_bytes(data)

    return Store("local", {}, [], new_root, get, put)


STORES = ["local", "moto", "s3rver", "gcs", "azurite"]


@pytest.fixture(params=STORES)
@starts_processes  # the servers are picked by request.getfixturevalue, which no scan can see
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Each store in turn: local folders, moto, s3rver, the GCS emulator, Azurite."""
    name = request.param
    if name == "local":
        return local_store(tmp_path_factory.mktemp("local-store"))
    if name == "moto":
        moto: S3Server = request.getfixturevalue("s3_server")
        return s3_store("moto", moto.endpoint_url, ACCESS_KEY, SECRET_KEY)
    if name == "s3rver":
        server: Server = request.getfixturevalue("s3rver_server")
        return s3_store("s3rver", server.url, "S3RVER", S3RVER_SECRET)
    if name == "gcs":
        return gcs_store(request.getfixturevalue("gcs_server"))
    return azure_store(request.getfixturevalue("azurite_server"))
