"""The report page: one self-contained HTML file (inline CSS, no external resource).

Front figures are inline interactive SVG (`reports.svg`): hovering any point shows its trial,
policy, scores on both splits, policy parameters and key config. The other figures are inline
base64 PNG (the same PNGs are kept in RUN_DIR/figures/ for papers). Every table of points or
trials is click-to-sort (`SORTABLE_TABLE_SCRIPT`, included once). Every string taken from the data
is HTML-escaped here, and nothing on the page names a family's metric except through the info
objects, which take their names from the run's Declaration.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from reports.info import FrontPlotInfo, Metric, PointDetail, PointSet, ReportInfo, TrialInfo
from reports.style import FRONT_COLOR, MARK_COLOR, figure_files, policy_styles, reference_styles
from reports.svg import SORTABLE_TABLE_SCRIPT, SvgPoint, SvgSeries, scatter_svg
from reports.values import MISSING, fmt_num, fmt_value, trial_label

__all__ = ["hover_text", "render_html"]

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1250px;
padding:1rem 2rem;color:#222;line-height:1.4}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:.25rem 1rem}dl.kv dt{font-weight:600}dl.kv dd{margin:0}
.wrap{overflow-x:auto}table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.2rem .45rem;text-align:left;vertical-align:top}
th{background:#f4f4f4;white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.calib{color:#777}tr:nth-child(even) td{background:#fafafa}tr.default td{background:#e8f4ff}
.badge{font-size:.7rem;background:#1f77b4;color:#fff;border-radius:3px;padding:0 .25rem;margin-left:.3rem}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555;max-width:900px}
.note{background:#fff8e1;border-left:4px solid #f0c000;padding:.3rem .6rem;font-size:.9rem}
.empty{color:#777;font-style:italic}pre.err{white-space:pre-wrap;margin:0;font-size:.8rem;max-width:60rem}
nav ol{columns:2;font-size:.9rem}code{background:#f4f4f4;padding:0 .2rem}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], classes: Sequence[str] = (),
           row_classes: Sequence[str] = ()) -> str:
    """A sortable table. Headers are escaped here; cells must already be HTML (escape data first)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for n, row in enumerate(rows):
        cells = "".join(f'<td class="{classes[i]}">{c}</td>' if i < len(classes) and classes[i] else f"<td>{c}</td>"
                        for i, c in enumerate(row))
        cls = row_classes[n] if n < len(row_classes) and row_classes[n] else ""
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    return f'<div class="wrap"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _kv(items: Iterable[tuple[str, str]]) -> str:
    """A definition list; keys and values are escaped here."""
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return f'<dl class="kv">{rows}</dl>' if rows else '<p class="empty">nothing recorded</p>'


def _empty(text: str) -> str:
    return f'<p class="empty">{_e(text)}</p>'


def _png(png: bytes | None, alt: str, caption: str, missing: str) -> str:
    if png is None:
        return _empty(missing)
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"><figcaption>{_e(caption)}</figcaption></figure>'


def _scores(metric: Metric, test: Any, calibration: Any) -> str:
    return f"{fmt_value(test, scale=metric.scale)} test, {fmt_value(calibration, scale=metric.scale)} calibration"


def hover_text(d: PointDetail, metrics: Sequence[Metric]) -> str:
    """A point's tooltip: trial, policy, point id, table metrics on both splits, policy parameters, key config."""
    status = "" if d.status == "complete" else f" ({d.status} trial)"
    lines = [f"trial {trial_label(d.trial_number, d.trial_id)}{status}",
             f"policy {d.policy}" + (" (reference)" if d.reference else ""), f"point {d.point_id}"]
    lines += [f"{m.label()}: {_scores(m, d.test.get(m.name), d.calibration.get(m.name))}" for m in metrics]
    lines += [f"{name}: {fmt_value(v, digits=6)}" for name, v in d.params.items()]
    if d.marks:
        lines.append("marked: " + ", ".join(d.marks))
    lines += [f"{k} = {fmt_value(v)}" for k, v in d.key_config.items()]
    return "\n".join(lines)


def _front_svg(fp: FrontPlotInfo, info: ReportInfo) -> str:
    metrics = info.front_table.metrics

    def pts(ps: PointSet) -> tuple[SvgPoint, ...]:
        return tuple(SvgPoint(float(x), float(y), hover_text(info.points[p], metrics) if p in info.points else p)
                     for x, y, p in zip(ps.x, ps.y, ps.point_id))

    styles, refs = policy_styles(fp.policies), reference_styles([g.name for g in fp.references])
    single = len(fp.policies) <= 1
    series = [SvgSeries(f"{g.name}{', complete trials' if single else ''} ({len(g.points)})", pts(g.points),
                        styles[g.name].color, styles[g.name].marker, size=3.5, opacity=0.45 if single else 0.7)
              for g in fp.background]
    series += [SvgSeries(f"{g.name}, partial trials ({len(g.points)})", pts(g.points), styles[g.name].color,
                         styles[g.name].marker, size=3.5, filled=False, opacity=0.45) for g in fp.partial]
    series += [SvgSeries(f"{g.name} (reference)", pts(g.points), refs[g.name].color, refs[g.name].marker, size=5)
               for g in fp.references]
    if len(fp.staircase) >= 2:
        series.append(SvgSeries("front envelope in this projection",
                                tuple(SvgPoint(float(x), float(y), "front envelope in this projection") for x, y in fp.staircase),
                                FRONT_COLOR, "none", line=True))
    for g in fp.front_groups:  # the front's colour, each policy's own marker
        label = f"global front ({len(g.points)})" if single else f"global front: {g.name} ({len(g.points)})"
        series.append(SvgSeries(label + ", chosen on calibration", pts(g.points), FRONT_COLOR, styles[g.name].marker, size=5))
    series += [SvgSeries(f"{g.name} ({len(g.points)})", pts(g.points), MARK_COLOR, "star", size=8) for g in fp.marks]
    if len(fp.default):
        series.append(SvgSeries("default operating point", pts(fp.default), "#000000", size=9, filled=False))
    return scatter_svg(series, title=f"Global front: {fp.y.name} vs {fp.x.name} (test scores)", x_label=fp.x.label("test"),
                       y_label=fp.y.label("test"), width=900, height=480,
                       x_guides=[(fp.guide.x, fp.guide.label)] if fp.guide else ())


def _header(info: ReportInfo) -> str:
    h, c = info.header, info.header.counts
    counts = (f"{c.total} total: {c.complete} complete, {c.partial} partial, {c.failed} failed"
              + "".join(f", {n} {name}" for n, name in ((c.interrupted, "interrupted"), (c.running, "running"), (c.other, "other")) if n))
    items = [("run", h.run), ("space", h.space), ("dataset", h.dataset), ("trials", counts)]
    if h.best is not None:
        best = (f"{fmt_num(h.best.value, 6)} (trial #{h.best.trial_number})" if h.best.trial_number is not None else MISSING)
        items.append((f"best {h.best.name}", f"{best}; {h.best.direction}imised, among complete trials"))
    elif h.yields == "point":
        items.append(("front points", f"{h.front_size}: each trial yields one operating point and the outer search is "
                                      f"multi-objective over {', '.join(n for n, _ in h.objectives)}"))
    items.append(("global front", f"{h.front_size} operating points of complete trials, chosen on calibration"))
    items.append(("point objectives", ", ".join(f"{m.name} ({m.direction}{', ' + m.unit if m.unit else ''})"
                                                for m in h.point_objectives)))
    items.append(("outer objectives", ", ".join(f"{n} ({d})" for n, d in h.objectives)))
    items += list(h.conventions)
    items += [(f"largest network's {r.name}", f"{fmt_num(r.value)} {r.unit}".rstrip()) for r in h.references]
    items.append(("default operating point", h.default.rule))
    items.append(("default pick", _pick_text(info)))
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in h.notes)
    return (f'<header id="summary"><h1>Run {_e(h.run)}</h1>{_kv(items)}{notes}'
            f'<p>Built {_e(datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))} from <code>{_e(info.run_dir)}</code>. '
            "Scores in figures are on the <b>test</b> split; operating points were chosen on the <b>calibration</b> split.</p>"
            "</header>")


def _pick_text(info: ReportInfo) -> str:
    d = info.header.default
    if d.point_id is None:
        return f"none: {d.error}"
    scores = "; ".join(f"{m.label()}: {_scores(m, d.test.get(m.name), d.calibration.get(m.name))}" for m in info.front_table.metrics)
    return f"trial {trial_label(d.trial_number)}, policy {d.policy}, point {d.point_id}: {scores}"


def _front_section(info: ReportInfo, figures: Mapping[str, bytes]) -> str:
    files = figure_files(info)
    parts = []
    for i, fp in enumerate(info.fronts):
        if not fp.drawable:
            parts.append(_empty(f"{fp.y.name} vs {fp.x.name}: nothing to draw (no test-split point of a complete or partial "
                                "trial has both values)."))
            continue
        caption = " ".join(part for part, shown in (
            ("Each point is an operating point scored on the test split. Red: the run's global front, chosen on calibration "
             "scores among complete trials (the line is its staircase in this projection).", True),
            ("Behind it: the other points of complete trials, one colour and marker per policy.", len(fp.policies) > 1),
            ("Behind it, grey: the other points of complete trials.", len(fp.policies) <= 1 and bool(fp.background)),
            ("Hollow: partial trials (stopped early, never on a front).", bool(fp.partial)),
            ("Reference policies have their own markers.", bool(fp.references)),
            (f"Stars: points marked {', '.join(g.name for g in fp.marks)}.", bool(fp.marks)),
            ("Ringed: the default operating point.", bool(len(fp.default))),
            ("Hover a point for its details.", True)) if shown)
        if fp.skipped:
            caption += f" {fp.skipped} row(s) with a null coordinate are not drawn."
        png = f" PNG for papers: figures/{files[f'front:{i}']}." if files[f"front:{i}"] in figures else ""
        parts.append(f"<figure>{_front_svg(fp, info)}<figcaption>{_e(caption + png)}</figcaption></figure>")
    return "".join(parts) or _empty("The declaration asks for no front figure.")


def _front_table(info: ReportInfo) -> str:
    t = info.front_table
    if not t.rows:
        return _empty("No global-front points among complete trials.")
    headers = ["trial", "policy", "point"]
    classes = ["", "", ""]
    for m in t.metrics:
        headers += [m.label("test"), "(calib.)"]
        classes += ["num", "num calib"]
    headers += [*t.params, *([t.exit_fraction.label("test")] if t.exit_fraction else []), *(["marks"] if t.marks else []),
                *t.config_names]
    classes += [""] * (len(t.params) + bool(t.exit_fraction) + bool(t.marks)) + ["num"] * len(t.config_names)
    rows = []
    for r in t.rows:
        cells = [_e(trial_label(r.trial_number, r.trial_id)) + ('<span class="badge">default</span>' if r.default else ""),
                 _e(r.policy), _e(r.point_id.removeprefix(r.trial_id + "/"))]
        for m in t.metrics:
            cells += [_e(fmt_value(r.test.get(m.name), scale=m.scale)), _e(fmt_value(r.calibration.get(m.name), scale=m.scale))]
        cells += [_e(fmt_value(r.params.get(p), digits=6)) for p in t.params]
        cells += [_e(fmt_value(r.exit_fraction, digits=6))] if t.exit_fraction else []
        cells += [_e(", ".join(r.marks))] if t.marks else []
        cells += [_e(fmt_value(r.config.get(n))) for n in t.config_names]
        rows.append(cells)
    d = t.default
    pick = (f"The default operating point (highlighted) is {d.point_id}: {d.rule}." if d.point_id
            else f"No default operating point: {d.error}")
    return (f"<p>{_e(pick)} Scores are on the test split with the calibration score beside each; click a header to sort.</p>"
            + _table(headers, rows, classes, ["default" if r.default else "" for r in t.rows]))


def _trials_table(info: ReportInfo) -> str:
    t = info.trials
    if not t.trials:
        return _empty("No trials.")
    headers = ["trial", "id", "status", "fidelity", "epochs", *(m.label() for m in t.columns), *t.config_names]
    classes = ["", "", "", "num", "num", *(["num"] * len(t.columns)), *(["num"] * len(t.config_names))]
    rows = [[_e(trial_label(x.trial_number)), _e(x.trial_id), _e(x.status), _e(fmt_num(x.fidelity, 3)), _epochs(x),
             *(_e(fmt_value(x.values.get(m.name), digits=6, scale=m.scale)) for m in t.columns),
             *(_e(fmt_value(x.config.get(n))) for n in t.config_names)] for x in t.trials]
    return _table(headers, rows, classes)


def _epochs(t: TrialInfo) -> str:
    return _e(f"{fmt_value(t.epochs_done)} / {fmt_value(t.epochs_planned)}")


def _objectives_section(info: ReportInfo, figures: Mapping[str, bytes]) -> str:
    files = figure_files(info)
    parts = [_png(figures.get(files[f"objective:{o.metric.name}"]), f"{o.metric.name} over trials",
                  f"Each trial's {o.metric.name} ({o.metric.direction}imised by the outer search). The running best counts "
                  "complete trials only; partial trials are hollow.", f"No trial has a {o.metric.name}.")
             for o in info.objectives]
    if not parts:
        parts.append(_empty("The outer search's objectives are point values (" + ", ".join(n for n, _ in info.header.objectives)
                            + "): see the global front."))
    return "".join(parts) + "<h3>Trials</h3>" + _trials_table(info)


def _progress(info: ReportInfo, figures: Mapping[str, bytes]) -> str:
    p = info.progress
    if p is None or not (len(p.complete_trials) or len(p.stopped_trials)):
        return _empty("No trial has ended yet.")
    ref = ", ".join(f"{m.name} {fmt_num(v)}" for m, v in zip(p.objectives, p.reference))
    share = f" ({100 * p.total_epochs / p.planned_epochs:.0f}%)" if p.planned_epochs else ""
    caption = (f"The hypervolume of the run's front (the calibration points of complete trials; over "
               f"{', '.join(m.name for m in p.objectives)}, reference point {ref}: {p.reference_rule}) after each trial "
               "completed, against wall-clock time since the run started and against the epochs all trials had trained by "
               f"then. Crosses: the {len(p.stopped_trials)} trial(s) a scheduler stopped early (partial, never on a front), "
               f"when they stopped. Epochs trained: {p.total_epochs} of the {p.planned_epochs} these trials would have "
               f"trained to their end{share}. " + " ".join(p.notes))
    return _png(figures.get(figure_files(info)["progress"]), "search progress", caption.strip(), "No trial has ended yet.")


def _failed(info: ReportInfo) -> str:
    if not info.failed.trials:
        return _empty("No failed trials.")
    rows = [[_e(trial_label(t.trial_number)), _e(t.trial_id), _epochs(t),
             f'<pre class="err">{_e(t.error or "(no reason recorded)")}</pre>', _e(fmt_value(t.config) if t.config else MISSING)]
            for t in info.failed.trials]
    return _table(["trial", "id", "epochs", "reason", "config"], rows)


def _spec(info: ReportInfo) -> str:
    s = info.spec
    decl = _table(["group", "column", "kind", "direction", "unit", "description"],
                  [[_e(c.group), _e(c.name), _e(c.kind), _e(c.direction or MISSING), _e(c.unit or MISSING), _e(c.description)]
                   for c in s.declaration])
    return ("<h3>Declared columns</h3>" + decl + "<h3>Spec</h3>" + _kv(s.spec_items)
            + "<h3>Provenance (spec.json)</h3>" + _kv(s.provenance_items)
            + "<h3>Provenance recorded in the results rows</h3>" + _kv(s.row_provenance))


def render_html(info: ReportInfo, figures: Mapping[str, bytes]) -> str:
    """The whole report as one self-contained HTML page; `figures` maps file names to PNG bytes."""
    files = figure_files(info)
    sections = [("front", "Global front", _front_section(info, figures))]
    if info.trial_curves is not None:
        tc = info.trial_curves
        legend = f"the {len(tc.labelled)} best by {tc.ranked_by}" if tc.ranked_by else f"the first {len(tc.labelled)}"
        sections.append(("trial-curves", "Each trial's own front", _png(
            figures.get(files["trial_curves"]), "each trial's own front",
            f"Each complete trial's own front (its non-reference points on its calibration front), test scores, {tc.y.name} "
            f"against {tc.x.name}. The legend lists {legend}; others are grey.", "No complete trial has own-front points.")))
    sections.append(("table", "Front operating points", _front_table(info)))
    if info.exit_fractions is not None:
        ef = info.exit_fractions
        sections.append(("exits", "Where the front's points exit", _png(
            figures.get(files["exit_fractions"]), ef.metric.name,
            f"{ef.metric.name} (test) of each global-front point, one segment per exit, in the table's order.",
            "No front point has an exit fraction.")))
    sections.append(("objectives", "Objectives over trials, and the trials", _objectives_section(info, figures)))
    sections.append(("progress", "Search progress", _progress(info, figures)))
    sections.append(("learning", "Learning curves", _png(
        figures.get(files["learning_curves"]), "learning curves",
        "Per trial and epoch: " + ", ".join(dict.fromkeys(p.column for p in info.learning_curves.panels))
        + ". Line style: complete solid, partial dashed, failed dotted.", "No learning curves (curves.parquet absent or empty).")))
    sections.append(("failed", f"Failed trials ({len(info.failed.trials)})", _failed(info)))
    sections.append(("spec", "Spec and provenance", _spec(info)))
    toc = '<li><a href="#summary">Summary</a></li>' + "".join(f'<li><a href="#{sid}">{_e(title)}</a></li>'
                                                             for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{i}. {_e(title)}</h2>{content}</section>'
                   for i, (sid, title, content) in enumerate(sections, start=2))
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Report: {_e(info.header.run)}</title><style>{_CSS}</style></head><body>"
            f"{_header(info)}<nav><ol>{toc}</ol></nav>{body}{SORTABLE_TABLE_SCRIPT}</body></html>\n")
