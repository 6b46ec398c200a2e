"""One contract for every storage backend, each against a real server on loopback.

The ``store`` fixture (tests/storage/stores.py) is in turn: local folders, moto and s3rver
(s3://), the GCS emulator (gs://) and Azurite (az://). What nbjob left at a destination is read
back with the store's own client, never through nbjob. User-visible behaviour is checked by
running the ``nbjob`` command as a platform does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import nbformat
import pytest
from nbjob import logs
from nbjob.config import storage_options
from nbjob.errors import InvalidInputError, StorageError
from nbjob.storage import (
    REGISTRY,
    Backend,
    Capability,
    Storage,
    backend_class,
    check_destination,
    credential_env,
    join,
)
from nbjob.storage.base import OPERATIONS
from stores import Store
from support import (
    free_port,
    make_zip,
    notebook_json,
    read_json,
    run_nbjob,
    start_nbjob,
    stream_text,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

HELPER = "def greet(who):\n    return f'hello {who}'\n"
# Query parameters whose values are signatures or credentials in signed URLs.
SIGNED_PARAMS = ("X-Amz-Signature", "X-Amz-Credential", "X-Goog-Signature", "X-Goog-Credential")
SIGNED_PARAMS += ("sig", "Signature", "AWSAccessKeyId")


def wait_cell(go: Path) -> str:
    """A cell that waits (bounded: 60 s) until the test creates ``go``."""
    return (
        f"import os, time\nfor _ in range(600):\n    if os.path.exists({str(go)!r}):\n"
        "        break\n    time.sleep(0.1)\nprint('late output')"
    )


ARTIFACT_CELL = (
    "import os, pathlib\nart = pathlib.Path(os.environ['NBJOB_ARTIFACTS_DIR'])\n"
    "(art / 'metrics.json').write_text('{\"acc\": 1}')\n(art / 'model').mkdir()\n"
    "(art / 'model' / 'w.bin').write_bytes(bytes(10))"
)


def put_bundle(store: Store, root: str, tmp_path: Path, *extra_cells: str) -> str:
    """A zip of nb.ipynb (importing helper.py) stored at ``root/in/bundle.zip``; its URL."""
    nb = notebook_json(
        ["from helper import greet\nprint(greet('bundle'))", "x = 6 * 7\nx", *extra_cells]
    )
    archive = make_zip(tmp_path / "bundle.zip", {"nb.ipynb": nb, "helper.py": HELPER})
    url = join(root, "in/bundle.zip")
    store.put(url, archive.read_bytes())
    return url


def stored(store: Store, prefix: str) -> tuple[Any, dict[str, Any], str]:
    """The executed notebook, run.json and executor.log under ``prefix``, read by the store."""
    nb_bytes, record, log = (
        store.get(join(prefix, n)) for n in ("nb.ipynb", "run.json", "executor.log")
    )
    assert nb_bytes and record and log, f"results missing under {prefix}"
    return nbformat.reads(nb_bytes.decode(), as_version=4), json.loads(record), log.decode()


def one_line(text: str) -> str:
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


# -- 1 and 2: a run stores its results at the destination, during the run and at the end --------


def test_run_stores_results_live_and_at_the_end(store: Store, tmp_path: Path) -> None:
    root = store.new_root()
    go = tmp_path / "go"
    source = put_bundle(store, root, tmp_path, ARTIFACT_CELL, wait_cell(go))
    dest = join(root, "results/run1")
    run = start_nbjob(
        "run", source, "--output", dest, "--checkpoint-interval", "0.5", env=store.env, cwd=tmp_path
    )

    def live() -> tuple[dict[str, Any], Any] | None:
        record, nb = store.get(join(dest, "run.json")), store.get(join(dest, "nb.ipynb"))
        if not (record and nb):
            return None
        try:
            live_nb = nbformat.reads(nb.decode(), as_version=4)
            live_record = json.loads(record)
        except ValueError:  # s3rver serves an object while a PUT still writes it: read again
            return None
        return (live_record, live_nb) if "hello bundle" in stream_text(live_nb) else None

    try:
        state = wait_until(live, 60, interval=0.2)
        still_running = run.running()
    finally:
        go.touch()
    result = run.wait()
    assert state, f"no results at {dest} while the run went on: {result.stderr}"
    assert still_running
    record, live_nb = state
    assert (record["status"], record["exit_code"]) == ("running", None)
    assert "late output" not in stream_text(live_nb)

    assert result.returncode == 0, result.stderr
    nb, record, log = stored(store, dest)
    nbformat.validate(nb)
    assert "hello bundle" in stream_text(nb) and "late output" in stream_text(nb)
    assert nb.cells[1].outputs[0]["data"]["text/plain"] == "42"
    assert (record["status"], record["exit_code"]) == ("succeeded", 0)
    assert record["source"] == source and record["output"] == dest
    assert record["artifacts"] == ["metrics.json", "model/w.bin"]
    events = [json.loads(line) for line in log.splitlines()]
    assert (events[-1]["event"], events[-1]["status"]) == ("run_end", "succeeded")
    assert store.get(join(dest, "artifacts/metrics.json")) == b'{"acc": 1}'
    assert store.get(join(dest, "artifacts/model/w.bin")) == bytes(10)


# -- 3: a multi-MB round trip through the Storage facade (chunked where the store can) ---------


def test_big_file_round_trip(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    data = os.urandom(9 * 1024 * 1024 + 4099)  # above the 8 MiB chunk threshold
    (tmp_path / "big.bin").write_bytes(data)
    root = store.new_root()
    url = join(root, "deep/er/big.bin")
    storage = Storage(storage_options({}, store.env))
    storage.put_file(url, tmp_path / "big.bin", "application/x-nbjob-test")
    assert store.get(url) == data
    assert served_type(store, url) in (None, "application/x-nbjob-test")
    (tmp_path / "down").mkdir()
    fetched = storage.fetch(url, tmp_path / "down")
    assert fetched.read_bytes() == data
    storage.put_bytes(join(root, "small.json"), b'{"a": 1}')
    assert store.get(join(root, "small.json")) == b'{"a": 1}'

    bucket, key = url.split("://", 1)[1].split("/", 1) if store.remote else ("", "")
    if store.name == "moto":  # a multipart upload's ETag is "<md5>-<parts>" (s3rver: a plain MD5)
        etag = store.extra["client"].head_object(Bucket=bucket, Key=key)["ETag"]
        assert re.fullmatch(r'"?[0-9a-f]{32}-2"?', etag), etag
    elif store.name == "azurite":  # uploaded as blocks, not one put
        blob = store.extra["service"].get_blob_client(bucket, key)
        committed, _ = blob.get_block_list("committed")
        assert len(committed) == 2, committed


def test_a_file_keeps_the_content_type_it_is_stored_with(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report goes up as a file: a browser opening its URL must be told it is HTML."""
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "page.html").write_text("<html><body>hi</body></html>")
    url = join(store.new_root(), "page.html")
    Storage(storage_options({}, store.env)).put_file(
        url, tmp_path / "page.html", "text/html; charset=utf-8"
    )
    assert store.get(url) == b"<html><body>hi</body></html>"
    served = served_type(store, url)
    assert served is None or served.startswith("text/html"), served


def served_type(store: Store, url: str) -> str | None:
    """The Content-Type a browser gets for ``url`` (its signed URL); None for a local store."""
    if store.presign is None:
        return None
    with urllib.request.urlopen(store.presign(url), timeout=30) as response:
        return str(response.headers.get("Content-Type"))


# -- 4: credentials never appear in what a run writes ----------------------------------------


def test_credentials_and_signed_urls_are_never_shown(store: Store, tmp_path: Path) -> None:
    if not store.remote:
        pytest.skip("local folders take no credentials")
    root = store.new_root()
    source = put_bundle(store, root, tmp_path)
    assert store.presign is not None
    url = store.presign(source)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    signed = [name for name in SIGNED_PARAMS if name in query]
    assert signed, url
    dest = join(root, "results/signed")
    # At the same time: a signed URL of an object that is not there (its reason shows the URL).
    missing = store.presign(join(root, "no/such/bundle.zip"))
    missing_query = {k: v[0] for k, v in parse_qs(urlsplit(missing).query).items()}
    term = tmp_path / "termination-log"
    term.touch()
    other = start_nbjob(
        "run", missing, "--output", tmp_path / "out", "--termination-log", term,
        env=store.env, cwd=tmp_path,
    )  # fmt: skip
    result = run_nbjob("run", url, "--output", dest, env=store.env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    failed = other.wait()
    assert failed.returncode == 6, failed.stderr
    missing_secrets = [missing_query[name] for name in signed]
    reason = check_missing(failed, tmp_path / "out", 6, [*store.secrets, *missing_secrets])
    assert term.read_text().strip() == reason  # the termination message: redacted too
    nb, record, log = stored(store, dest)
    assert record["source"].startswith(url.split("?")[0])

    secrets = [*store.secrets, *(query[name] for name in signed)]
    secrets += [quote(v, safe="") for v in secrets]
    places = {"nb.ipynb": json.dumps(nb), "run.json": json.dumps(record), "executor.log": log}
    places.update(stdout=result.stdout, stderr=result.stderr)
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"a credential leaked into {where}"
        for name in signed:
            assert not re.search(rf"[?&]{name}=(?!REDACTED)", text), f"{name} value in {where}"
    assert "REDACTED" in record["source"]


SECRET_HOLDERS = sorted(
    {k for k in REGISTRY if backend_class(k).credential_env or backend_class(k).secret_params}
    - {"abfs", "abfss"}  # the same class as az
)


@pytest.mark.parametrize("kind", SECRET_HOLDERS)
def test_each_backend_redacts_its_own_credentials(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every credential variable and secret URL parameter a backend declares is scrubbed."""
    cls = backend_class(kind)
    monkeypatch.setattr(logs, "_secrets", None)
    values = {name: f"nbjobFake{name.title().replace('_', '')}" for name in cls.credential_env}
    if kind == "az":
        values["AZURE_STORAGE_CONNECTION_STRING"] = "AccountName=a;AccountKey=nbjobFakeAzKey==;"
    if kind == "gs":  # the secrets inside an application-default credentials file
        key_file = tmp_path / "key.json"
        key = {"private_key_id": "nbjobFakeKeyId", "private_key": "nbjobFakePem", "x": "y"}
        key_file.write_text(json.dumps(key))
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
        values.update(id=key["private_key_id"], pem=key["private_key"])
    for name, value in values.items():
        if name.isupper():
            monkeypatch.setenv(name, value)
    text = " ".join(f"{k}={v};" for k, v in values.items())
    text += " ".join(
        f" https://h/o?x=1&{p}=nbjobFake{i}&y=2" for i, p in enumerate(cls.secret_params)
    )
    if kind == "az":  # the account key alone, and as a connection string's part elsewhere
        text += " key nbjobFakeAzKey== in AccountName=b;AccountKey=nbjobFakeOtherKey==;"
    redacted = logs.redact(text)
    assert "nbjobFake" not in redacted, redacted
    assert "REDACTED" in redacted
    if cls.secret_params:
        assert "x=1" in redacted and "y=2" in redacted  # the rest stays readable


# -- 5: an endpoint that does not answer -----------------------------------------------------


def test_unreachable_destination_fails_fast_with_a_local_copy(store: Store, tmp_path: Path) -> None:
    nb = notebook_json(["print('ran')"])
    source = make_zip(tmp_path / "b.zip", {"nb.ipynb": nb})
    started = time.monotonic()
    if not store.remote:  # a folder that cannot be made: a regular file is in the way
        (tmp_path / "file").write_text("x")
        result = run_nbjob("run", source, "--output", tmp_path / "file" / "out", cwd=tmp_path)
        assert result.returncode == 6, result.stderr
        assert "cannot create results folder" in one_line(result.last_event["reason"])
        return
    env = {**store.dead_env(free_port()), "NBJOB_STORAGE_ATTEMPTS": "2", "TMPDIR": str(tmp_path)}
    dest = join(store.new_root(), "results")
    result = run_nbjob("run", source, "--output", dest, env=env, cwd=tmp_path, timeout=90)
    took = time.monotonic() - started
    assert result.returncode == 6, result.stderr
    assert took < 45, f"a dead endpoint took {took:.0f} s to give up"
    reason = one_line(result.last_event["reason"])
    match = re.search(r"a local copy is in (\S+)$", reason)
    assert match, reason
    copy = Path(match.group(1))
    assert copy.is_relative_to(tmp_path)
    record = read_json(copy / "run.json")
    assert (record["status"], record["exit_code"]) == ("storage_error", 6)
    # The destination is read first (earlier attempts): no cell runs while it cannot be reached.
    assert reason.startswith("cannot read earlier attempts: "), reason
    assert not (copy / "nb.ipynb").exists()
    for secret in store.secrets:
        assert secret not in result.stderr


# -- 6: a source that is not there -----------------------------------------------------------


def test_missing_source(store: Store, tmp_path: Path) -> None:
    source = join(store.new_root(), "no/such/bundle.zip")
    out = tmp_path / "out"
    result = run_nbjob("run", source, "--output", out, env=store.env, cwd=tmp_path)
    code = 6 if store.remote else 3  # a local path that is not there is bad input
    assert result.returncode == code, result.stderr
    reason = check_missing(result, out, code, store.secrets)
    if store.remote:
        assert "tries" not in reason  # a missing object is not retried
    else:
        assert reason.startswith("source not found")


def check_missing(result: Any, out: Path, code: int, secrets: list[str]) -> str:
    """run.json and the log of a run whose source is missing; the one-line reason."""
    record = read_json(out / "run.json")
    assert (record["exit_code"], record["status"]) == (
        code,
        "storage_error" if code == 6 else "invalid_input",
    )
    reason = one_line(record["reason"])
    assert "bundle.zip" in reason
    if code == 6:
        assert re.search(r"404|Not ?Found|NoSuchKey|BlobNotFound", reason), reason
    assert result.last_event["reason"] == reason
    for text in (reason, result.stderr, (out / "executor.log").read_text()):
        for secret in secrets:
            assert secret not in text
    return reason


# -- the registry --------------------------------------------------------------------------


def test_unknown_scheme_names_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as info:
        Storage().fetch("ftp://host/bundle.zip", tmp_path)
    for kind in ("s3://", "gs://", "az://", "https://", "file://"):
        assert kind in info.value.reason
    with pytest.raises(StorageError, match=r"cannot write results to https://h/x.*gs://"):
        Storage().put_bytes("https://h/x?sig=abc", b"{}")
    result = run_nbjob("run", "ftp://host/bundle.zip", "--output", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "unsupported scheme 'ftp'" in one_line(result.last_event["reason"])


@pytest.mark.parametrize("kind", sorted(k for k in REGISTRY if k))
def test_each_backend_does_what_it_declares(kind: str) -> None:
    """A declared capability's operations are the backend's own; an undeclared one's are the
    interface's (NotImplementedError), so a destination check never lets through a store that
    would fail in the middle of a run."""
    cls = backend_class(kind)
    assert cls.capabilities, kind
    for capability, methods in OPERATIONS.items():
        for method in methods:
            own = getattr(cls, method) is not getattr(Backend, method)
            assert own == (capability in cls.capabilities), (kind, method)


def test_one_registry_of_credential_variables() -> None:
    """Each backend declares its credential variables once; the log's list does not repeat
    them, and a process that imported only nbjob.logs scrubs them all the same."""
    names = credential_env()
    for kind in ("s3", "gs", "az"):
        assert set(backend_class(kind).credential_env) <= set(names), kind
    assert len(names) == len(set(names))
    assert not set(logs.SECRET_ENV) & set(names)
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": "nbjobFakeAws", "AZURE_STORAGE_KEY": "nbjobAzKey"}
    code = "from nbjob import logs; print(logs.redact('a nbjobFakeAws b nbjobAzKey c ?sig=x'))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "a REDACTED b REDACTED c ?sig=REDACTED", out


def test_client_libraries_are_imported_only_when_used(tmp_path: Path) -> None:
    """A run that never touches GCS or Azure never imports their (slow) libraries."""
    code = (
        "import sys, pathlib\nfrom nbjob.storage import Storage\n"
        f"s = Storage()\ns.put_bytes({str(tmp_path / 'a.json')!r}, b'{{}}')\n"
        f"s.fetch({str(tmp_path / 'a.json')!r}, pathlib.Path('.'))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'google', 'azure', 'boto3'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out


def test_abfs_urls_name_the_account(
    azurite_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """abfs[s]://container@account.dfs.core.windows.net/blob is the same blob as az://."""
    from nbjob.storage.azure import split_az
    from stores import AZ_ACCOUNT, azure_store

    assert split_az("abfss://c@acct.dfs.core.windows.net/a/b.zip") == ("acct", "c", "a/b.zip")
    assert split_az("az://c/a/b.zip") == (None, "c", "a/b.zip")
    with pytest.raises(InvalidInputError, match="needs a container"):
        split_az("abfs://@acct.dfs.core.windows.net/a")
    store = azure_store(azurite_server)
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING", store.env["AZURE_STORAGE_CONNECTION_STRING"]
    )
    container = store.new_root().split("://", 1)[1]
    storage = Storage()
    storage.put_bytes(f"abfs://{container}@{AZ_ACCOUNT}.dfs.core.windows.net/x.json", b"{}")
    assert store.get(f"az://{container}/x.json") == b"{}"
    with pytest.raises(StorageError, match="names the Azure account 'other'"):
        storage.put_bytes(f"abfss://{container}@other.dfs.core.windows.net/x.json", b"{}")
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT", raising=False)
    with pytest.raises(StorageError, match="no Azure account: set AZURE_STORAGE_CONNECTION_STRING"):
        Storage().put_bytes(f"az://{container}/y.json", b"{}")


# -- 4: reads and listings (earlier attempts, resume) ------------------------------------------


def test_get_bytes_and_list(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    root = store.new_root()
    for name in ("run/run.json", "run/artifacts/a.bin", "run/artifacts/sub/b.bin", "other/x"):
        store.put(join(root, name), name.encode())
    storage = Storage(storage_options({}, store.env))
    # A destination: the store can read, list and write, as its backend declares.
    assert storage.backend(root).capabilities == set(Capability)
    check_destination(root)
    assert storage.get_bytes(join(root, "run/run.json")) == b"run/run.json"
    assert storage.get_bytes(join(root, "run/missing.json")) is None
    assert storage.list_names(join(root, "run/artifacts")) == ["a.bin", "sub/b.bin"]
    assert storage.list_names(join(root, "run/artifacts/")) == ["a.bin", "sub/b.bin"]
    assert storage.list_names(join(root, "run/none")) == []
    assert storage.list_names(join(root, "run")) == [
        "artifacts/a.bin",
        "artifacts/sub/b.bin",
        "run.json",
    ]
