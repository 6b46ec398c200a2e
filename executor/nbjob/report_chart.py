"""The report's resources section: memory over time with the cells' boundaries, GPU memory and
utilization when there is a GPU, and each cell's figures — inline SVG, no script, no CDN (the
report must open offline).

``section`` builds it from the samples (``resources.jsonl``'s lines) and the cells' figures
(run.json's ``cells[].resources``); ``insert`` puts it before the page's ``</body>`` (the
renderer child puts it in as it writes the final page: ``nbjob.report_cells``).
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

W, H = 900, 220  # the plot's size in SVG units (it scales to the page's width)
PAD_L, PAD_R, PAD_T, PAD_B = 70, 20, 12, 28
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
CELL_MARKS = 60  # at most this many cell boundaries are labelled


def html(samples: bytes, cells: dict[int, dict[str, Any]]) -> str:
    """The resources section of resources.jsonl's ``samples`` and the cells' figures."""
    return section(parse(samples), cells)


def insert(page: bytes, html: str) -> bytes:
    """``page`` with ``html`` before its ``</body>`` (unchanged: none, or no ``</body>``)."""
    end = page.rfind(b"</body>")
    if not html or end < 0:
        return page
    whole = memoryview(page)  # one copy of a page of many MB, not one per piece added
    return b"".join((whole[:end], html.encode(), whole[end:]))


def parse(data: bytes) -> list[dict[str, Any]]:
    """resources.jsonl's samples (a line that is not JSON is skipped)."""
    found = []
    for line in data.splitlines():
        try:
            sample = json.loads(line)
        except ValueError:
            continue
        if isinstance(sample, dict) and isinstance(sample.get("t"), int | float):
            found.append(sample)
    return found


def size(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.0f} MiB"


def section(samples: list[dict[str, Any]], cells: dict[int, dict[str, Any]]) -> str:
    """The section's HTML; empty when nothing was sampled."""
    if len(samples) < 2 and not cells:
        return ""
    parts = ['<section id="nbjob-resources" style="margin:2em 1em;font-family:sans-serif">',
             "<h2>Resources used</h2>"]  # fmt: skip
    if len(samples) >= 2:
        memory = {
            "kernel (process tree)": [(s["t"], s.get("rss_bytes")) for s in samples],
            "container (memory cgroup)": [(s["t"], s.get("memory_bytes")) for s in samples],
        }
        limit = next((s["memory_limit_bytes"] for s in reversed(samples)
                      if s.get("memory_limit_bytes")), None)  # fmt: skip
        parts.append(chart("Memory over time", memory, samples, size, limit))
        gpus = sorted({g["index"] for s in samples for g in s.get("gpus") or []})
        if gpus:
            used = {f"GPU {i}": _gpu(samples, i, "memory_used_bytes") for i in gpus}
            busy = {f"GPU {i}": _gpu(samples, i, "utilization") for i in gpus}
            parts.append(chart("GPU memory", used, samples, size))
            parts.append(chart("GPU utilization (%)", busy, samples, lambda v: f"{v:.0f} %", 100))
    if cells:
        parts.append(table(cells))
    parts.append("</section>")
    return "\n".join(parts)


def _gpu(samples: list[dict[str, Any]], index: int, key: str) -> list[tuple[float, Any]]:
    return [
        (s["t"], next((g.get(key) for g in s.get("gpus") or [] if g.get("index") == index), None))
        for s in samples
    ]


def chart(
    title: str,
    series: dict[str, list[tuple[float, Any]]],
    samples: list[dict[str, Any]],
    label: Any,
    limit: float | None = None,
) -> str:
    """One SVG line chart: a line per series, the limit dashed, the cells' starts as marks."""
    t0, t1 = samples[0]["t"], samples[-1]["t"]
    values = [v for points in series.values() for _, v in points if isinstance(v, int | float)]
    top = max([*values, limit or 0, 1])
    span = max(t1 - t0, 1e-9)

    def x(t: float) -> float:
        return PAD_L + (t - t0) / span * (W - PAD_L - PAD_R)

    def y(v: float) -> float:
        return PAD_T + (1 - v / top) * (H - PAD_T - PAD_B)

    out = [f'<figure style="margin:1em 0"><figcaption>{escape(title)}</figcaption>',
           f'<svg viewBox="0 0 {W} {H}" width="100%" role="img" '
           f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
           f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" '
           f'height="{H - PAD_T - PAD_B}" fill="none" stroke="#ccc"/>']  # fmt: skip
    out += _cell_marks(samples, x)
    for v in (0, top / 2, top):
        out.append(f'<text x="{PAD_L - 6}" y="{y(v) + 4:.1f}" font-size="11" '
                   f'text-anchor="end">{escape(label(v))}</text>')  # fmt: skip
    out.append(f'<text x="{W - PAD_R}" y="{H - 6}" font-size="11" text-anchor="end">'
               f"{t1 - t0:.0f} s</text>")  # fmt: skip
    if limit:
        out.append(f'<line class="limit" x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(limit):.1f}" '
                   f'y2="{y(limit):.1f}" stroke="#000" stroke-dasharray="6 4"/>')  # fmt: skip
    legend = []
    for n, (name, points) in enumerate(series.items()):
        color = COLORS[n % len(COLORS)]
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points
                          if isinstance(v, int | float))  # fmt: skip
        if coords:
            out.append(f'<polyline data-series="{escape(name)}" points="{coords}" '
                       f'fill="none" stroke="{color}" stroke-width="1.5"/>')  # fmt: skip
            legend.append(f'<span style="color:{color}">&#9644; {escape(name)}</span>')
    if limit:
        legend.append(f"<span>&#8212; &#8212; limit {escape(label(limit))}</span>")
    out.append("</svg>")
    out.append(f'<div style="font-size:0.85em">{" &nbsp; ".join(legend)}</div></figure>')
    return "\n".join(out)


def _cell_marks(samples: list[dict[str, Any]], x: Any) -> list[str]:
    """A thin line where each cell's first sample is, labelled with its index."""
    marks: list[str] = []
    seen = None
    for s in samples:
        cell = s.get("cell")
        if cell is not None and cell != seen and len(marks) < 2 * CELL_MARKS:
            at = x(s["t"])
            marks.append(f'<line class="cell" x1="{at:.1f}" x2="{at:.1f}" y1="{PAD_T}" '
                         f'y2="{H - PAD_B}" stroke="#bbb" stroke-width="0.8"/>')  # fmt: skip
            marks.append(f'<text x="{at + 2:.1f}" y="{PAD_T + 10}" font-size="9" '
                         f'fill="#777">{cell}</text>')  # fmt: skip
        seen = cell if cell is not None else seen
    return marks


def table(cells: dict[int, dict[str, Any]]) -> str:
    """Each cell's peak memory, CPU seconds and GPUs."""
    rows = ['<table style="border-collapse:collapse;font-size:0.9em">',
            "<style>#nbjob-resources td,#nbjob-resources th{padding:2px 12px;"
            "border-bottom:1px solid #ddd;text-align:right}</style>",
            "<tr><th>cell</th><th>peak memory</th><th>CPU (s)</th><th>GPUs</th></tr>"]  # fmt: skip
    for index, r in sorted(cells.items()):
        peak = r.get("peak_rss_bytes")
        gpus = "; ".join(
            f"GPU {g['index']}: {size(g['peak_memory_bytes'])}"
            + (f", {g['mean_utilization']:.0f} %" if g.get("mean_utilization") is not None else "")
            for g in r.get("gpus") or []
        )
        cpu = "" if r.get("cpu_s") is None else r["cpu_s"]
        memory = size(peak) if peak else ""
        rows.append(f"<tr><td>{index}</td><td>{memory}</td><td>{cpu}</td>"
                    f"<td>{escape(gpus)}</td></tr>")  # fmt: skip
    rows.append("</table>")
    return "\n".join(rows)
