"""The report page (reports.html): self-contained, one interactive SVG per declared front with a tooltip
per point, sortable tables, policies told apart, marks and the default operating point shown, data escaped."""

from __future__ import annotations

import base64
import dataclasses
import functools
import html
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from reports.build import build_report
from reports.html import hover_text
from reports.info import ReportInfo
from reports.overview import compute_report_info
from reports.svg import SORTABLE_TABLE_SCRIPT
from reports.tables import load_run
from tests.reports.fabricate import GRAN, ONE_LEVEL, SINGLE, Case, make_run_dir

NS = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@functools.lru_cache(maxsize=None)  # the built runs are session-wide and never modified
def _page(built: Path) -> tuple[str, ReportInfo]:
    return (built / "report.html").read_text(encoding="utf-8"), compute_report_info(load_run(built))


def _svgs(text: str) -> list[ET.Element]:
    return [ET.fromstring(s) for s in re.findall(r"<svg\b.*?</svg>", text, flags=re.S)]


def _series(svg: ET.Element) -> dict[str, list[ET.Element]]:
    """data-label -> the series' point groups."""
    return {g.get("data-label"): [p for p in g if p.get("class") == "pt"]
            for g in svg.iter(f"{NS}g") if g.get("class") == "series"}


def _legend(svg: ET.Element) -> list[str]:
    return [item.find(f"{NS}text").text for item in svg.iter(f"{NS}g") if item.get("class") == "legend-item"]


def _external_resources(text: str) -> list[str]:
    patterns = [r"""(?:src|href|action|poster)\s*=\s*["']?\s*(?:https?:)?//""", r"url\(\s*['\"]?\s*(?:https?:)?//", r"@import"]
    return [m.group(0) for p in patterns for m in re.finditer(p, text, flags=re.I)]


def test_page_is_self_contained_with_one_script(built: Path) -> None:
    text, _ = _page(built)
    assert _external_resources(text) == []
    bare = text.replace(' xmlns="http://www.w3.org/2000/svg"', "")  # a namespace name, not a resource
    assert "http://" not in bare and "https://" not in bare
    assert text.count("<script") == 1 and text.count(SORTABLE_TABLE_SCRIPT) == 1
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    pngs = sorted(p.name for p in (built / "figures").glob("*.png"))
    assert len(images) == len([p for p in pngs if not p.startswith("front_")])  # fronts are inline SVG instead
    assert all(base64.b64decode(img).startswith(PNG_SIGNATURE) for img in images)


def test_every_table_is_sortable(built: Path) -> None:
    text, _ = _page(built)
    tables = re.findall(r"<table\b[^>]*>", text)
    assert len(tables) >= 4  # front points, trials, failed trials, declared columns
    assert all('class="sortable"' in t for t in tables)


def test_one_svg_per_front_with_a_title_per_drawn_point(case: Case, built: Path) -> None:
    text, info = _page(built)
    svgs = _svgs(text)
    assert len(svgs) == len(case.decl.report.fronts)
    for svg, fp in zip(svgs, info.fronts):
        groups = (*fp.background, *fp.partial, *fp.references, *fp.marks)
        drawn = len(fp.front) + len(fp.default) + sum(len(g.points) for g in groups)
        drawn += len(fp.staircase) if len(fp.staircase) >= 2 else 0
        points = [p for pts in _series(svg).values() for p in pts]
        assert len(points) == drawn and svg.get("data-skipped") == "0"
        assert all(p.find(f"{NS}title") is not None and p.find(f"{NS}title").text for p in points)
        assert svg.find(f".//{NS}text[@class='xlabel']").text == fp.x.label("test")
        assert svg.find(f".//{NS}text[@class='ylabel']").text == fp.y.label("test")


def test_hover_text_carries_trial_policy_params_and_key_config(case: Case, built: Path) -> None:
    text, info = _page(built)
    svg = _svgs(text)[0]
    pid = case.pid("t2", 0, min(1, case.points - 1))
    # the front's points come in one series per policy (each keeps its policy's marker)
    front = [p for label, pts in _series(svg).items() if label.startswith("global front") for p in pts]
    titles = [p.find(f"{NS}title").text for p in front]
    (title,) = [t for t in titles if f"point {pid}\n" in t]
    assert title.startswith(f"trial #2\npolicy {case.policies[0]}\n")
    for name in case.decl.report.table:
        assert re.search(rf"^{re.escape(name)}( \[[^]]+\])?: \S+ test, \S+ calibration$", title, flags=re.M)
    if case is GRAN:
        assert "thresholds_fine: 0.247 / 0.5 / 1" in title and "expected_flops [MFLOPs]: 42 test, 42 calibration" in title
    for key in case.decl.report.key_config:
        assert re.search(rf"^{re.escape(key)} = ", title, flags=re.M)
    partial = [p.find(f"{NS}title").text for label, pts in _series(svg).items() if "partial" in label for p in pts]
    assert partial and all("(partial trial)" in t for t in partial)


def test_policies_are_distinguishable(case: Case, built: Path) -> None:
    text, _ = _page(built)
    svg = _svgs(text)[0]
    legend = _legend(svg)
    series = {g.get("data-label"): g for g in svg.iter(f"{NS}g") if g.get("class") == "series"}
    for ref in case.references:
        assert f"{ref} (reference)" in legend
    if case is ONE_LEVEL:
        labels = [next(lbl for lbl in legend if lbl.startswith(f"{p} (")) for p in sorted(case.policies)]
        styles = {(series[lbl][0][1].get("fill"), series[lbl][0][1].tag) for lbl in labels}
        assert len(styles) == len(case.policies)  # a colour and a marker each
        assert all(any(lbl.startswith(f"{p}, partial trials") for lbl in legend) for p in case.policies)
    elif case is GRAN:  # one policy: grey, named once
        assert [lbl for lbl in legend if lbl.startswith(case.policies[0])] == ["calibrated, complete trials (3)",
                                                                              "calibrated, partial trials (3)"]


def test_mark_and_default_are_drawn_and_stated(case: Case, built: Path) -> None:
    text, info = _page(built)
    svg = _svgs(text)[0]
    legend, series = _legend(svg), _series(svg)
    if case is ONE_LEVEL:
        assert "best_ratio (1)" in legend
        (star,) = series["best_ratio (1)"]
        assert star.find(f"{NS}path") is not None and "point t2/target/1" in star.find(f"{NS}title").text
    else:
        assert not any(lbl.startswith("best_ratio") for lbl in legend)
    pick = info.header.default
    assert f"<dt>default operating point</dt><dd>{html.escape(pick.rule)}</dd>" in text
    if pick.point_id:
        assert "default operating point" in legend and len(series["default operating point"]) == 1
        assert text.count('<tr class="default">') == 1 and f"point {pick.point_id}:" in text
    else:
        assert case is GRAN and "<dd>none: no front point meets" in text and 'class="default"' not in text


def test_header_states_conventions_references_and_objectives(case: Case, built: Path) -> None:
    text, info = _page(built)
    for note in case.decl.notes.values():
        assert html.escape(note) in text
    for name, cost in case.reference_costs.items():
        assert f"<dt>largest network&#x27;s {name}</dt><dd>{cost / 1e6:g} MFLOPs</dd>" in text
    if case is SINGLE:
        assert "<dt>front points</dt><dd>2: each trial yields one operating point" in text
    else:
        assert "<dt>best " + next(iter(case.decl.objectives)) + "</dt><dd>0.45 (trial #2)" in text
    assert "cost counted per image &lt;b&gt;by hand&lt;/b&gt;" in text if case is ONE_LEVEL else "<b>by hand" not in text
    units = [c.unit for c in case.decl.point if c.name in case.decl.report.table]
    assert ("[MFLOPs] (test)</th>" in text) == ("FLOPs" in units)


def test_failed_reason_and_data_are_escaped(built: Path) -> None:
    text, _ = _page(built)
    assert "loss diverged to nan at epoch 1 &lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script>alert" not in text
    assert "provenance.versions.torch" in text and "demo-run" in text


def test_markup_in_policy_names_never_becomes_markup(tmp_path: Path) -> None:
    case = dataclasses.replace(ONE_LEVEL, policies=("<i>target</i>", "budget\"><b>", "search", "risk"),
                               on_front={"t2": frozenset({(0, 1), (1, 0)})})
    text = build_report(make_run_dir(tmp_path, case)).read_text(encoding="utf-8")
    assert "<i>" not in text and '"><b>' not in text and "&lt;i&gt;target&lt;/i&gt;" in text
    _svgs(text)  # the SVG is still well-formed XML


def test_hover_text_of_a_reference_point() -> None:
    from reports.info import Metric, PointDetail

    d = PointDetail("t0/fixed:exit@1/0", "t0", None, "complete", "fixed:exit@1", True, {"m": 2e6}, {"m": None},
                    {"t": (0.5, 1.0)}, ("best",), {"lr": 0.1})
    metric = Metric("m", "FLOPs", "MFLOPs", 1e6, "min", "")
    assert hover_text(d, [metric]) == ("trial t0\npolicy fixed:exit@1 (reference)\npoint t0/fixed:exit@1/0\n"
                                       "m [MFLOPs]: 2 test, — calibration\nt: 0.5 / 1\nmarked: best\nlr = 0.1")


@pytest.mark.parametrize("case", [GRAN], ids=["gran_hbn"])
def test_page_when_every_trial_failed(case: Case, tmp_path: Path) -> None:
    text = build_report(make_run_dir(tmp_path, case, all_failed=True, with_curves=False)).read_text()
    assert "Failed trials (4)" in text and "No global-front points" in text and "nothing to draw" in text
    assert "No learning curves" in text and not list((tmp_path / "run" / "figures").glob("*.png"))
