"""The HTML report, rendered by nbconvert and looked at in a real headless Chromium.

``report.render`` is checked on notebooks built here; then real ``nbjob run`` subprocesses with
real ipykernel kernels end in every way (success, failing cell, timeout, dead kernel, SIGTERM,
``--no-report``) and their report is loaded in Debian's ``chromium --headless``: a probe script
appended to a copy of the page reports what the browser shows (visible text, decoded image
sizes, the banner's colour) into the DOM that ``--dump-dom`` prints.

Without chromium, and not root (so it cannot be installed), the browser tests are skipped with
that reason, except under CI (CI=true), where they fail.
"""

from __future__ import annotations

import base64
import html
import inspect
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbjob import banners, report
from support import (
    S3Server,
    browse,
    log_events,
    make_notebook,
    read_json,
    run_nbjob,
    start_nbjob,
    wait_until,
)

# -- notebooks ----------------------------------------------------------------------------------


def png(w: int, h: int, rgb: tuple[int, int, int]) -> bytes:
    """A one-colour RGB PNG made with zlib only (the notebook cells define it too)."""
    raw = b"".join(b"\x00" + bytes(rgb) * w for _ in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    head = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(raw))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + idat + chunk(b"IEND", b"")


PNG_CELL = (
    "import struct, zlib\nfrom IPython.display import Image, display\n"
    + inspect.getsource(png)
    + "display(Image(data=png(40, 20, (0, 128, 255))))\n"
)
KERAS_BAR = """\
import sys, time
for i in range(1, 101):
    sys.stdout.write(f"\\rEpoch 1/1 {i:3d}/100 [{'=' * (i // 10):<10}] loss: {1 / i:.4f}")
    sys.stdout.flush()
    time.sleep(0.002)
print()
"""
LAST_BAR = "Epoch 1/1 100/100 [==========] loss: 0.0100"
TQDM_CELL = "from tqdm.notebook import tqdm\nfor _ in tqdm(range(50), desc='training'):\n    pass"


def notebook(path: Path, *cells: str | tuple[str, str]) -> Path:
    """Code cells (``"source"``) and ``("markdown", "text")`` cells."""
    return make_notebook(path, cells)


# -- the browser --------------------------------------------------------------------------------

PROBE = """
<script>
window.addEventListener("load", function () {
  var images = Array.from(document.querySelectorAll("img"))
    .filter(function (i) { return i.src.indexOf("data:image/png;base64,") === 0; })
    .map(function (i) { return [i.naturalWidth, i.naturalHeight]; });
  var b = document.getElementById("nbjob-error-cell");
  var banner = b && {text: b.innerText, color: getComputedStyle(b).color,
                     height: b.getBoundingClientRect().height};
  var pre = document.createElement("pre");
  pre.id = "nbjob-probe";
  pre.textContent = JSON.stringify({text: document.body.innerText, images: images,
                                    banner: banner});
  document.body.appendChild(pre);
});
</script>
"""


def _chromium_missing() -> str | None:
    """Why chromium cannot be used here, or None. Installs it (apt) when root and missing."""
    if shutil.which("chromium"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "chromium is not installed and this user is not root (or has no apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
    for argv in (["apt-get", "update", "-qq"], install):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
        if proc.returncode != 0:
            return f"installing chromium failed: {proc.stderr[-2000:]}"
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    reason = _chromium_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the report tests need chromium in CI: {reason}")
        pytest.skip(reason)
    return str(shutil.which("chromium"))


def shown(chromium: str, page: Path) -> dict[str, Any]:
    """What the browser shows of ``page``: the probe's findings plus the DOM it dumped."""
    probed = page.with_name(page.stem + ".probed.html")
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    dom = browse(chromium, probed, "--dump-dom")
    found = re.search(r'<pre id="nbjob-probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run; DOM tail: {dom[-2000:]}"
    return {**json.loads(html.unescape(found.group(1))), "dom": dom}


def widget_state(dom: str) -> dict[str, Any]:
    found = re.search(
        r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', dom, re.S
    )
    assert found, "no widget state in the page"
    return dict(json.loads(found.group(1))["state"])


# -- report.render, without a kernel ------------------------------------------------------------


def test_name_is_the_notebook_stem() -> None:
    assert report.name_for("train.ipynb") == "train.html"
    assert report.name_for("sub/my.model.ipynb") == "my.model.html"


def test_render_embeds_images_widgets_and_banners(tmp_path: Path) -> None:
    folder = tmp_path / "bundle"  # the notebook's folder
    folder.mkdir()
    (folder / "diagram.png").write_bytes(png(8, 4, (255, 0, 0)))
    (tmp_path / "outside.png").write_bytes(png(8, 4, (0, 255, 0)))
    nb = nbformat.v4.new_notebook()
    markdown = '![inside](diagram.png) ![outside](../outside.png) <span style="color:blue">user'
    plot = {"image/png": base64.b64encode(png(40, 20, (0, 0, 255))).decode(), "text/plain": "."}
    nb.cells = [
        nbformat.v4.new_markdown_cell(markdown + " styled</span>"),
        nbformat.v4.new_code_cell("plot()", outputs=[nbformat.v4.new_output("display_data", plot)]),
        nbformat.v4.new_code_cell("1/0"),
    ]
    model = {"model_module": "@jupyter-widgets/controls", "model_module_version": "2.0.0"}
    state = {"m1": {**model, "model_name": "IntSliderModel", "state": {"value": 7}}}
    widgets = {"state": state, "version_major": 2, "version_minor": 0}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": widgets}
    banners.add(nb, 2, "cell 2 raised ZeroDivisionError: <division> by zero")
    page = report.render(nb, folder).decode()
    assert widget_state(page) == state
    assert page.count('src="data:image/png;base64,') == 2  # the output and diagram.png
    assert "../outside.png" in page  # a file outside the notebook's folder is never read
    # inline HTML stays whole (nbconvert's embed_images alone closes the span at once)
    assert '<span style="color:blue">user styled</span>' in page
    assert f'<span id="nbjob-error-cell" style="{banners._STYLE}">nbjob stopped here' in page
    assert "nbjob stopped here: cell 2 raised ZeroDivisionError: &lt;division&gt; by zero" in page
    assert "This run did not finish" in page


def test_the_page_is_nbconverts_html_exporter_page(tmp_path: Path) -> None:
    """nbjob's faster path (no whole-page BeautifulSoup pass, no bleach over pygments' output)
    gives HTMLExporter's page: the same document once both are parsed, for code with markup
    in it, ANSI streams, an image, an HTML output with its own <img>, an error."""
    from bs4 import BeautifulSoup
    from nbconvert import HTMLExporter
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    image = base64.b64encode(png(4, 3, (200, 10, 10))).decode()
    outputs = [
        new_output("stream", name="stdout", text='<b>not bold</b> & "q"\n\x1b[1mbold\x1b[0m\n'),
        new_output("display_data", data={"image/png": image, "text/plain": "<Figure>"}),
        new_output("display_data", data={"text/html": '<p>t</p><img src="x.png" alt="given">'}),
        new_output("error", ename="ValueError", evalue="bad <x>", traceback=["ValueError: <x>"]),
    ]
    code = "print('<b>not bold</b> & \"q\"')\nx = '<script>alert(1)</script>'  # <i>"
    cells = [new_code_cell(code, outputs=outputs, execution_count=i) for i in (1, 2, 3)]
    nb = new_notebook(cells=cells)
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    ours = report.render(nb).decode()
    theirs, _ = HTMLExporter(template_name="lab", embed_images=True).from_notebook_node(nb)
    assert ours.count('tabindex="0"') == 3 * (1 + len(outputs))  # each input and output
    assert ours.count(f'alt="{report.NO_ALT}"') == 3 and ours.count('alt="given"') == 3
    assert "&lt;script&gt;" in ours and "<script>alert" not in ours
    parse = lambda page: str(BeautifulSoup(page, "html.parser"))  # noqa: E731
    assert parse(ours) == parse(theirs)


def test_nbconvert_is_not_imported_when_nbjob_starts() -> None:
    code = "import sys, nbjob.cli, nbjob.job; print('nbconvert' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- nbjob run, looked at in the browser --------------------------------------------------------


def test_a_successful_run_shows_the_last_progress_bar_the_plot_and_the_widget(
    tmp_path: Path, chromium: str
) -> None:
    nb = notebook(
        tmp_path / "train.ipynb", ("markdown", "# Training"), KERAS_BAR, PNG_CELL, TQDM_CELL
    )
    out = tmp_path / "out"
    result = run_nbjob("run", nb, "--output", out)
    assert result.returncode == 0, result.stderr
    assert read_json(out / "run.json")["report"] == {"name": "train.html", "reason": None}
    seen = shown(chromium, out / "train.html")
    assert LAST_BAR in seen["text"]
    assert " 50/100 [" not in seen["text"] and " 50/100 [" not in seen["dom"]
    assert seen["images"] == [[40, 20]]  # embedded and decoded by the browser
    assert seen["banner"] is None and "did not finish" not in seen["text"]
    models = widget_state(seen["dom"]).values()
    bars = [m for m in models if m["model_name"] == "FloatProgressModel"]
    assert [(b["state"]["value"], b["state"]["max"]) for b in bars] == [(50, 50)]
    shot = tmp_path / "train.png"
    browse(chromium, out / "train.html", f"--screenshot={shot}", "--window-size=1000,900")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", shot.read_bytes()[16:24]) == (1000, 900)


@pytest.mark.parametrize(
    ("cell", "flags", "code", "reason"),
    [
        ("raise ValueError('bad <data>')", [], 1, "In [2] (cell 1) raised ValueError: bad <data>"),
        (
            "import time\ntime.sleep(60)",
            ["--cell-timeout", "2"],
            4,
            "In [2] (cell 1) ran longer than 2 s",
        ),
        (
            "import os\nos._exit(3)",
            [],
            5,
            # "In [2] (cell 1)" when the kernel's execute_input came before it died; a kernel
            # killed at once may never send it, and then only the index is known
            "kernel exited with status 3 while running ",
        ),
    ],
    ids=["failing-cell", "timeout", "dead-kernel"],
)
def test_a_failed_run_shows_the_error_banner(
    tmp_path: Path, chromium: str, cell: str, flags: list[str], code: int, reason: str
) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "print('first cell ran')", cell, "print('never')")
    out = tmp_path / "out"
    result = run_nbjob("run", nb, "--output", out, *flags)
    assert result.returncode == code, result.stderr
    assert read_json(out / "run.json")["report"]["name"] == "nb.html"
    seen = shown(chromium, out / "nb.html")
    banner = seen["banner"]
    assert banner["text"].startswith("nbjob stopped here: ") and reason in banner["text"]
    if code == 5:
        assert re.search(r"while running (In \[2\] \(cell 1\)|cell 1)", banner["text"])
    assert banner["color"] == "rgb(255, 0, 0)" and banner["height"] > 10
    assert "This run did not finish" in seen["text"] and "first cell ran" in seen["text"]


def test_the_page_is_titled_with_the_notebooks_name(tmp_path: Path) -> None:
    """As ``jupyter nbconvert`` titles it: a browser tab says which run it shows."""
    nb = notebook(tmp_path / "train <v2>.ipynb", "print(1)")
    out = tmp_path / "out"
    result = run_nbjob("run", nb, "--output", out)
    assert result.returncode == 0, result.stderr
    page = (out / "train <v2>.html").read_text()
    assert re.findall(r"<title>(.*?)</title>", page) == ["train &lt;v2&gt;"]


def test_no_report_writes_none(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "print(1)")
    out = tmp_path / "out"
    result = run_nbjob("run", nb, "--output", out, "--no-report")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "executor.log", "nb.ipynb", "resources.jsonl", "run.json"
    ]  # fmt: skip
    assert read_json(out / "run.json")["report"] == {"name": None, "reason": report.TURNED_OFF}
    by_env = tmp_path / "by-env"
    again = run_nbjob("run", nb, "--output", by_env, env={"NBJOB_NO_REPORT": "1"})
    assert again.returncode == 0 and not (by_env / "nb.html").exists()


def test_a_report_that_cannot_be_stored_is_a_warning_not_an_exit_code(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "print('results first')")
    out = tmp_path / "out"
    (out / "nb.html").mkdir(parents=True)  # the report's place is taken: its write fails
    result = run_nbjob("run", nb, "--output", out)
    assert result.returncode == 0, result.stderr
    record = read_json(out / "run.json")
    assert record["status"] == "succeeded" and record["report"]["name"] is None
    assert record["report"]["reason"]
    assert "results first" in (out / "nb.ipynb").read_text()
    warned = [json.loads(line) for line in (out / "executor.log").read_text().splitlines()]
    assert [e["reason"] for e in warned if e["event"] == "report_not_written"] == [
        record["report"]["reason"]
    ]


def test_an_earlier_attempts_report_is_kept_aside_never_passed_off(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "print('attempt ran')")
    out = tmp_path / "out"
    assert run_nbjob("run", nb, "--output", out).returncode == 0
    assert run_nbjob("run", nb, "--output", out, "--no-report").returncode == 0
    assert "attempt ran" in (out / "attempts" / "1" / "nb.html").read_text()
    note = (out / "nb.html").read_text()
    assert f"No report for this run: {report.TURNED_OFF}." in note and "attempt ran" not in note


def _stopped_run(tmp_path: Path, *flags: str) -> Path:
    """A run stopped by SIGTERM during its second cell; its results folder."""
    slow = "import time\nprint('started', flush=True)\ntime.sleep(120)"
    nb = notebook(tmp_path / "nb.ipynb", KERAS_BAR, slow, "print('never')")
    out = tmp_path / "out"
    proc = start_nbjob("run", nb, "--output", out, *flags)
    try:
        log = out / "executor.log"
        assert wait_until(lambda: log.exists() and '"text": "started' in log.read_text(), 60)
        proc.proc.send_signal(signal.SIGTERM)
        result = proc.wait(timeout=40)
    finally:
        proc.kill()
    assert result.returncode == 143, result.stderr
    return out


def test_a_stopped_run_leaves_a_report_when_time_allows(tmp_path: Path, chromium: str) -> None:
    out = _stopped_run(tmp_path)
    assert read_json(out / "run.json")["report"]["name"] == "nb.html"
    seen = shown(chromium, out / "nb.html")
    assert "stopped by SIGTERM" in seen["banner"]["text"]
    assert LAST_BAR in seen["text"] and "started" in seen["text"]


def test_a_stop_with_no_time_left_skips_the_report(tmp_path: Path) -> None:
    out = _stopped_run(tmp_path, "--stop-grace", "2")
    record = read_json(out / "run.json")
    assert record["status"] == "stopped" and not (out / "nb.html").exists()
    assert record["report"]["name"] is None
    assert record["report"]["reason"].startswith("no time left for it")
    warned = [json.loads(line) for line in (out / "executor.log").read_text().splitlines()]
    assert any(e["event"] == "report_not_written" for e in warned)


def test_report_in_s3_and_kept_with_the_earlier_attempt(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    nb = notebook(tmp_path / "nb.ipynb", "print('attempt')")
    dest = f"s3://{bucket}/runs/r1"
    for _ in range(2):
        result = run_nbjob("run", nb, "--output", dest, "--run-id", "r1", env=s3_server.env)
        assert result.returncode == 0, result.stderr
    head = s3_server.client.head_object(Bucket=bucket, Key="runs/r1/nb.html")
    assert head["ContentType"].startswith("text/html")
    page = s3_server.get(bucket, "runs/r1/nb.html").decode()
    assert "attempt" in page and "<html" in page
    kept = s3_server.client.head_object(Bucket=bucket, Key="runs/r1/attempts/1/nb.html")
    assert kept["ContentType"].startswith("text/html")
    assert json.loads(s3_server.get(bucket, "runs/r1/run.json"))["report"]["name"] == "nb.html"


def test_a_longer_run_has_its_page_rendered_by_chunks_in_nbjob(tmp_path: Path) -> None:
    """A notebook of report.CHUNKED_CELLS cells or more: its page is rendered in nbjob's own
    process (no renderer child: nbjob.report_page, not nbconvert) from the stored notebook, a
    chunk of cells at a time (nbjob.report_cells), into a file; it is the page nbjob renders in
    one pass from the stored notebook, the resources section before its </body>."""
    cells = [("markdown", "# Steps")] + [
        f"import time; time.sleep(0.01); print({i})" for i in range(report.CHUNKED_CELLS)
    ]
    nb = notebook(tmp_path / "nb.ipynb", *cells)
    out = tmp_path / "out"
    result = run_nbjob("run", nb, "--output", out, "--checkpoint-interval", "0.5")
    assert result.returncode == 0, result.stderr
    line = next(e for e in log_events(out) if e["event"] == "report")
    assert line["rendered_by"] == "nbjob" and "prepared" not in line
    stored = nbformat.read(out / "nb.ipynb", 4)
    head, _, tail = report.render(stored, tmp_path, "nb").rpartition(b"</body>")
    page = (out / "nb.html").read_bytes()  # nbjob's resources chart goes before </body>
    assert page.startswith(head) and page.endswith(b"</body>" + tail)
    assert b"Resources used" in page[len(head) :] and line["bytes"] == len(page)


def test_a_refreshed_run_has_its_cells_rendered_ahead_by_the_renderer(tmp_path: Path) -> None:
    """A run whose report is refreshed (--report-interval): the first refresh starts the
    renderer child, the checkpoints after it hand it the notebook and it renders the cells ahead
    (nbjob.report_cells); the final page is rendered there, and it is the page nbjob renders in
    one pass from the stored notebook."""
    cells = [("markdown", "# Steps")] + [
        f"import time; time.sleep(0.04); print({i})" for i in range(report.CHUNKED_CELLS)
    ]
    nb = notebook(tmp_path / "nb.ipynb", *cells)
    out = tmp_path / "out"
    result = run_nbjob(
        "run", nb, "--output", out, "--checkpoint-interval", "0.5", "--report-interval", "1"
    )
    assert result.returncode == 0, result.stderr
    line = next(e for e in log_events(out) if e["event"] == "report")
    assert line["rendered_by"] == "renderer" and line["prepared"] >= 1, line
    stored = nbformat.read(out / "nb.ipynb", 4)
    head, _, tail = report.render(stored, tmp_path, "nb").rpartition(b"</body>")
    page = (out / "nb.html").read_bytes()  # nbjob's resources chart goes before </body>
    assert page.startswith(head) and page.endswith(b"</body>" + tail)


def test_a_lone_colour_escape_still_gets_its_page(tmp_path: Path) -> None:
    """``\\x1b[38m`` with no colour after it fails nbconvert's page (IndexError); a cell that
    printed one still gets its report, the text shown."""
    nb = nbformat.v4.new_notebook()
    out = nbformat.v4.new_output("stream", name="stdout", text="\x1b[38mlone fg \x1b[1;48mbold\n")
    nb.cells = [nbformat.v4.new_code_cell("print(...)", outputs=[out])]
    page = report.render(nb, tmp_path).decode()
    assert 'lone fg <span class="ansi-bold">bold\n</span>' in page
