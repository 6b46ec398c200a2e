"""Artifacts sent to S3 at the end of a run: many files at once, through one client.

``ArtifactStream.flush`` sends every file on 8 threads, big files (in parts) first. The threads
share the backend's one boto3 client and one transfer manager (a client made per thread costs
~0.1 s of CPU each and a connection pool of its own; see bench/artifacts.py). Against moto on
loopback, and through a proxy that answers 503 to the first requests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3.session
import pytest
from nbjob.artifacts import ArtifactStream, scan
from nbjob.storage import Options, Storage
from support import S3Server
from support.proxy import FlakyProxy

BIG = 9 * 1024 * 1024 + 4099  # above the 8 MiB multipart threshold: two parts


def artifact_set(folder: Path, big: int, small: int) -> dict[str, bytes]:
    files = {f"model/part{i}.bin": os.urandom(BIG) for i in range(big)}
    files.update({f"logs/{i:03d}.txt": os.urandom(1000 + i) for i in range(small)})
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


def count_clients(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every boto3 client made from now on (its service name)."""
    made: list[str] = []
    original = boto3.session.Session.client

    def client(self: Any, service: str, *args: Any, **kwargs: Any) -> Any:
        made.append(service)
        return original(self, service, *args, **kwargs)

    monkeypatch.setattr(boto3.session.Session, "client", client)
    return made


def flush(endpoint: str, url: str, folder: Path) -> int:
    stream = ArtifactStream(Storage(Options(endpoint)), url, folder)
    try:
        return stream.flush()
    finally:
        stream.close()


def test_a_flush_sends_every_byte_through_one_client(
    s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    files = artifact_set(tmp_path, big=3, small=40)
    made = count_clients(monkeypatch)
    assert flush(s3_server.endpoint_url, f"s3://{bucket}/r/artifacts", tmp_path) == len(files)
    assert made == ["s3"]  # 8 threads asked for it at once
    assert s3_server.keys(bucket) == sorted(f"r/artifacts/{n}" for n in files)
    for name, data in files.items():
        assert s3_server.get(bucket, f"r/artifacts/{name}") == data, name
    for i in range(3):  # big files went up in parts: the ETag of a multipart upload ends "-2"
        head = s3_server.client.head_object(Bucket=bucket, Key=f"r/artifacts/model/part{i}.bin")
        assert re.fullmatch(r'"?[0-9a-f]{32}-2"?', head["ETag"]), head["ETag"]


def test_big_artifacts_are_sent_again_after_503s(
    s3_server: S3Server,
    bucket: str,
    flaky_proxy: Callable[..., FlakyProxy],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    proxy = flaky_proxy(fail_first=6, status=503)
    files = artifact_set(tmp_path, big=2, small=0)
    assert flush(proxy.url, f"s3://{bucket}/artifacts", tmp_path) == 2
    assert proxy.failed == 6
    for name, data in files.items():
        assert s3_server.get(bucket, f"artifacts/{name}") == data, name


def test_big_files_are_sent_first_then_the_rest_newest_first(tmp_path: Path) -> None:
    """Longest first: a big file's parts overlap the small files instead of trailing them."""
    oldest_first = ["old-big.bin", "old.txt", "mid.txt", "new-big.bin", "new.txt"]
    for second, name in enumerate(oldest_first, start=1):
        (tmp_path / name).write_bytes(b"x" * (BIG if "big" in name else 10))
        os.utime(tmp_path / name, ns=(second * 10**9, second * 10**9))
    stream = ArtifactStream(Storage(Options()), "s3://bucket/artifacts", tmp_path)
    try:
        assert stream.pending(scan(tmp_path)) == [
            "new-big.bin",
            "old-big.bin",
            "new.txt",
            "mid.txt",
            "old.txt",
        ]
    finally:
        stream.close()
