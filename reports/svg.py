"""Interactive plots as inline SVG, and click-to-sort tables, for the self-contained report page.

A plot drawn here is SVG text, so each point can carry its own `<title>`: hovering a point in any
browser shows its details (trial, policy, key config values, thresholds) as a native tooltip, with
no JavaScript and no network. Only the standard library is used, so importing this is cheap, and the
output is deterministic (same input -> same string; coordinates printed with at most 2 decimals).

* `scatter_svg(series, ...)` - one `<svg>` element with axes, grid, ticks, labels, legend and points;
  every drawn point is a `<g class="pt" transform="translate(x,y)">` holding a `<title>` and its marker.
* `nice_ticks` / `format_tick` - 1-2-5 axis ticks and their compact labels (also usable for tables).
* `SORTABLE_TABLE_SCRIPT` - a `<script>` block that makes every `<table class="sortable">` sortable.

Every string taken from the data is escaped (`html.escape(..., quote=True)`), and characters that XML
1.0 forbids are dropped, so the output is always well-formed XML and data can never become markup.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

__all__ = ["SORTABLE_TABLE_SCRIPT", "SvgPoint", "SvgSeries", "format_tick", "nice_ticks", "scatter_svg"]


class SvgPoint(NamedTuple):
    x: float
    y: float
    title: str  # tooltip text; newlines are kept (browsers show them as line breaks)


class SvgSeries(NamedTuple):
    label: str  # legend text ("" = not in the legend)
    points: tuple[SvgPoint, ...]
    color: str = "#1f77b4"
    marker: str = "circle"  # "circle" | "square" | "diamond" | "triangle-up" | "triangle-down" | "star" | "none"
    size: float = 5.0  # marker radius in px
    filled: bool = True
    opacity: float = 1.0
    line: bool = False  # also join the points, in the given order, with a polyline
    line_style: str = "solid"  # "solid" | "dashed" | "dotted"


_DASHES = {"solid": "", "dashed": ' stroke-dasharray="6 4"', "dotted": ' stroke-dasharray="1.5 3" stroke-linecap="round"'}
_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_HOVER_CSS = "<style>.svgplot .pt:hover>*{stroke:#000;stroke-width:2px}</style>"


def _esc(text: object) -> str:
    return html.escape(_NOT_XML.sub("", str(text)), quote=True)


def _num(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def nice_ticks(lo: float, hi: float, max_ticks: int = 6) -> list[float]:
    """Evenly spaced ticks with a 1, 2 or 5 x 10^k step, the first <= lo and the last >= hi, at most max_ticks."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"nice_ticks needs finite bounds, got {lo!r}, {hi!r}")
    lo, hi = min(lo, hi), max(lo, hi)
    if lo == hi:  # a single value still gets ticks around it
        half = abs(lo) * 0.1 or 1.0
        lo, hi = lo - half, hi + half
    max_ticks = max(2, int(max_ticks))
    magnitude = 10.0 ** math.floor(math.log10((hi - lo) / (max_ticks - 1)))
    for mult in (1, 2, 5, 10):  # 10 x magnitude always fits, so the loop always ends with a valid step
        step = mult * magnitude
        first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
        if last - first + 1 <= max_ticks:
            break
    digits = max(0, -math.floor(math.log10(step))) + 1  # rounding removes float noise like 0.6000000000000001
    return [round(k * step, digits) for k in range(first, last + 1)]


def format_tick(value: float, step: float) -> str:
    """A tick label: decimals as the step needs them, k/M/G/T from 1000 up ("250M", "1.5G"), "0" for zero."""
    if not math.isfinite(value):
        return str(value)
    step = abs(step) or abs(value) or 1.0
    scale, suffix = 1.0, ""
    for factor, name in _SI:
        if max(abs(value), step) >= factor:
            scale, suffix = factor, name
            break
    unit = step / scale
    decimals = next((d for d in range(13) if abs(round(unit, d) - unit) <= 1e-9 * unit), 12)
    text = f"{value / scale:.{decimals}f}"
    return "0" if float(text) == 0 else text + suffix


def _axis_ticks(lo: float, hi: float, max_ticks: int, log: bool) -> list[tuple[float, str]]:
    """(position in axis units, label) for ticks inside [lo, hi]; on a log axis positions are log10 values."""
    eps = (hi - lo) * 1e-9
    if log:
        every = max(1, math.ceil((hi - lo) / max_ticks))  # skip decades on wide ranges
        mults = (1, 2, 5) if hi - lo <= 2.5 else (1,)
        values = [m * 10.0**d for d in range(math.floor(lo), math.ceil(hi) + 1) if d % every == 0 for m in mults]
        ticks = [(math.log10(v), format_tick(v, 10.0 ** math.floor(math.log10(v) + 1e-9))) for v in values]
        ticks = [t for t in ticks if lo - eps <= t[0] <= hi + eps]
        if len(ticks) >= 2:
            return ticks
    # linear ticks; on a log axis spanning less than a decade: linear values at log positions
    linear = nice_ticks(10.0**lo, 10.0**hi, max_ticks) if log else nice_ticks(lo, hi, max_ticks)
    step = linear[1] - linear[0]
    ticks = [(math.log10(v) if log else v, format_tick(v, step)) for v in linear if v > 0 or not log]
    return [t for t in ticks if lo - eps <= t[0] <= hi + eps]


def _padded(values: list[float], flat_half: float | None) -> tuple[float, float]:
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if lo == hi:  # constant data: centre it in a range of sensible width
        half = flat_half if flat_half is not None else (abs(lo) * 0.1 or 0.5)
        return lo - half, hi + half
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def _marker(shape: str, r: float, style: str) -> str:
    """The marker element, centred on the origin (each point group translates it into place)."""
    def path(coords: list[tuple[float, float]]) -> str:
        return '<path d="M' + " L".join(f"{_num(x)},{_num(y)}" for x, y in coords) + f'Z"{style}/>'

    if shape == "circle":
        return f'<circle r="{_num(r)}"{style}/>'
    if shape == "square":
        return f'<rect x="{_num(-0.9 * r)}" y="{_num(-0.9 * r)}" width="{_num(1.8 * r)}" height="{_num(1.8 * r)}"{style}/>'
    if shape == "diamond":
        return path([(0, -1.25 * r), (1.25 * r, 0), (0, 1.25 * r), (-1.25 * r, 0)])
    if shape in ("triangle-up", "triangle-down"):
        sign = 1 if shape == "triangle-up" else -1
        return path([(0, -1.25 * r * sign), (1.1 * r, 0.75 * r * sign), (-1.1 * r, 0.75 * r * sign)])
    if shape == "star":
        return path([((1.35 if k % 2 == 0 else 0.55) * r * math.sin(k * math.pi / 5),
                      -(1.35 if k % 2 == 0 else 0.55) * r * math.cos(k * math.pi / 5)) for k in range(10)])
    if shape == "none":  # invisible, but still a hover target so the tooltip works on a plain line
        return f'<circle r="{_num(max(r, 3.0))}" fill="none" stroke="none" pointer-events="all"/>'
    raise ValueError(f"unknown marker {shape!r}")


def _series_marker(s: SvgSeries, r: float) -> str:
    color = _esc(s.color)
    alpha = f' opacity="{_num(s.opacity)}"' if s.opacity < 1 else ""
    # unfilled markers: pointer-events="visible" so hovering the hollow inside still shows the tooltip
    fill = f' fill="{color}" stroke="{color}"' if s.filled else f' fill="none" stroke="{color}" stroke-width="1.5" pointer-events="visible"'
    return _marker(s.marker, r, fill + alpha)


def _line(s: SvgSeries, coords: str) -> str:
    if s.line_style not in _DASHES:
        raise ValueError(f"unknown line_style {s.line_style!r}")
    alpha = f' stroke-opacity="{_num(s.opacity)}"' if s.opacity < 1 else ""
    return f'<polyline class="line" points="{coords}" fill="none" stroke="{_esc(s.color)}" stroke-width="1.5"{alpha}{_DASHES[s.line_style]}/>'


def scatter_svg(series: Sequence[SvgSeries], *, title: str = "", x_label: str = "", y_label: str = "",
                width: int = 760, height: int = 440, x_log: bool = False,
                x_guides: Sequence[tuple[float, str]] = ()) -> str:
    """An <svg> element (string) with axes, ticks, grid, axis labels, title, the series, and a legend.

    Every drawn point is a <g class="pt"> holding its marker and a <title> with the point's text.
    Non-finite points (and, with x_log, points with x <= 0) are skipped and counted in data-skipped.
    x_guides: vertical dotted reference lines with a label; the x range is widened to show them.
    Lines are drawn first, then the points, series in the order given (later on top).
    """
    def usable_x(x: float) -> bool:
        return math.isfinite(x) and (x > 0 or not x_log)

    to_x: Callable[[float], float] = math.log10 if x_log else float
    kept = [[p for p in s.points if usable_x(p.x) and math.isfinite(p.y)] for s in series]
    skipped = sum(len(s.points) for s in series) - sum(map(len, kept))
    guides = [(to_x(gx), str(label)) for gx, label in x_guides if usable_x(gx)]
    xs = [to_x(p.x) for pts in kept for p in pts]
    x_lo, x_hi = _padded(xs + [g[0] for g in guides], 0.5 if x_log else None)
    y_lo, y_hi = _padded([p.y for pts in kept for p in pts], None)

    legend = [s for s in series if s.label]
    legend_w = min(width * 0.4, 36 + 6.2 * max(len(s.label) for s in legend)) if legend else 0.0
    left, top = 62.0, 34.0 if title else 14.0
    right, bottom = max(left + 20, width - 14 - legend_w), max(top + 20, height - 44.0)

    def px(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo) * (right - left)

    def py(v: float) -> float:
        return bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="svgplot" viewBox="0 0 {_num(width)} {_num(height)}" '
           f'width="{_num(width)}" height="{_num(height)}" style="max-width:100%;height:auto" role="img" '
           f'aria-label="{_esc(title or "plot")}" data-skipped="{skipped}" font-family="sans-serif" font-size="11">']
    if title:
        out.append(f"<title>{_esc(title)}</title>")
    out.append(_HOVER_CSS)
    out.append(f'<rect class="frame" x="{_num(left)}" y="{_num(top)}" width="{_num(right - left)}" '
               f'height="{_num(bottom - top)}" fill="#fff" stroke="#bbb"/>')
    for pos, label in _axis_ticks(x_lo, x_hi, max(3, int((right - left) // 80)), x_log):
        x = _num(px(pos))
        out.append(f'<line x1="{x}" y1="{_num(top)}" x2="{x}" y2="{_num(bottom)}" stroke="#eee"/>'
                   f'<text class="xtick" x="{x}" y="{_num(bottom + 14)}" text-anchor="middle" fill="#444">{label}</text>')
    for pos, label in _axis_ticks(y_lo, y_hi, max(3, int((bottom - top) // 50)), False):
        y = _num(py(pos))
        out.append(f'<line x1="{_num(left)}" y1="{y}" x2="{_num(right)}" y2="{y}" stroke="#eee"/>'
                   f'<text class="ytick" x="{_num(left - 5)}" y="{_num(py(pos) + 4)}" text-anchor="end" fill="#444">{label}</text>')
    if title:
        out.append(f'<text class="title" x="{_num((left + right) / 2)}" y="20" text-anchor="middle" font-size="13" '
                   f'font-weight="bold">{_esc(title)}</text>')
    if x_label:
        out.append(f'<text class="xlabel" x="{_num((left + right) / 2)}" y="{_num(height - 8)}" text-anchor="middle">{_esc(x_label)}</text>')
    if y_label:
        cy = _num((top + bottom) / 2)
        out.append(f'<text class="ylabel" x="14" y="{cy}" transform="rotate(-90 14 {cy})" text-anchor="middle">{_esc(y_label)}</text>')
    if not xs:
        out.append(f'<text class="nodata" x="{_num((left + right) / 2)}" y="{_num((top + bottom) / 2)}" '
                   f'text-anchor="middle" fill="#888" font-size="14">no data</text>')
    for gx, label in guides:
        x, far_right = px(gx), px(gx) > left + 0.7 * (right - left)  # labels near the right edge go to the line's left
        out.append(f'<g class="guide"><title>{_esc(label)}</title><line x1="{_num(x)}" y1="{_num(top)}" x2="{_num(x)}" '
                   f'y2="{_num(bottom)}" stroke="#555" stroke-dasharray="2 3"/><text x="{_num(x - 3 if far_right else x + 3)}" '
                   f'y="{_num(top + 11)}" text-anchor="{"end" if far_right else "start"}" font-size="10" fill="#555">{_esc(label)}</text></g>')
    for s, pts in zip(series, kept):  # all lines first, so that no line hides a point
        if s.line and len(pts) >= 2:
            out.append(_line(s, " ".join(f"{_num(px(to_x(p.x)))},{_num(py(p.y))}" for p in pts)))
    for s, pts in zip(series, kept):
        marker = _series_marker(s, s.size)
        out.append(f'<g class="series" data-label="{_esc(s.label)}">')
        out.extend(f'<g class="pt" transform="translate({_num(px(to_x(p.x)))},{_num(py(p.y))})"><title>{_esc(p.title)}</title>'
                   f'{marker}</g>' for p in pts)
        out.append("</g>")
    if legend:
        out.append('<g class="legend">')
        for i, s in enumerate(legend):
            line = _line(s, "0,0 20,0") if s.line else ""
            out.append(f'<g class="legend-item" transform="translate({_num(right + 10)},{_num(top + 8 + 16 * i)})">{line}'
                       f'<g transform="translate(10,0)">{_series_marker(s, min(s.size, 5.0))}</g>'
                       f'<text x="26" y="4">{_esc(s.label)}</text></g>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


SORTABLE_TABLE_SCRIPT: str = r"""<script>
/* Click-to-sort headers for every <table class="sortable">: cells that read as numbers sort numerically,
   other text naturally; empty and "\u2014" (em dash) cells stay last in both directions; a second click reverses.
   A data-sort attribute on a cell, when present, is used instead of its text. */
(() => {
  "use strict";
  const MISSING = new Set(["", "\u2014", "\u2013", "-", "n/a", "nan", "NaN", "None"]);
  const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i;
  const SCALE = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "%": 1};
  const collator = new Intl.Collator(undefined, {numeric: true, sensitivity: "base"});
  // Sort key of a cell: null (missing), a number ("1,234", "12%", "3.5M" included) or the text.
  const cellKey = (cell) => {
    if (!cell) return null;
    const raw = cell.getAttribute("data-sort");
    const text = (raw !== null ? raw : cell.textContent).trim().replace(/\u2212/g, "-");
    if (MISSING.has(text)) return null;
    const compact = text.replace(/[,\s]/g, "");
    const scale = SCALE[compact.slice(-1)];
    const body = scale ? compact.slice(0, -1) : compact;
    return NUMBER.test(body) ? Number(body) * (scale || 1) : text;
  };
  const compareKeys = (a, b) => {
    const an = typeof a === "number", bn = typeof b === "number";
    if (an && bn) return a - b;
    if (an !== bn) return an ? -1 : 1;
    return collator.compare(a, b);
  };
  // Rows sorted by column col; missing cells last whatever the direction; ties keep their current order.
  const sortRows = (rows, col, descending) => rows
    .map((row, index) => ({row, index, key: cellKey(row.cells[col])}))
    .sort((p, q) => (p.key === null || q.key === null)
      ? (p.key === null) - (q.key === null) || p.index - q.index
      : (descending ? -1 : 1) * compareKeys(p.key, q.key) || p.index - q.index)
    .map((entry) => entry.row);
  const init = (table) => {
    const head = table.tHead ? table.tHead.rows[0] : table.rows[0];
    const body = table.tBodies[0];
    if (!head || !body || table.getAttribute("data-sortable-ready") !== null) return;
    table.setAttribute("data-sortable-ready", "");
    const headers = Array.from(head.cells);
    const marks = headers.map((th) => th.appendChild(document.createElement("span")));
    let sorted = -1, descending = false;
    headers.forEach((th, col) => {
      const activate = () => {
        descending = sorted === col ? !descending : false;
        sorted = col;
        const rows = Array.from(body.rows).filter((row) => row !== head);
        sortRows(rows, col, descending).forEach((row) => body.appendChild(row));
        marks.forEach((mark, i) => { mark.textContent = i !== col ? "" : descending ? " \u25bc" : " \u25b2"; });
        headers.forEach((h, i) => h.setAttribute("aria-sort", i !== col ? "none" : descending ? "descending" : "ascending"));
      };
      th.style.cursor = "pointer";
      th.tabIndex = 0;
      th.setAttribute("aria-sort", "none");
      th.addEventListener("click", activate);
      th.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); activate(); } });
    });
  };
  const start = () => document.querySelectorAll("table.sortable").forEach(init);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
</script>"""
