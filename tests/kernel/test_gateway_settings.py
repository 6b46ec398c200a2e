"""Which kernel session the settings choose, and what of the gateway settings may be written."""

from __future__ import annotations

from pathlib import Path

import pytest
from nbjob import config, logs
from nbjob.errors import UsageError
from nbjob.kernel import gateway_token, open_session, session_kind
from nbjob.kernel.rest import safe_url

URL = "http://127.0.0.1:8888"


def settings(env: dict[str, str], **flags: str) -> config.Settings:
    return config.resolve({"source": "nb.ipynb", **flags}, env)


def test_the_gateway_url_chooses_the_gateway_kind(tmp_path: Path) -> None:
    assert session_kind(settings({}), {}) == "local"
    assert session_kind(settings({}, gateway_url=URL), {}) == "gateway"
    assert session_kind(settings({"NBJOB_GATEWAY_URL": URL}), {}) == "gateway"
    environ = {"JUPYTER_GATEWAY_URL": URL}  # jupyter_server's own variable works too
    assert session_kind(settings(environ), environ) == "gateway"
    session = open_session(settings({}, gateway_url=URL), "python3", tmp_path, workdir=tmp_path)
    assert session.kind == "gateway" and session.describe()["gateway_url"] == URL
    local = open_session(settings({}), "python3", tmp_path, workdir=tmp_path, environ={})
    assert local.kind == "local" and local.describe() == {"kind": "local"}


def test_token_variables_and_request_timeout() -> None:
    both = {"NBJOB_GATEWAY_AUTH_TOKEN": "nbjob-one", "JUPYTER_GATEWAY_AUTH_TOKEN": "jupyter-one"}
    assert gateway_token(both) == "nbjob-one"
    assert gateway_token({"JUPYTER_GATEWAY_AUTH_TOKEN": "jupyter-one"}) == "jupyter-one"
    assert gateway_token({}) is None
    assert settings({"NBJOB_GATEWAY_REQUEST_TIMEOUT": "5"}).gateway_request_timeout == 5.0
    assert settings({}).gateway_request_timeout == 60.0
    with pytest.raises(UsageError, match="--gateway-request-timeout"):
        settings({}, gateway_request_timeout="0")


def test_gateway_url_is_written_without_credentials() -> None:
    assert safe_url("https://user:pw@gw.example:8443/base/?token=abc") == (
        "https://gw.example:8443/base"
    )
    assert safe_url("http://[::1]:8888") == "http://[::1]:8888"


@pytest.mark.parametrize("name", ["JUPYTER_GATEWAY_AUTH_TOKEN", "NBJOB_GATEWAY_AUTH_TOKEN"])
def test_gateway_tokens_are_scrubbed_from_logs(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    token = "gatewayTokenValue-0042"
    monkeypatch.setenv(name, token)
    monkeypatch.setattr(logs, "_secrets", None)  # read from the environment
    assert logs.redact(f"Authorization: token {token}") == "Authorization: token REDACTED"
