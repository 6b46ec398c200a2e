"""Masking: the secret values nbjob knows, replaced in every notebook and report it stores.

As CI systems mask secrets in their logs, nbjob masks the values it knows to be secret
wherever they appear in what it stores — a cell that prints ``os.environ`` does not publish
the AWS key: its outputs, its tracebacks, the widget state, nbjob's own error banners, the
HTML report (run.json and the log are scrubbed by ``nbjob.logs``, always). The values it
knows (``known_secrets``): every storage backend's credential variables (the storage
registry's ``credential_env``, a GCS key file's private key and the secrets inside an Azure
connection string included), the gateway token, and the secrets of the URLs it was given
(presigned-URL signatures and credentials, a ``user:password@``). Each is replaced by
``MASK``; values shorter than ``MIN_LENGTH`` (8) characters are left alone, here and in the log
(masking the dummy credential ``test`` would garble ordinary output and hide nothing).

A ``Masker`` is built once per run (``for_run``) and masks serialized JSON documents
(``json_bytes``): one substring search per form of each value (2-25 ms a value for a 20 MB
notebook, whose serialization takes ~400 ms), and nothing when there is no secret to mask.
The kernel is untouched: only what nbjob stores is masked. ``--no-mask-secrets``
(``NBJOB_NO_MASK_SECRETS=1``) turns it off. A secret nbjob cannot know (one a cell reads from
a file, or builds) stays the user's business.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from nbjob import logs

__all__ = ["MASK", "MIN_LENGTH", "Masker", "for_run", "known_secrets", "url_secrets"]

MASK = "REDACTED"  # the word nbjob's log and run.json use for what they scrub
MIN_LENGTH = logs.MIN_SECRET_LENGTH  # one threshold for what is stored and what is logged


class Masker:
    """Replaces known secret values in text and in serialized JSON."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first: a connection string is replaced whole before the key inside it.
        self.values = tuple(
            sorted({s for s in secrets if len(s) >= MIN_LENGTH}, key=len, reverse=True)
        )
        # In serialized JSON a value appears escaped (with or without ``ensure_ascii``); its raw
        # form differs only when it holds a quote, a backslash or a control character, and then
        # would match the document's structure, never a string's content.
        forms: dict[bytes, None] = {}
        for value in self.values:
            for text in (_json_inner(value, False), _json_inner(value, True)):
                forms[text.encode("utf-8", "surrogatepass")] = None
        self._forms = tuple(forms)

    def __bool__(self) -> bool:
        return bool(self.values)

    def text(self, text: str) -> str:
        """``text`` with every known secret replaced by ``MASK``."""
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def json_bytes(self, data: bytes) -> bytes:
        """A serialized JSON document (a notebook, run.json) with every known secret masked
        in its strings: the value as it is, and as JSON escapes it (the masked document is
        still valid JSON: ``MASK`` needs no escaping)."""
        for form in self._forms:
            if form in data:
                data = data.replace(form, MASK.encode())
        return data

    def notebook(self, nb: Any) -> Any:
        """A masked copy of the notebook ``nb`` (for rendering), or ``nb`` itself when there is
        nothing to mask."""
        if not self:
            return nb
        import nbformat

        text = json.dumps(nb, ensure_ascii=False)
        return nbformat.from_dict(json.loads(self.json_bytes(text.encode()).decode()))


def _json_inner(value: str, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)[1:-1]


def url_secrets(url: str | None) -> list[str]:
    """The secret parts of ``url``: the values of its signature and credential query
    parameters (as written and decoded) and the password of a ``user:password@``."""
    if not url or "://" not in url:
        return []
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found = [password, unquote(password)] if password else []
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if value and logs.is_secret_param(unquote(name)):
            found += [value, unquote(value)]
    return found


def known_secrets(environ: Mapping[str, str], urls: Iterable[str | None] = ()) -> list[str]:
    """Every secret value nbjob knows: the credentials in ``environ`` (every storage backend's
    and the gateway token) and those inside ``urls``."""
    found = list(logs.secret_values(environ))
    for url in urls:
        found += url_secrets(url)
    return found


def for_run(settings: Any, environ: Mapping[str, str] | None = None) -> Masker:
    """The run's masker: its settings' URLs and the environment's credentials; one that masks
    nothing with ``--no-mask-secrets``."""
    if getattr(settings, "no_mask_secrets", False):
        return Masker()
    environ = os.environ if environ is None else environ
    urls = (
        settings.source,
        settings.output,
        getattr(settings, "dest", None),
        getattr(settings, "gateway_url", None),
        getattr(settings, "s3_endpoint_url", None),
        environ.get("JUPYTER_GATEWAY_URL"),
    )
    return Masker(known_secrets(environ, urls))
