"""Fetching bundles and storing results over s3://, https:// (presigned), file:// — for real.

A moto server on loopback plays S3 (fixture ``s3_server``); a flaky proxy in front of it answers
503s or vanishes. Each test runs ``nbjob`` as a platform does and checks what a user would: the
exit code, the objects at the destination and their content.

What every backend must do (a run to s3://, results visible during the run, redaction, missing
sources, dead endpoints) is in tests/storage/test_storage_contract.py, against moto too; this
file keeps what is S3-specific: retries through a flaky proxy, SigV2, a vanishing endpoint.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import boto3
import nbformat
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from nbjob.config import resolve, storage_options
from nbjob.errors import InvalidInputError, StorageError, UsageError
from nbjob.storage import Capability, Options, Storage, check_destination, check_source
from nbjob.storage.base import CLIENT_TRIES
from nbjob.storage.retry import with_retries
from support import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    S3Server,
    make_zip,
    notebook_json,
    read_json,
    run_nbjob,
    start_nbjob,
    stream_text,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)

HELPER = "def greet(who):\n    return f'hello {who}'\n"


def upload_bundle(s3: S3Server, bucket: str, tmp_path: Path, key: str = "bundle.zip") -> str:
    """A zip of nb.ipynb (importing helper.py) uploaded to ``bucket``; returns its s3:// URL."""
    nb = notebook_json(["from helper import greet\nprint(greet('bundle'))", "x = 6 * 7\nx"])
    archive = make_zip(tmp_path / "bundle.zip", {"nb.ipynb": nb, "helper.py": HELPER})
    s3.client.upload_file(str(archive), bucket, key)
    return f"s3://{bucket}/{key}"


def check_results(nb_bytes: bytes, record: dict[str, Any], log_text: str) -> None:
    """The executed notebook, run.json and executor.log of a successful run of upload_bundle's."""
    nb = nbformat.reads(nb_bytes.decode(), as_version=4)
    nbformat.validate(nb)
    assert "hello bundle" in stream_text(nb)
    assert nb.cells[1].outputs[0]["data"]["text/plain"] == "42"
    assert record["status"] == "succeeded"
    assert record["exit_code"] == 0
    assert record["notebook"] == "nb.ipynb"
    assert [c["status"] for c in record["cells"]] == ["completed", "completed"]
    events = [json.loads(line) for line in log_text.splitlines()]
    assert events[-1]["event"] == "run_end"
    assert events[-1]["status"] == "succeeded"
    assert any(e["event"] == "stream" and "hello bundle" in e["text"] for e in events)


def s3_results(s3: S3Server, bucket: str, prefix: str) -> tuple[bytes, dict[str, Any], str]:
    return (
        s3.get(bucket, f"{prefix}/nb.ipynb"),
        json.loads(s3.get(bucket, f"{prefix}/run.json")),
        s3.get(bucket, f"{prefix}/executor.log").decode(),
    )


def local_results(out: Path) -> tuple[bytes, dict[str, Any], str]:
    return (
        (out / "nb.ipynb").read_bytes(),
        read_json(out / "run.json"),
        (out / "executor.log").read_text(),
    )


def presign(
    s3: S3Server, bucket: str, key: str, endpoint: str | None = None, version: str = "s3v4"
) -> str:
    """A presigned GET URL: SigV4 (X-Amz-Signature...) or the legacy SigV2 ("s3": Signature)."""
    client = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
    ).client("s3", endpoint_url=s3.endpoint_url, config=Config(signature_version=version))
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600
    )
    if endpoint:  # the same signed URL, sent through another host:port (a proxy)
        url = urlunsplit(urlsplit(url)._replace(netloc=urlsplit(endpoint).netloc))
    return str(url)


def try_get(s3: S3Server, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get(bucket, key)
    except ClientError:
        return None


@pytest.mark.parametrize("version", ["s3v4", "s3"])
def test_presigned_https_source_keeps_credentials_out(
    s3_server: S3Server, bucket: str, tmp_path: Path, version: str
) -> None:
    upload_bundle(s3_server, bucket, tmp_path)
    url = presign(s3_server, bucket, "bundle.zip", version=version)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    signed = ["X-Amz-Signature", "X-Amz-Credential"] if version == "s3v4" else ["Signature"]
    assert set(signed) <= set(query)
    out = tmp_path / "out"
    # The S3 credentials are in the environment too: they must not leak either.
    result = run_nbjob("run", url, "--output", out, env=s3_server.env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check_results(*local_results(out))

    secrets = [SECRET_KEY, ACCESS_KEY] + [query[name] for name in signed]
    secrets += [quote(v, safe="") for v in secrets]
    places = {p.name: p.read_text() for p in out.rglob("*") if p.is_file()}
    places.update(stdout=result.stdout, stderr=result.stderr)
    assert set(places) >= {"nb.ipynb", "run.json", "executor.log", "stdout", "stderr"}
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"a credential leaked into {where}"
        for name in [*signed, "AWSAccessKeyId"]:
            assert not re.search(rf"[?&]{name}=(?!REDACTED)", text), f"{name} value in {where}"
    assert read_json(out / "run.json")["source"].startswith(url.split("?")[0])


def test_file_url_source(tmp_path: Path) -> None:
    nb = notebook_json(["from helper import greet\nprint(greet('bundle'))", "x = 6 * 7\nx"])
    archive = make_zip(tmp_path / "my bundle.zip", {"nb.ipynb": nb, "helper.py": HELPER})
    out = tmp_path / "out"
    result = run_nbjob("run", archive.as_uri(), "--output", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check_results(*local_results(out))


@pytest.mark.parametrize("kind", ["s3", "https"])
def test_transient_503s_are_retried(
    s3_server: S3Server, bucket: str, tmp_path: Path, flaky_proxy: Any, kind: str
) -> None:
    proxy = flaky_proxy(fail_first=3)
    source = upload_bundle(s3_server, bucket, tmp_path)
    if kind == "https":  # a presigned URL, sent through the proxy
        source = presign(s3_server, bucket, "bundle.zip", endpoint=proxy.url)
    dest = f"s3://{bucket}/results/flaky"
    env = s3_server.env_for(proxy.url)
    result = run_nbjob("run", source, "--output", dest, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert proxy.failed == 3  # the run did meet the 503s
    check_results(*s3_results(s3_server, bucket, "results/flaky"))


def test_one_try_is_at_most_two_s3_requests(
    s3_server: S3Server, bucket: str, flaky_proxy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented bound: each try of the retry loop makes at most CLIENT_TRIES (2) requests
    through the S3 client's own retries (in botocore's standard mode ``max_attempts`` counts
    the first request)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    proxy = flaky_proxy(fail_first=100)
    storage = Storage(Options(endpoint_url=proxy.url, attempts=1, timeout=30))
    with pytest.raises(StorageError):
        storage.get_bytes(f"s3://{bucket}/never-there")
    assert proxy.requests == CLIENT_TRIES == 2


@pytest.mark.parametrize("kind", ["s3", "https"])
def test_missing_source_is_a_storage_error(
    s3_server: S3Server, bucket: str, tmp_path: Path, kind: str
) -> None:
    source = f"s3://{bucket}/no/such/bundle.zip"
    if kind == "https":
        source = presign(s3_server, bucket, "no/such/bundle.zip")
    out = tmp_path / "out"
    result = run_nbjob("run", source, "--output", out, env=s3_server.env, cwd=tmp_path)
    assert result.returncode == 6, result.stderr
    record = read_json(out / "run.json")
    assert record["status"] == "storage_error"
    assert record["exit_code"] == 6
    reason = record["reason"]
    assert "\n" not in reason and "bundle.zip" in reason
    assert re.search(r"404|Not ?Found|NoSuchKey", reason), reason
    assert result.last_event["reason"] == reason
    assert "Traceback" not in result.stderr
    signature = parse_qs(urlsplit(source).query).get("X-Amz-Signature", [SECRET_KEY])[0]
    for text in (reason, result.stderr, (out / "executor.log").read_text()):
        assert signature not in text and SECRET_KEY not in text


def test_results_destination_vanishes(
    s3_server: S3Server, bucket: str, tmp_path: Path, flaky_proxy: Any
) -> None:
    """The endpoint goes away mid-run: exit 6, and a local copy of the results says where."""
    proxy = flaky_proxy()
    go = tmp_path / "go"
    nb = notebook_json(
        [
            "print('before the endpoint vanished')",
            # Waits (bounded) until the test has stopped the endpoint.
            f"import os, time\nfor _ in range(600):\n    if os.path.exists({str(go)!r}):\n"
            "        break\n    time.sleep(0.1)\nprint('after')",
        ]
    )
    s3_server.client.put_object(
        Bucket=bucket, Key="b.zip", Body=make_zip(tmp_path / "b.zip", {"nb.ipynb": nb}).read_bytes()
    )
    env = {**s3_server.env_for(proxy.url), "TMPDIR": str(tmp_path)}
    run = start_nbjob(
        "run", f"s3://{bucket}/b.zip", "--output", f"s3://{bucket}/res", env=env, cwd=tmp_path
    )
    try:
        # The first results reach S3 through the proxy while the second cell waits.
        assert wait_until(lambda: try_get(s3_server, bucket, "res/run.json"), 60), run.output()
    finally:
        proxy.vanish()
        go.touch()
    result = run.wait(timeout=150)
    assert result.returncode == 6, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    failures = [e for e in events if e["event"] == "results_not_stored"]
    assert failures, result.stderr
    match = re.search(r"a local copy is in (\S+)$", failures[-1]["reason"])
    assert match, failures[-1]["reason"]
    copy = Path(match.group(1))
    assert copy.is_relative_to(tmp_path)
    record = read_json(copy / "run.json")
    assert record["notebook"] == "nb.ipynb"
    # The local copy and the last log line tell the truth: not stored, exit 6.
    assert (record["status"], record["exit_code"]) == ("storage_error", 6)
    assert "local copy" in record["reason"]
    assert events[-1]["event"] == "run_end" and events[-1]["exit_code"] == 6
    logged = [json.loads(line) for line in (copy / "executor.log").read_text().splitlines()]
    assert logged[-1]["event"] == "run_end" and logged[-1]["status"] == "storage_error"
    assert "after" in stream_text(nbformat.read(copy / "nb.ipynb", as_version=4))
    assert (copy / "executor.log").is_file()
    # What S3 holds is stale (the run never finished storing): never a success.
    assert json.loads(s3_server.get(bucket, "res/run.json"))["status"] == "running"


def test_s3_errors_that_retrying_cannot_fix(
    s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No key, no bucket, no credentials: a clear error at once, not five tries with backoff."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    storage = Storage(Options(s3_server.endpoint_url))
    with pytest.raises(InvalidInputError, match="needs an object key"):
        storage.fetch(f"s3://{bucket}", tmp_path)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(StorageError, match="NoSuchBucket") as info:
        storage.put_file("s3://no-such-bucket-nbjob/f.txt", tmp_path / "f.txt")
    assert "tries" not in info.value.reason
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match="credentials") as info:
        Storage(Options(s3_server.endpoint_url)).fetch(f"s3://{bucket}/bundle.zip", tmp_path)
    assert "tries" not in info.value.reason


def test_sigterm_while_the_bundle_downloads(tmp_path: Path) -> None:
    """A stop before any cell ran (here: a stalled download) still ends in 143 with run.json."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    release = threading.Event()

    class Stalled(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            release.wait(60)  # bounded: the test releases it at the end

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stalled)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "out"
    run = start_nbjob("run", f"http://127.0.0.1:{server.server_port}/b.zip", "--output", out)
    try:
        assert wait_until(lambda: (out / "executor.log").is_file(), 30), run.output()
        run.proc.send_signal(signal.SIGTERM)
        result = run.wait(timeout=30)
    finally:
        release.set()
        server.shutdown()
        server.server_close()
    assert result.returncode == 143, result.stderr
    record = read_json(out / "run.json")
    assert (record["status"], record["exit_code"]) == ("stopped", 143)
    assert "SIGTERM" in record["reason"] and record["cells"] == []


# -- what a backend can do: checked before the run, from the settings --------------------------


@pytest.mark.parametrize(
    ("dest", "shown", "why"),
    [
        (
            "https://example.org/x?X-Amz-Signature=nbjobFakeSig",
            "https://example.org/x?X-Amz-Signature=REDACTED",
            "https:// destinations are read-only (sources only)",
        ),
        ("ftp://example.org/x", "ftp://example.org/x", "unsupported scheme 'ftp'"),
    ],
    ids=["https", "unknown-scheme"],
)
def test_a_destination_that_cannot_be_written_is_a_usage_error_before_any_kernel(
    tmp_path: Path, dest: str, shown: str, why: str
) -> None:
    """Exit 2 with one line saying why and what to use; no kernel (its sockets live under
    --workdir, which the run makes first thing) and nothing written anywhere."""
    nb = tmp_path / "nb.ipynb"
    nb.write_bytes(notebook_json(["print('ran')"]))
    workdir = tmp_path / "work"
    result = run_nbjob("run", nb, "--output", dest, "--workdir", workdir, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"nbjob: error: --output {shown}: {why}; use a folder, s3://, gs:// or az://"
    ]
    assert not workdir.exists(), "the run started (a kernel, a workdir) before refusing"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb.ipynb"]


def test_https_reads_objects_and_says_it_cannot_list_or_write(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """What https:// declares (read) works through the facade; what it does not is refused."""
    s3_server.client.put_object(Bucket=bucket, Key="run.json", Body=b'{"a": 1}')
    storage = Storage()
    url = presign(s3_server, bucket, "run.json")
    assert storage.backend(url).capabilities == {Capability.READ}
    assert storage.get_bytes(url) == b'{"a": 1}'
    assert storage.get_bytes(presign(s3_server, bucket, "missing.json")) is None
    assert storage.fetch(url, tmp_path).read_bytes() == b'{"a": 1}'
    with pytest.raises(StorageError, match=r"cannot write results to http.*REDACTED: use a folder"):
        storage.put_bytes(url, b"{}")
    with pytest.raises(StorageError, match=r"cannot list http.*REDACTED: http:// can read only"):
        storage.list_names(url)
    check_source(url)  # a source: accepted
    with pytest.raises(UsageError, match="read-only"):
        check_destination(url)


def test_storage_options_come_from_the_settings(s3_server: S3Server) -> None:
    """Endpoint, time budget, tries and S3 addressing: flags or NBJOB_* variables, one object,
    and the S3 client is made with them."""
    env = {
        "NBJOB_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "NBJOB_STORAGE_ATTEMPTS": "2",
        "NBJOB_S3_ADDRESSING_STYLE": "path",
    }
    settings = resolve({"source": "nb.ipynb", "storage_timeout": "12"}, env)
    options = settings.storage_options
    assert options == Options(s3_server.endpoint_url, 12.0, 2, "path")
    assert storage_options({"storage_timeout": "12"}, env) == options  # nbjob pack --upload
    backend = Storage(options).backend("s3://b/k")
    assert (backend.timeout, backend.read_timeout) == (12.0, 2.0)
    client = backend.s3()  # type: ignore[attr-defined]
    assert client.meta.endpoint_url == s3_server.endpoint_url
    assert client.meta.config.s3["addressing_style"] == "path"
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise ConnectionRefusedError("refused")

    with pytest.raises(StorageError, match="failed after 2 tries: refused"):
        with_retries(backend, "read", "s3://b/k", refused)
    assert len(calls) == 2
    assert resolve({"source": "nb.ipynb"}, {}).storage_options == Options()
    for name, bad in (("NBJOB_STORAGE_ATTEMPTS", "0"), ("NBJOB_S3_ADDRESSING_STYLE", "vhost")):
        with pytest.raises(UsageError, match=name):
            resolve({"source": "nb.ipynb"}, {name: bad})
