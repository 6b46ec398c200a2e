"""The Backend interface: what every storage implementation provides, and shared helpers.

A backend is one class in one module (``local.py``, ``s3.py``...) listed in the registry in
``nbjob/storage/__init__.py``. It declares what it can do (``capabilities``: read, list, write;
a destination is checked against them before the kernel starts), the environment variables that
hold its credentials (``credential_env``: their values are scrubbed from every log, record and
message) and the URL query / connection-string parameters that carry secrets
(``secret_params``). Declarations are class attributes of modules that import no client library,
so gathering them is cheap. Its ``classify`` tells the shared retry loop (``retry.py``) whether
an exception is worth another try, with a one-line reason. ``Options`` (endpoint, time budget,
tries) is built once from the settings and given to every backend.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from nbjob.errors import InvalidInputError

# Files above this size are uploaded in parts (S3 multipart, GCS resumable, Azure blocks), so a
# failed part is retried alone and memory stays flat.
CHUNK_THRESHOLD = 8 * 1024 * 1024
CHUNK_SIZE = 8 * 1024 * 1024
CONNECT_TIMEOUT_S = 5.0  # at most; less with a short --storage-timeout
TIMEOUT_S = 60.0  # --storage-timeout: how long the store may fail to answer before exit 6
CLIENT_TRIES = 2  # tries of one request inside a client (the retry loop adds its own)
ATTEMPTS = 5  # tries per operation, the first included (--storage-attempts)


@dataclass(frozen=True)
class Options:
    """How every backend of a run reaches its store: one object, built from the settings
    (``config.storage_options``), so no backend reads an ``NBJOB_*`` variable itself."""

    endpoint_url: str | None = None  # --s3-endpoint-url (None: boto3's own, AWS_ENDPOINT_URL)
    timeout: float = TIMEOUT_S  # --storage-timeout
    attempts: int = ATTEMPTS  # --storage-attempts, per operation
    addressing_style: str = "auto"  # --s3-addressing-style: auto, path or virtual

    # The setting (a ``config.Settings`` field) each option comes from.
    SETTINGS: ClassVar[dict[str, str]] = {
        "endpoint_url": "s3_endpoint_url",
        "timeout": "storage_timeout",
        "attempts": "storage_attempts",
        "addressing_style": "s3_addressing_style",
    }

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Options:
        """The options in ``settings`` (setting name -> value)."""
        return cls(**{option: settings[name] for option, name in cls.SETTINGS.items()})


class Capability(str, Enum):
    """What a backend can do with a URL; a run needs READ of its source and READ, LIST and
    WRITE of its destination (earlier attempts are read and listed there before results are
    written). EXCLUSIVE (create an object only if it is absent, and remove it) lets a run
    hold the destination's lease (``nbjob.lease``); without it the run goes on unleased."""

    READ = "read"  # fetch, get_bytes
    LIST = "list"  # list_names
    WRITE = "write"  # put_bytes, put_file, check_writable
    EXCLUSIVE = "exclusive"  # create_exclusive, remove


# The Backend methods each capability stands for (a backend overrides exactly these).
OPERATIONS: dict[Capability, tuple[str, ...]] = {
    Capability.READ: ("fetch", "get_bytes"),
    Capability.LIST: ("list_names",),
    Capability.WRITE: ("put_bytes", "put_file"),
    Capability.EXCLUSIVE: ("create_exclusive", "remove"),
}


class Backend:
    """One storage implementation. Instances live as long as a run; clients are made lazily."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    credential_env: ClassVar[tuple[str, ...]] = ()
    secret_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self.outage_since: float | None = None  # monotonic start of the current failing streak
        # Clients are made once, under this lock: the artifact stream's workers ask at once, and
        # each client made in a race costs ~0.1 s of CPU and a connection pool of its own.
        self.client_lock = threading.Lock()

    @property
    def endpoint_url(self) -> str | None:
        return self.options.endpoint_url

    @property
    def timeout(self) -> float:
        """How long the store may fail to answer before an operation gives up (exit 6)."""
        return self.options.timeout

    @property
    def read_timeout(self) -> float:
        """One request's wait for an answer: a sixth of the budget (10 s by default)."""
        return max(0.5, self.timeout / 6)

    @property
    def connect_timeout(self) -> float:
        return min(CONNECT_TIMEOUT_S, self.read_timeout)

    @property
    def try_bound(self) -> float:
        """The longest one try of the retry loop takes against a store that never answers."""
        return CLIENT_TRIES * (self.read_timeout + self.connect_timeout)

    # -- the interface -----------------------------------------------------------------------

    def fetch(self, url: str, dest_dir: Path) -> Path:
        """Return a local path holding ``url`` (downloaded into ``dest_dir`` when remote)."""
        raise NotImplementedError

    def put_bytes(self, url: str, data: bytes, content_type: str = "application/json") -> None:
        raise NotImplementedError

    def put_file(self, url: str, path: Path, content_type: str | None = None) -> None:
        """Store the file at ``path`` as ``url``, its content type ``content_type`` when given
        (else the store's default)."""
        raise NotImplementedError

    def get_bytes(self, url: str) -> bytes | None:
        """The object at ``url``, or None when there is none (earlier attempts, resume)."""
        raise NotImplementedError

    def list_names(self, url: str) -> list[str]:
        """Names (relative, ``/``-separated, sorted) of every object under the folder ``url``."""
        raise NotImplementedError

    def create_exclusive(self, url: str, data: bytes) -> bool:
        """Create the object ``url`` holding ``data`` only if there is none: True when this
        call created it, False when one exists (or another writer's create is under way).
        Atomic against any other writer using it (a conditional create on object stores)."""
        raise NotImplementedError

    def remove(self, url: str) -> None:
        """Remove the object ``url`` (none there: nothing to do)."""
        raise NotImplementedError

    def check_writable(self, url: str) -> None:
        """Fail early (before any cell runs) when ``url`` can never be written."""

    def classify(self, exc: Exception) -> tuple[bool, str]:
        """(worth retrying?, one-line reason) for what a client call raised."""
        return isinstance(exc, OSError), first_line(exc)

    @classmethod
    def secret_values(cls, environ: Mapping[str, str]) -> list[str]:
        """Credential values present in ``environ`` (scrubbed wherever nbjob writes)."""
        return [environ[k] for k in cls.credential_env if environ.get(k)]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.splitlines()[0].split())[:300]


def split_url(url: str, what: str, example: str) -> tuple[str, str]:
    """(bucket or container, key) of ``scheme://bucket/key``; a missing bucket is bad input."""
    parts = urlsplit(url)
    if not parts.netloc:
        raise InvalidInputError(f"{url}: {what} URL needs a bucket ({example})")
    return parts.netloc, parts.path.lstrip("/")


def need_key(url: str, key: str, what: str, example: str) -> None:
    if not key or key.endswith("/"):
        raise InvalidInputError(f"{url}: {what} source needs an object key ({example})")


def target_in(dest_dir: Path, url: str) -> Path:
    """Where a download of ``url`` goes: its last path segment inside ``dest_dir``."""
    return dest_dir / (Path(urlsplit(url).path).name or "bundle")


TEMP_PREFIX = ".nbjob-"  # temporary files beside a target: ".nbjob-" and 8 random characters


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A short name, whatever the target's: ".<name>.XXXX" would pass NAME_MAX (255 bytes) for
    # a name of 246 bytes or more.
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
