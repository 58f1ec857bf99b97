"""Tests of reports.svg: ticks, the inline-SVG scatter plots (parsed back with ElementTree) and the sortable-table script (run
under node with a small fake DOM)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from reports.svg import SORTABLE_TABLE_SCRIPT, SvgPoint, SvgSeries, format_tick, nice_ticks, scatter_svg

NS = "{http://www.w3.org/2000/svg}"
NAN, INF = float("nan"), float("inf")


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    return root


def _by_class(root: ET.Element, cls: str) -> list[ET.Element]:
    return [el for el in root.iter() if el.get("class") == cls]


def _pos(el: ET.Element) -> tuple[float, float]:
    match = re.fullmatch(r"translate\(([-\d.]+),([-\d.]+)\)", el.get("transform", ""))
    assert match, el.get("transform")
    return float(match[1]), float(match[2])


def _frame(root: ET.Element) -> tuple[float, float, float, float]:
    (rect,) = _by_class(root, "frame")
    x, y = float(rect.get("x")), float(rect.get("y"))
    return x, y, x + float(rect.get("width")), y + float(rect.get("height"))


def _assert_points_inside(root: ET.Element) -> list[tuple[float, float]]:
    left, top, right, bottom = _frame(root)
    positions = [_pos(g) for g in _by_class(root, "pt")]
    for x, y in positions:
        assert left < x < right and top < y < bottom, (x, y)
    return positions


def _ticks(root: ET.Element, cls: str) -> list[str]:
    return [el.text for el in _by_class(root, cls)]


# ---------------------------------------------------------------------------------------------------------------- ticks

@pytest.mark.parametrize(("lo", "hi", "expected"), [
    (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (0.12, 0.13, [0.12, 0.122, 0.124, 0.126, 0.128, 0.13]),
    (3e6, 2.5e8, [0.0, 5e7, 1e8, 1.5e8, 2e8, 2.5e8]),
    (-3.0, -1.0, [-3.0, -2.5, -2.0, -1.5, -1.0]),
    (-1.0, 1.0, [-1.0, -0.5, 0.0, 0.5, 1.0]),
    (1.0, -1.0, [-1.0, -0.5, 0.0, 0.5, 1.0]),
    (5.0, 5.0, [4.5, 5.0, 5.5]),
    (0.0, 0.0, [-1.0, -0.5, 0.0, 0.5, 1.0]),
])
def test_nice_ticks_hand_picked(lo: float, hi: float, expected: list[float]) -> None:
    assert nice_ticks(lo, hi) == expected


@pytest.mark.parametrize(("lo", "hi", "max_ticks"), [
    (0.0, 1.01, 6), (0.001, 0.0037, 5), (-250.0, 3.0, 6), (17.0, 17.5, 4), (1e-9, 3e-9, 6), (123456.0, 9876543.0, 8), (7.0, 7.0, 2),
])
def test_nice_ticks_cover_the_range_with_a_125_step(lo: float, hi: float, max_ticks: int) -> None:
    ticks = nice_ticks(lo, hi, max_ticks)
    assert 2 <= len(ticks) <= max_ticks
    assert ticks[0] <= min(lo, hi) and ticks[-1] >= max(lo, hi)
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-6
    assert all(math.isclose(b - a, step, rel_tol=1e-6) for a, b in zip(ticks, ticks[1:]))


def test_nice_ticks_rejects_non_finite() -> None:
    with pytest.raises(ValueError):
        nice_ticks(0.0, INF)


@pytest.mark.parametrize(("value", "step", "expected"), [
    (0.1 + 0.2, 0.1, "0.3"),
    (0.6000000000000001, 0.2, "0.6"),
    (0.124, 0.002, "0.124"),
    (0.12, 0.002, "0.120"),
    (-2.5, 0.5, "-2.5"),
    (-0.0, 0.5, "0"),
    (1e-17, 0.1, "0"),
    (3.0, 1.0, "3"),
    (250.0, 50.0, "250"),
    (2.5e8, 5e7, "250M"),
    (0.0, 5e7, "0"),
    (1.5e9, 5e8, "1.5G"),
    (-5e7, 5e7, "-50M"),
    (1200.0, 100.0, "1.2k"),
    (3e12, 1e12, "3T"),
])
def test_format_tick(value: float, step: float, expected: str) -> None:
    assert format_tick(value, step) == expected


# ---------------------------------------------------------------------------------------------------------------- scatter

TRICKY = 'trial 7 & "fine"\npolicy: <script>alert(1)</script>\nthresholds: 0.5, 0.9'


def _example() -> list[SvgSeries]:
    return [
        SvgSeries("all trials", (SvgPoint(1.0, 0.5, TRICKY), SvgPoint(NAN, 0.7, "nan x"), SvgPoint(2.0, 0.6, "b"),
                                 SvgPoint(3.0, INF, "inf y"), SvgPoint(4.0, 0.8, "c")), marker="square", filled=False, opacity=0.5),
        SvgSeries("", (SvgPoint(2.5, 0.65, "hidden label"),), marker="none"),
        SvgSeries("front <b>", (SvgPoint(1.0, 0.5, "f1"), SvgPoint(4.0, 0.8, "f2")), color="#d62728", marker="star",
                  line=True, line_style="dashed"),
        SvgSeries("fine", (SvgPoint(3.0, 0.7, "t"),), marker="triangle-up"),
        SvgSeries("coarse", (SvgPoint(3.5, 0.7, "v"),), marker="triangle-down", size=7),
        SvgSeries("d", (SvgPoint(1.5, 0.55, "d"),), marker="diamond", line_style="dotted"),
    ]


def test_scatter_is_well_formed_and_accessible() -> None:
    svg = scatter_svg(_example(), title="Accuracy vs cost", x_label="MFLOPs", y_label="top-1")
    root = _parse(svg)
    assert root.get("role") == "img" and root.get("aria-label") == "Accuracy vs cost"
    assert re.fullmatch(r"0 0 760 440", root.get("viewBox"))
    assert [el.text for el in root.findall(f"{NS}title")] == ["Accuracy vs cost"]
    assert _by_class(root, "xlabel")[0].text == "MFLOPs" and _by_class(root, "ylabel")[0].text == "top-1"
    assert _by_class(root, "title")[0].text == "Accuracy vs cost"
    assert len(_ticks(root, "xtick")) >= 3 and len(_ticks(root, "ytick")) >= 3


def test_one_title_per_finite_point_with_text_preserved() -> None:
    root = _parse(scatter_svg(_example()))
    groups = _by_class(root, "pt")
    titles = [g.findall(f"{NS}title") for g in groups]
    assert all(len(t) == 1 for t in titles)
    # drawn in the given series order, point order kept; NaN/inf points dropped
    assert [t[0].text for t in titles] == [TRICKY, "b", "c", "hidden label", "f1", "f2", "t", "v", "d"]
    assert root.get("data-skipped") == "2"
    assert not any(el.tag.endswith("script") for el in root.iter())
    _assert_points_inside(root)


def test_markup_in_labels_is_escaped() -> None:
    svg = scatter_svg([SvgSeries("<script>x</script>", (SvgPoint(1, 1, "<img src=x>"),), color='"><script>')],
                      title="<b>t</b>", x_label="a<b", y_label="&")
    assert "<script" not in svg and "<img" not in svg and "<b>" not in svg
    root = _parse(svg)
    assert root.get("aria-label") == "<b>t</b>"
    assert [el.text for el in _by_class(root, "legend-item")[0].iter(f"{NS}text")] == ["<script>x</script>"]


def test_characters_xml_forbids_are_dropped() -> None:
    root = _parse(scatter_svg([SvgSeries("a\x00b", (SvgPoint(1, 1, "x\x01y\ttab\r\nz"),))]))
    assert _by_class(root, "pt")[0].find(f"{NS}title").text == "xy\ttab\nz"


def test_lines_before_points_and_line_styles() -> None:
    root = _parse(scatter_svg(_example()))
    order = [el.get("class") for el in root.iter() if el.get("class") in ("line", "pt")]
    first_pt = order.index("pt")
    assert order[:first_pt] == ["line"] and "line" not in order[first_pt:first_pt + 9]
    (line,) = [el for el in root.iter(f"{NS}polyline") if el.get("class") == "line" and len(el.get("points").split()) == 2
               and el.get("points") != "0,0 20,0"]
    assert line.get("stroke-dasharray") == "6 4" and line.get("stroke") == "#d62728"
    front = [_pos(g) for g in _by_class(root, "pt")][4:6]
    assert [tuple(map(float, p.split(","))) for p in line.get("points").split()] == front


def test_legend_lists_labelled_series_only_with_their_markers() -> None:
    root = _parse(scatter_svg(_example()))
    items = _by_class(root, "legend-item")
    assert [item.find(f"{NS}text").text for item in items] == ["all trials", "front <b>", "fine", "coarse", "d"]
    assert items[0].find(f".//{NS}rect") is not None  # square marker
    assert items[1].find(f".//{NS}path") is not None and items[1].find(f"{NS}polyline") is not None  # star + line
    left, _, right, _ = _frame(root)
    width = float(root.get("viewBox").split()[2])
    assert all(right < _pos(item)[0] < width for item in items)


def test_legend_absent_when_no_labels() -> None:
    root = _parse(scatter_svg([SvgSeries("", (SvgPoint(1, 2, "a"),))]))
    assert not _by_class(root, "legend") and not _by_class(root, "legend-item")


@pytest.mark.parametrize("points", [
    (SvgPoint(3.0, 7.0, "only"),),
    (SvgPoint(0.0, 0.0, "origin"),),
    (SvgPoint(5.0, 1.0, "a"), SvgPoint(5.0, 2.0, "b"), SvgPoint(5.0, 3.0, "c")),
    (SvgPoint(1.0, -4.0, "a"), SvgPoint(2.0, -4.0, "b")),
])
def test_constant_data_gets_a_non_zero_range(points: tuple[SvgPoint, ...]) -> None:
    root = _parse(scatter_svg([SvgSeries("s", points)]))
    positions = _assert_points_inside(root)
    assert len(positions) == len(points)
    assert len(set(_ticks(root, "xtick"))) >= 2 and len(set(_ticks(root, "ytick"))) >= 2
    left, top, right, bottom = _frame(root)
    if len({p.x for p in points}) == 1:  # a constant axis is centred
        assert all(math.isclose(x, (left + right) / 2, abs_tol=0.02) for x, _ in positions)
    if len({p.y for p in points}) == 1:
        assert all(math.isclose(y, (top + bottom) / 2, abs_tol=0.02) for _, y in positions)


def test_log_axis_spacing_ticks_and_skipped_non_positive() -> None:
    pts = (SvgPoint(1e6, 1, "a"), SvgPoint(1e7, 1.5, "b"), SvgPoint(1e8, 2, "c"), SvgPoint(0.0, 1, "zero"), SvgPoint(-5.0, 1, "neg"))
    root = _parse(scatter_svg([SvgSeries("s", pts)], x_log=True))
    assert root.get("data-skipped") == "2"
    (xa, _), (xb, _), (xc, _) = _assert_points_inside(root)
    assert math.isclose(xb - xa, xc - xb, abs_tol=0.02)
    assert {"1M", "10M", "100M"} <= set(_ticks(root, "xtick"))
    linear = _parse(scatter_svg([SvgSeries("s", pts)]))
    assert linear.get("data-skipped") == "0" and len(_by_class(linear, "pt")) == 5


def test_log_axis_within_one_decade_and_single_point() -> None:
    narrow = _parse(scatter_svg([SvgSeries("s", (SvgPoint(2.0, 1, "a"), SvgPoint(3.0, 2, "b")))], x_log=True))
    assert len(_ticks(narrow, "xtick")) >= 2
    _assert_points_inside(narrow)
    single = _parse(scatter_svg([SvgSeries("s", (SvgPoint(300.0, 1, "a"),))], x_log=True))
    assert len(_ticks(single, "xtick")) >= 2
    _assert_points_inside(single)


@pytest.mark.parametrize("series", [
    [],
    [SvgSeries("a", ())],
    [SvgSeries("a", (SvgPoint(NAN, 1, "x"), SvgPoint(1, INF, "y"), SvgPoint(-INF, NAN, "z")))],
])
def test_empty_plot_says_no_data(series: list[SvgSeries]) -> None:
    root = _parse(scatter_svg(series, title="empty", x_log=bool(series)))
    assert [el.text for el in _by_class(root, "nodata")] == ["no data"]
    assert not _by_class(root, "pt")
    assert root.get("data-skipped") == str(sum(len(s.points) for s in series))
    assert _ticks(root, "xtick") and _ticks(root, "ytick")


def test_guides_are_drawn_and_widen_the_range() -> None:
    root = _parse(scatter_svg([SvgSeries("s", (SvgPoint(1, 1, "a"), SvgPoint(2, 2, "b")))],
                              x_guides=[(10.0, "largest <net>"), (NAN, "skipped")]))
    (guide,) = _by_class(root, "guide")
    assert guide.find(f"{NS}title").text == "largest <net>" and guide.find(f"{NS}text").text == "largest <net>"
    line = guide.find(f"{NS}line")
    assert line.get("stroke-dasharray")
    left, _, right, _ = _frame(root)
    (xa, _), (xb, _) = _assert_points_inside(root)
    assert xb < float(line.get("x1")) < right
    assert math.isclose((float(line.get("x1")) - xa) / (xb - xa), 9.0, rel_tol=1e-3)
    alone = _parse(scatter_svg([], x_guides=[(500.0, "g")], x_log=True))  # no data: the guide still lies inside the frame
    left, _, right, _ = _frame(alone)
    assert _by_class(alone, "nodata") and left < float(_by_class(alone, "guide")[0].find(f"{NS}line").get("x1")) < right


def test_deterministic_and_at_most_two_decimals() -> None:
    series = _example()
    svg = scatter_svg(series, title="t", x_guides=[(3.3333333, "g")])
    assert svg == scatter_svg(series, title="t", x_guides=[(3.3333333, "g")])
    root = _parse(svg)
    attrs = " ".join(v for el in root.iter() for k, v in el.attrib.items() if k != "aria-label")
    assert not re.search(r"\d\.\d{3}", attrs)


def test_bad_marker_or_line_style_is_rejected() -> None:
    with pytest.raises(ValueError, match="marker"):
        scatter_svg([SvgSeries("a", (SvgPoint(1, 1, "x"),), marker="hexagon")])
    with pytest.raises(ValueError, match="line_style"):
        scatter_svg([SvgSeries("a", (SvgPoint(1, 1, "x"), SvgPoint(2, 2, "y")), line=True, line_style="wavy")])


# ---------------------------------------------------------------------------------------------------------------- sortable tables

def test_sortable_script_is_one_self_contained_script_element() -> None:
    script = SORTABLE_TABLE_SCRIPT.strip()
    assert script.startswith("<script>") and script.endswith("</script>")
    assert script.count("<script") == 1 and script.lower().count("</script") == 1
    assert "http" not in script.lower() and "src=" not in script.lower() and "import" not in script


_FAKE_DOM = r"""
class El {
  constructor(tag, text = "") { this.tag = tag; this._text = text; this.children = []; this.attrs = {}; this.style = {};
                                this.listeners = {}; this.parent = null; }
  getAttribute(name) { return name in this.attrs ? this.attrs[name] : null; }
  setAttribute(name, value) { this.attrs[name] = String(value); }
  addEventListener(type, fn) { (this.listeners[type] ||= []).push(fn); }
  appendChild(child) {
    if (child.parent) child.parent.children.splice(child.parent.children.indexOf(child), 1);
    child.parent = this; this.children.push(child); return child;
  }
  get textContent() { return this._text + this.children.map((c) => c.textContent).join(""); }
  set textContent(value) { this._text = value; this.children = []; }
  get cells() { return this.children; }
  get rows() { return this.children; }
  fire(type) { (this.listeners[type] || []).forEach((fn) => fn({key: "Enter", preventDefault() {}})); }
}
const cell = (tag, c) => { const el = new El(tag, typeof c === "string" ? c : c.text); if (typeof c !== "string") el.setAttribute("data-sort", c.sort); return el; };
const makeRow = (tag, cells) => { const tr = new El("tr"); cells.forEach((c) => tr.appendChild(cell(tag, c))); return tr; };
function makeTable(header, rows, withHead) {
  const table = new El("table"), body = new El("tbody");
  const head = makeRow("th", header);
  if (withHead) { table.tHead = new El("thead"); table.tHead.appendChild(head); } else { table.tHead = null; body.appendChild(head); }
  rows.forEach((r) => body.appendChild(makeRow("td", r)));
  table.tBodies = [body];
  Object.defineProperty(table, "rows", {get: () => (withHead ? [head] : []).concat(body.children)});
  return table;
}
const spec = JSON.parse(process.argv[1]);
const table = makeTable(spec.header, spec.rows, spec.withHead);
const other = makeTable(["x"], [["1"]], true);  // a table without the class must stay untouched
globalThis.document = {
  readyState: "complete", createElement: (tag) => new El(tag), addEventListener() {},
  querySelectorAll: (sel) => (sel === "table.sortable" ? [table] : []),
};
const src = spec.script;
new Function(src)();
new Function(src)();  // a second copy of the script must not add a second set of handlers
const headRow = spec.withHead ? table.tHead.rows[0] : table.tBodies[0].rows[0];
const out = [];
for (const [col, how] of spec.clicks) {
  headRow.cells[col].fire(how);
  out.push({
    column: table.tBodies[0].rows.filter((r) => r !== headRow).map((r) => r.cells[col].textContent),
    first: table.tBodies[0].rows[0] === headRow,
    marks: headRow.cells.map((th) => th.children[0].textContent),
    aria: headRow.cells.map((th) => th.getAttribute("aria-sort")),
  });
}
out.push({otherHandlers: Object.keys(other.tHead.rows[0].cells[0].listeners).length});
console.log(JSON.stringify(out));
"""


def _run_sort(header: list[str], rows: list[list[object]], clicks: list[tuple[int, str]], with_head: bool = True) -> list[dict]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the sortable-table script cannot be executed")
    inner = SORTABLE_TABLE_SCRIPT.strip().removeprefix("<script>").removesuffix("</script>")
    spec = {"header": header, "rows": rows, "clicks": clicks, "withHead": with_head, "script": inner}
    proc = subprocess.run(["node", "-e", _FAKE_DOM, json.dumps(spec)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    *states, tail = json.loads(proc.stdout)
    assert tail == {"otherHandlers": 0}
    return states


ROWS: list[list[object]] = [
    ["trial_10", "10", {"text": "slow", "sort": "30"}],
    ["trial_2", "\u2014", {"text": "fast", "sort": "2"}],
    ["b", "2", {"text": "n/a", "sort": ""}],
    ["A", "1.5k", {"text": "mid", "sort": "10"}],
    ["c", "", {"text": "x", "sort": "\u2014"}],
    ["d", "-3", {"text": "y", "sort": "2.5"}],
    ["e", "\u22121.25", {"text": "z", "sort": "-1"}],
]


def test_sort_numeric_aware_with_missing_last_and_reverse() -> None:
    asc, desc, asc_again = _run_sort(["name", "value", "time"], ROWS, [(1, "click"), (1, "click"), (1, "keydown")])
    assert asc["column"] == ["-3", "\u22121.25", "2", "10", "1.5k", "\u2014", ""]  # 2 < 10 numerically, "—"/empty last
    assert desc["column"] == ["1.5k", "10", "2", "\u22121.25", "-3", "\u2014", ""]  # still last when reversed
    assert asc_again["column"] == asc["column"]
    assert asc["marks"] == ["", " \u25b2", ""] and desc["marks"] == ["", " \u25bc", ""]
    assert asc["aria"] == ["none", "ascending", "none"] and desc["aria"] == ["none", "descending", "none"]


def test_sort_text_naturally_and_switching_columns_starts_ascending() -> None:
    value_asc, name_asc, name_desc = _run_sort(["name", "value", "time"], ROWS, [(1, "click"), (0, "click"), (0, "click")])
    assert name_asc["column"] == ["A", "b", "c", "d", "e", "trial_2", "trial_10"]
    assert name_desc["column"] == list(reversed(name_asc["column"]))
    assert name_asc["marks"] == [" \u25b2", "", ""] and value_asc["marks"][1] == " \u25b2"


def test_sort_uses_data_sort_and_header_row_in_body_stays_first() -> None:
    (asc, desc) = _run_sort(["name", "value", "time"], ROWS, [(2, "click"), (2, "click")], with_head=False)
    assert asc["column"] == ["z", "fast", "y", "mid", "slow", "n/a", "x"]
    assert desc["column"] == ["slow", "mid", "y", "fast", "z", "n/a", "x"]
    assert asc["first"] and desc["first"]
