"""HTTP and websocket access to a Jupyter Server / Kernel Gateway / Enterprise Gateway.

Plain ``urllib`` for the REST API and ``websocket-client`` for the kernel channels. The token
travels only in the ``Authorization`` header; ``safe_url`` is the address without credentials,
for logs and run.json. Every failure becomes an ``EnvironmentUnfitError`` (exit 7) with a
one-line reason that never contains the token.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from nbjob.errors import EnvironmentUnfitError


class GatewayError(EnvironmentUnfitError):
    """The gateway answered with an HTTP error (``http_status``) or could not be reached (0)."""

    def __init__(self, reason: str, status: int = 0) -> None:
        super().__init__(reason, http_status=status)
        self.http_status = status


def safe_url(url: str) -> str:
    """``url`` without user:password and without its query string."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class GatewayAPI:
    """REST calls and websocket connections to one server, with its token and time limit."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        if not url.startswith(("http://", "https://")):
            raise EnvironmentUnfitError(f"gateway URL must be http(s)://...: {safe_url(url)!r}")
        self.base = safe_url(url)
        self.token = token or ""
        self.timeout = timeout
        self._opener = urllib.request.build_opener()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        return headers

    def url(self, path: str, **query: str) -> str:
        quoted = urllib.parse.quote(path.lstrip("/"), safe="/")
        return f"{self.base}/{quoted}" + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The decoded JSON answer (None when empty); GatewayError for HTTP and network errors."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url(path, **(query or {})), data=data, method=method, headers=self._headers()
        )
        try:
            with self._opener.open(request, timeout=timeout or self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(method, path, exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GatewayError(f"kernel gateway {self.base} cannot be reached: {reason}") from None
        return json.loads(raw) if raw.strip() else None

    def _http_error(self, method: str, path: str, exc: urllib.error.HTTPError) -> GatewayError:
        if exc.code in (401, 403):
            return GatewayError(
                f"kernel gateway {self.base} refused the credentials (HTTP {exc.code}); check "
                "JUPYTER_GATEWAY_AUTH_TOKEN / NBJOB_GATEWAY_AUTH_TOKEN",
                exc.code,
            )
        try:
            detail = json.loads(exc.read() or b"{}").get("message") or exc.reason
        except (ValueError, AttributeError, OSError):
            detail = exc.reason
        detail = str(detail).replace(self.token, "REDACTED") if self.token else str(detail)
        return GatewayError(
            f"kernel gateway {self.base}: {method} {path} answered HTTP {exc.code}: {detail[:200]}",
            exc.code,
        )

    def websocket(self, path: str, timeout: float, **query: str) -> Any:
        """A connected websocket to ``path`` (ws:// or wss:// like the base URL), TCP_NODELAY."""
        import websocket

        url = "ws" + self.url(path, **query)[4:]
        headers = [f"Authorization: token {self.token}"] if self.token else []
        try:
            return websocket.create_connection(
                url,
                timeout=timeout,
                header=headers,
                sockopt=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                enable_multithread=True,
            )
        except websocket.WebSocketBadStatusException as exc:
            code = int(getattr(exc, "status_code", 0) or 0)
            if code in (401, 403):
                raise GatewayError(
                    f"kernel gateway {self.base} refused the credentials for the kernel "
                    f"channels (HTTP {code})",
                    code,
                ) from None
            raise GatewayError(
                f"kernel gateway {self.base}: kernel channels answered HTTP {code}", code
            ) from None
        except (websocket.WebSocketException, OSError) as exc:
            raise GatewayError(
                f"kernel gateway {self.base}: kernel channels cannot be opened: {exc}"
            ) from None
