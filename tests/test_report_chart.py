"""The report's resources section: inline SVG charts built from samples (fast), and a real run's
report looked at in headless Chromium (what the browser draws: the charts' size, the lines'
lengths, the cells' marks, the table)."""

from __future__ import annotations

import html
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from nbjob import report_chart
from support import browse, notebook_json, read_json, run_nbjob

MiB = 2**20
SVG = "{http://www.w3.org/2000/svg}"


def samples(gpu: bool = False) -> list[dict[str, Any]]:
    found = []
    for t in range(20):
        s: dict[str, Any] = {"t": 1000.0 + t, "cell": t // 5, "rss_bytes": (100 + 10 * t) * MiB,
                             "memory_bytes": (150 + 10 * t) * MiB,
                             "memory_limit_bytes": 600 * MiB}  # fmt: skip
        if gpu:
            s["gpus"] = [{"index": 0, "memory_used_bytes": t * 2**30, "utilization": 5 * t}]
        found.append(s)
    return found


def svgs(section: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg .*?</svg>", section, re.S)]


def test_the_memory_chart_has_both_lines_the_limit_and_a_mark_per_cell() -> None:
    cells = {0: {"peak_rss_bytes": 140 * MiB, "cpu_s": 1.5, "gpus": []}}
    section = report_chart.section(samples(), cells)
    (memory,) = svgs(section)
    lines = memory.findall(f"{SVG}polyline")
    assert [p.get("data-series") for p in lines] == ["kernel (process tree)",
                                                     "container (memory cgroup)"]  # fmt: skip
    assert all(len(p.get("points", "").split()) == 20 for p in lines)
    marks = [e for e in memory.findall(f"{SVG}line") if e.get("class") == "cell"]
    assert len(marks) == 4  # cells 0-3
    assert [e for e in memory.findall(f"{SVG}line") if e.get("class") == "limit"]
    assert "<script" not in section and "http://" not in section.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )  # nothing to fetch: the report opens offline
    assert "<td>140 MiB</td><td>1.5</td>" in section


def test_gpus_get_a_memory_and_a_utilization_chart() -> None:
    charts = svgs(report_chart.section(samples(gpu=True), {}))
    assert [c.get("aria-label") for c in charts] == [
        "Memory over time", "GPU memory", "GPU utilization (%)"
    ]  # fmt: skip


def test_the_section_goes_before_the_body_end_and_nothing_sampled_adds_nothing() -> None:
    page = b"<html><body><p>nb</p></body></html>"
    lines = b"".join(json.dumps(s).encode() + b"\n" for s in samples())
    added = report_chart.insert(page, report_chart.html(lines + b"not json\n", {}))
    assert added.startswith(b"<html><body><p>nb</p><section") and added.endswith(b"</body></html>")
    assert report_chart.insert(page, report_chart.html(b"", {})) == page


PROBE = """
<script>
window.addEventListener("load", function () {
  var s = document.getElementById("nbjob-resources");
  var charts = Array.from(s.querySelectorAll("svg")).map(function (svg) {
    var r = svg.getBoundingClientRect();
    return {label: svg.getAttribute("aria-label"), width: r.width, height: r.height,
            lines: Array.from(svg.querySelectorAll("polyline")).map(function (p) {
              return p.getTotalLength(); }),
            cells: svg.querySelectorAll("line.cell").length};
  });
  var pre = document.createElement("pre");
  pre.id = "nbjob-probe";
  pre.textContent = JSON.stringify({charts: charts, text: s.innerText});
  document.body.appendChild(pre);
});
</script>
"""


def test_a_runs_report_shows_its_memory_chart_in_a_browser(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (tests/test_report.py installs it when root)")
    hold = "b = bytearray(200 * 2**20)\nb[::4096] = b'x' * len(b[::4096])\ntime.sleep(1.5)"
    cells = ["import time\ntime.sleep(1.5)", hold, "del b\ntime.sleep(1.5)"]
    (tmp_path / "nb.ipynb").write_bytes(notebook_json(cells))
    out = tmp_path / "out"
    result = run_nbjob("run", tmp_path / "nb.ipynb", "--output", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_json(out / "run.json")["report"]["name"] == "nb.html"
    page = out / "nb.probed.html"
    page.write_text((out / "nb.html").read_text().replace("</body>", PROBE + "</body>"))
    dom = browse(chromium, page, "--dump-dom")
    found = re.search(r'<pre id="nbjob-probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    probe = json.loads(html.unescape(found.group(1)))
    (memory,) = probe["charts"]
    assert memory["label"] == "Memory over time" and memory["width"] > 500
    assert memory["height"] > 100 and memory["cells"] == 3
    assert len(memory["lines"]) == 2 and all(length > 100 for length in memory["lines"])
    assert "Resources used" in probe["text"] and "peak memory" in probe["text"]
    peak = read_json(out / "run.json")["cells"][1]["resources"]["peak_rss_bytes"]
    assert f"{peak / MiB:.0f} MiB" in probe["text"]
