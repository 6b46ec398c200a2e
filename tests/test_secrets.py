"""The secrets nbjob knows are masked in everything it stores (issue 15, finding 9): the cells'
own outputs, tracebacks, widget state, nbjob's red banners, the HTML report, the log and
run.json; the kernel itself sees the real values; ``--no-mask-secrets`` turns it off."""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
from nbjob import banners, config, mask
from nbjob import results as results_mod
from nbjob.storage import Storage
from support import SECRET_KEY as S3_SECRET_KEY
from support import S3Server, notebook, results, run_nbjob, wait_until

SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
KEY_ID = "AKIAZZZEXAMPLE123456"
TOKEN = 'gate"way-token-0123456789'  # a quote: escaped in JSON, in HTML
ACCOUNT_KEY = "bXlhenVyZWtleQ==c2VjcmV0"
CONNECTION = (
    "DefaultEndpointsProtocol=https;AccountName=acct;"
    f"AccountKey={ACCOUNT_KEY};EndpointSuffix=core.windows.net"
)
SHORT = "ab12z"  # shorter than mask.MIN_LENGTH: left alone in the notebook
ENV = {
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_ACCESS_KEY_ID": KEY_ID,
    "NBJOB_GATEWAY_AUTH_TOKEN": TOKEN,
    "AZURE_STORAGE_CONNECTION_STRING": CONNECTION,
    "AWS_SESSION_TOKEN": SHORT,
}
SECRETS = (SECRET_KEY, KEY_ID, TOKEN, ACCOUNT_KEY, CONNECTION)
NAMES = tuple(ENV)

CELLS = (
    "import os, hashlib\nkey = os.environ['AWS_SECRET_ACCESS_KEY']\n"
    "print(hashlib.sha256(key.encode()).hexdigest())",
    f"for name in {NAMES!r}:\n    print(name, os.environ[name])\nprint(dict(os.environ))",
    "from IPython.display import HTML, display\ndisplay(HTML(f'<b>{key}</b>'))",
    "import ipywidgets\nipywidgets.Text(value=os.environ['NBJOB_GATEWAY_AUTH_TOKEN'])",
    "raise RuntimeError('bad key ' + key)",
)


def _forms(value: str) -> list[str]:
    """How a value can be written in a stored file: as is, in JSON, in HTML."""
    return [value, json.dumps(value)[1:-1], html.escape(value), html.escape(value, quote=False)]


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if any(form in text for form in _forms(s))]


# -- real runs ---------------------------------------------------------------------------------


def test_every_stored_file_masks_the_credentials_the_kernel_still_sees(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", *CELLS)
    out = tmp_path / "out"
    result = run_nbjob("run", nb, "--output", out, env=ENV)
    assert result.returncode == 1, result.stderr  # the last cell fails, on purpose
    executed, record = results(out)  # still a valid notebook
    stored = {p.name: p.read_text() for p in out.iterdir() if p.is_file()}
    assert set(stored) >= {"nb.ipynb", "nb.html", "run.json", "executor.log"}
    assert {name: _leaks(text) for name, text in stored.items()} == {name: [] for name in stored}
    assert _leaks(result.stderr) == [] and _leaks(result.stdout) == []

    # The kernel ran with the real value; what is stored says REDACTED where it was.
    digest = hashlib.sha256(SECRET_KEY.encode()).hexdigest()
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert code[0].outputs[0]["text"] == digest + "\n"
    printed = code[1].outputs[0]["text"]
    assert f"AWS_SECRET_ACCESS_KEY {mask.MASK}\n" in printed
    assert f"AZURE_STORAGE_CONNECTION_STRING {mask.MASK}\n" in printed
    assert f"AWS_SESSION_TOKEN {SHORT}\n" in printed  # too short to mask
    assert f"<b>{mask.MASK}</b>" in code[2].outputs[0]["data"]["text/html"]
    state = json.dumps(executed.metadata["widgets"])
    assert mask.MASK in state and "Text" in state
    error = code[-1].outputs[-1]
    assert error["evalue"] == f"bad key {mask.MASK}"
    assert any(mask.MASK in line for line in error["traceback"])
    banners = [
        c.source for c in executed.cells if "nbjob-error-banner" in c.metadata.get("tags", [])
    ]
    assert len(banners) == 2 and all("REDACTED" in b for b in banners)
    assert record["status"] == "failed" and "REDACTED" in record["reason"]
    assert "REDACTED" in stored["nb.html"]


def test_no_mask_secrets_stores_outputs_as_they_are(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "import os\nprint(os.environ['AWS_SECRET_ACCESS_KEY'])")
    out = tmp_path / "out"
    result = run_nbjob("run", nb, "--output", out, "--no-mask-secrets", env=ENV)
    assert result.returncode == 0, result.stderr
    executed, _ = results(out)
    assert executed.cells[0].outputs[0]["text"] == SECRET_KEY + "\n"
    assert SECRET_KEY in (out / "nb.html").read_text()
    # nbjob's own log and run.json stay scrubbed whatever the option says.
    assert SECRET_KEY not in (out / "executor.log").read_text()
    assert SECRET_KEY not in (out / "run.json").read_text()


def test_with_s3_results_a_presigned_source_and_the_keys_are_masked_everywhere(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    nb = notebook(
        tmp_path / "nb.ipynb",
        "print(src)",
        "import os\nprint(os.environ['AWS_SECRET_ACCESS_KEY'])",
    )
    s3_server.client.put_object(Bucket=bucket, Key="in/nb.ipynb", Body=nb.read_bytes())
    source = s3_server.client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "in/nb.ipynb"}, ExpiresIn=600
    )
    query = dict(pair.split("=", 1) for pair in urlsplit(source).query.split("&"))
    raw = query.get("X-Amz-Signature") or query["Signature"]  # SigV4 or SigV2, as written
    signatures = (raw, unquote(raw))
    out = f"s3://{bucket}/out"
    result = run_nbjob("run", source, "--output", out, "-p", "src", source, env=s3_server.env)
    assert result.returncode == 0, result.stderr
    stored = {key: s3_server.get(bucket, key).decode() for key in s3_server.keys(bucket, "out/")}
    assert {"out/nb.ipynb", "out/nb.html", "out/run.json", "out/executor.log"} <= set(stored)
    secrets = (*signatures, S3_SECRET_KEY)
    leaks = [k for k, text in stored.items() if any(s in text for s in secrets)]
    assert leaks == [] and not any(s in result.stderr for s in secrets)
    executed = nbformat.reads(stored["out/nb.ipynb"], as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert "Signature=REDACTED" in code[1].outputs[0]["text"]  # the printed URL
    assert code[2].outputs[0]["text"] == "REDACTED\n"


# -- in process --------------------------------------------------------------------------------


def test_a_run_masks_the_secrets_of_the_urls_it_was_given() -> None:
    signature = "3b1f0c9e8d7a6b5c4d3e2f1a0b9c8d7e"
    source = (
        "https://bucket.s3.amazonaws.com/b.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential=AKIAQQQ%2F20260101%2Fus-east-1&X-Amz-Signature={signature}"
    )
    settings = config.resolve(
        {"source": source, "output": "s3://alice:hunter2-pass@bucket/out"}, {}
    )
    masker = mask.for_run(settings, environ={"AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    text = f"sig={signature} cred=AKIAQQQ/20260101/us-east-1 pw=hunter2-pass key={SECRET_KEY}"
    assert masker.text(text) == "sig=REDACTED cred=REDACTED pw=REDACTED key=REDACTED"
    assert masker.text("X-Amz-Algorithm=AWS4-HMAC-SHA256") == "X-Amz-Algorithm=AWS4-HMAC-SHA256"
    off = config.resolve({"source": source, "no_mask_secrets": True}, {})
    assert not mask.for_run(off, environ={"AWS_SECRET_ACCESS_KEY": SECRET_KEY})


def test_masked_json_stays_valid_json_with_every_form_of_a_value_masked() -> None:
    masker = mask.Masker([TOKEN, "pässwort-ünïcode", "abc"])
    doc = {"a": f"x {TOKEN} y", "b": ["pässwort-ünïcode", "abc"]}
    for ascii_only in (False, True):
        data = json.dumps(doc, ensure_ascii=ascii_only).encode()
        assert json.loads(masker.json_bytes(data)) == {
            "a": "x REDACTED y",
            "b": ["REDACTED", "abc"],  # "abc": too short to mask
        }
    assert mask.Masker([]).json_bytes(b'{"a": 1}') == b'{"a": 1}' and not mask.Masker(["abc"])
    quoted = mask.Masker(['x1", "y2'])  # its raw form is the structure between two strings
    assert json.loads(quoted.json_bytes(json.dumps(["x1", "y2", 'x1", "y2']).encode())) == [
        "x1",
        "y2",
        "REDACTED",
    ]


def test_banners_are_scrubbed_and_the_report_renders_the_masked_notebook() -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"print('{SECRET_KEY}')")])
    banners.add(nb, 0, "cannot read https://u:pass-word@host/x.zip")
    assert all("u:REDACTED@host" in c.source for c in nb.cells[:2] if c.cell_type == "markdown")
    masked = mask.Masker([SECRET_KEY]).notebook(nb)
    assert masked.cells[-1].source == "print('REDACTED')" and SECRET_KEY in nb.cells[-1].source
    nbformat.validate(masked)


def test_checkpoints_and_the_local_copy_are_masked_too(tmp_path: Path) -> None:
    out, log = tmp_path / "out", tmp_path / "executor.log"
    log.write_text("")
    masker = mask.Masker([SECRET_KEY, TOKEN])
    spool = tmp_path / "spool"
    res = results_mod.Results(
        Storage(), str(out), "nb.ipynb", log, spool, tmp_path / "art", 3600, masker=masker
    )
    cell = nbformat.v4.new_code_cell("print(key)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{SECRET_KEY}\n")]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["widgets"] = {"state": {"value": TOKEN}}
    res.checkpoint(nb, {"status": "running"})  # the background thread writes it
    assert wait_until((out / "nb.ipynb").is_file, 10)
    stored = (out / "nb.ipynb").read_text()
    assert _leaks(stored) == [] and stored.count("REDACTED") == 2
    res.keep_local_copy(nb, {"status": "failed", "reason": f"key {SECRET_KEY}"})
    assert _leaks((spool / "nb.ipynb").read_text() + (spool / "run.json").read_text()) == []
    assert cell.outputs[0]["text"] == f"{SECRET_KEY}\n"  # the notebook in memory is untouched
    res.final(nb, {"status": "succeeded"}, timeout=10)
