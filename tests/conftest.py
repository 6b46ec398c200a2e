"""Shared fixtures: a real S3-compatible server on loopback, and a flaky proxy in front of it.

- ``s3_server`` (session): moto's standalone server as a subprocess, stopped by PID at the end.
  It yields an ``S3Server`` with ``endpoint_url``, a boto3 ``client`` and ``env`` (fake
  credentials and ``NBJOB_S3_ENDPOINT_URL``) to pass to ``nbjob``.
- ``bucket``: a fresh, uniquely named bucket on that server (each test gets its own).
- ``flaky_proxy``: a factory ``flaky_proxy(fail_first=N)`` for an HTTP proxy in front of moto that
  answers 503 to the first N requests and then forwards (``hold="run.json", hold_s=S``: holds
  the first request for such a path S seconds); ``proxy.vanish()`` closes it so that
  later requests get "connection refused". Proxies are stopped after the test.

Helpers (notebooks, running ``nbjob``, servers, waiting) live in the ``support`` package, which
is also the plugin that marks tests that start processes ``e2e`` (``make test-fast`` leaves them
out). The storage servers and the ``store`` fixture come from tests/storage/stores.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("support")  # before the import: helpers' asserts explain

from support import FlakyProxy, S3Server, moto_server, starts_processes  # noqa: E402

sys.path.insert(0, str(Path(__file__).with_name("storage")))
pytest_plugins = ["support.e2e", "stores", "pytester"]


@pytest.fixture(scope="session")
@starts_processes
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A new bucket, unique to this test."""
    return s3_server.new_bucket()


@pytest.fixture
def flaky_proxy(s3_server: S3Server) -> Iterator[Callable[..., FlakyProxy]]:
    """Factory: ``flaky_proxy(fail_first=3, status=503)`` -> a FlakyProxy in front of moto."""
    proxies: list[FlakyProxy] = []

    def make(
        fail_first: int = 0, status: int = 503, hold: str | None = None, hold_s: float = 0.0
    ) -> FlakyProxy:
        proxy = FlakyProxy(s3_server.endpoint_url, fail_first, status, hold, hold_s)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.vanish()
