"""Drawing: turn the info objects computed by `reports.build` into PNG figures and report.html.

Nothing here decides *what* is shown (which points are on a front, what the running best is):
that is computed, and tested, in `reports.build`. These functions only render it.

Figures are plain `matplotlib.figure.Figure` objects bound to the Agg canvas; pyplot is never
imported, so no global figure registry or backend state is touched. `figure_to_png` renders a
figure and clears it. `render_html` writes a self-contained page: inline CSS, figures as base64
PNG data URIs, no external resources; every string taken from the data is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from reports.build import (
        FrontPlotInfo,
        HypervolumeInfo,
        LearningCurvesInfo,
        ReportInfo,
        ThresholdCurvesInfo,
    )

__all__ = [
    "figure_to_png",
    "render_figures",
    "render_front",
    "render_html",
    "render_hypervolume",
    "render_learning_curves",
    "render_threshold_curves",
]

DPI = 110
_FRONT_COLOR = "#d62728"
_BEST_COLOR = "#d62728"
_FIXED_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
_FIXED_MARKERS = {"fine": "^", "coarse": "v"}
_STATUS_LINESTYLE = {"complete": "-", "partial": "--", "failed": ":"}


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_to_png(fig: Figure, dpi: int = DPI) -> bytes:
    """Render a figure to PNG bytes (no timestamp/software metadata) and clear it."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    finally:
        fig.clear()
    return buf.getvalue()


def _trial_label(number: int | float | None, trial_id: str = "") -> str:
    if number is None or (isinstance(number, float) and not math.isfinite(number)):
        return trial_id or "?"
    return f"#{int(number)}"


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def render_front(info: FrontPlotInfo, title: str | None = None) -> Figure:
    """A global-front projection: faded calibrated points, highlighted front, fixed policies."""
    fig = _new_figure(9.0, 5.4)
    ax = fig.add_subplot()
    bg, part, front = info.background, info.partial, info.front
    if len(bg):
        ax.scatter(bg.x, bg.y, s=14, color="0.55", alpha=0.35, linewidths=0, zorder=1,
                   label=f"calibrated points, complete trials ({len(bg)})")
    if len(part):
        ax.scatter(part.x, part.y, s=16, facecolors="none", edgecolors="0.55", alpha=0.45,
                   linewidths=0.7, zorder=1, label=f"partial trials, stopped early ({len(part)})")
    for i, fixed in enumerate(info.fixed):
        color_index = fixed.exit_index if fixed.exit_index is not None else i
        ax.scatter(fixed.points.x, fixed.points.y, s=30, marker=_FIXED_MARKERS.get(fixed.level, "s"),
                   color=_FIXED_COLORS[color_index % len(_FIXED_COLORS)], edgecolors="black",
                   linewidths=0.4, alpha=0.75, zorder=2,
                   label=f"fixed {fixed.policy.removeprefix('fixed:')}")
    if len(info.staircase) >= 2:
        ax.plot(info.staircase[:, 0], info.staircase[:, 1], color=_FRONT_COLOR, lw=1.4, alpha=0.9,
                zorder=3, label="front envelope in this projection")
    if len(front):
        ax.scatter(front.x, front.y, s=52, color=_FRONT_COLOR, edgecolors="black", linewidths=0.8,
                   zorder=4, label=f"global front ({len(front)}): chosen on calibration")
    if info.x_reference is not None:
        ax.axvline(info.x_reference, color="0.35", ls=":", lw=1.0, zorder=0, label="largest network")
    ax.set_xlabel(info.x_label)
    ax.set_ylabel(info.y_label)
    ax.set_title(title or f"{info.y_name} vs {info.x_name}: test scores", fontsize=11)
    ax.grid(True, color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def _palette(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def render_threshold_curves(info: ThresholdCurvesInfo) -> Figure:
    """One accuracy-vs-MFLOPs line per complete trial (its trial front on test)."""
    fig = _new_figure(9.0, 5.4)
    ax = fig.add_subplot()
    labelled = list(info.labelled)
    colors = dict(zip(labelled, _palette(len(labelled))))
    for curve in info.curves:  # unlabelled first, in grey, under the labelled ones
        if curve.trial_id not in colors:
            ax.plot(curve.mflops, curve.accuracy, color="0.72", lw=0.8, marker="o", ms=2, zorder=1)
    for trial_id in labelled:
        curve = next(c for c in info.curves if c.trial_id == trial_id)
        hv = f" (HV {curve.hypervolume:.3g})" if math.isfinite(curve.hypervolume) else ""
        ax.plot(curve.mflops, curve.accuracy, color=colors[trial_id], lw=1.4, marker="o", ms=3.5,
                zorder=2, label=_trial_label(curve.trial_number, curve.trial_id) + hv)
    ax.set_xlabel("expected MFLOPs per image (test)")
    ax.set_ylabel("accuracy (test)")
    ax.set_title("Each complete trial's threshold curve (trial front, test scores)", fontsize=11)
    ax.grid(True, color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    if labelled:
        title = "trial (hypervolume)"
        if info.hidden_in_legend:
            title += f"\n+{info.hidden_in_legend} more in grey"
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
                  title=title, title_fontsize=8)
    return fig


def render_hypervolume(info: HypervolumeInfo) -> Figure:
    """Each trial's calibration hypervolume by trial number, and the running best."""
    fig = _new_figure(8.0, 4.2)
    ax = fig.add_subplot()
    status = np.array(info.status, dtype=object)
    complete = status == "complete"
    if complete.any():
        ax.scatter(info.trial_number[complete], info.hypervolume[complete], s=30, color="#1f77b4",
                   zorder=2, label="complete trial")
    other = ~complete
    if other.any():
        ax.scatter(info.trial_number[other], info.hypervolume[other], s=30, facecolors="none",
                   edgecolors="0.5", zorder=2, label="partial trial (lower fidelity)")
    ok = np.isfinite(info.running_best)
    if ok.any():
        x = np.append(info.trial_number[ok], info.trial_number[ok][-1] + 0.5)
        y = np.append(info.running_best[ok], info.running_best[ok][-1])
        ax.step(x, y, where="post", color=_BEST_COLOR, lw=1.5, zorder=1,
                label="running best (complete trials)")
    if info.best_trial_number is not None:
        ax.scatter([info.best_trial_number], [info.best_hypervolume], s=160, marker="*",
                   color=_BEST_COLOR, edgecolors="black", linewidths=0.6, zorder=3,
                   label=f"best: #{info.best_trial_number} ({info.best_hypervolume:.4g})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel("calibration hypervolume")
    ax.set_title("Hypervolume over trials", fontsize=11)
    ax.grid(True, color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)] if items else []


def render_learning_curves(info: LearningCurvesInfo, max_cols: int = 4) -> Figure:
    """Small multiples by metric (loss, quick hypervolume, lr, then accuracy per exit), a line per trial.

    Up to 10 trials get distinct colours and a legend; more get a colour scale by trial number.
    Line style gives the status (complete solid, partial dashed, failed dotted).
    """
    trials = [t for t in info.trials if t.epoch.size]

    def has(values: Iterable[np.ndarray]) -> bool:
        return any(np.isfinite(v).any() for v in values)

    groups: list[list[tuple[str, str, Any]]] = []  # rows of (title, y label, getter)
    misc: list[tuple[str, str, Any]] = []
    if has(t.train_loss for t in trials):
        misc.append(("training loss", "loss", lambda t: t.train_loss))
    if has(t.hypervolume for t in trials):
        misc.append(("quick calibration hypervolume", "hypervolume", lambda t: t.hypervolume))
    if has(t.lr for t in trials):
        misc.append(("learning rate", "lr", lambda t: t.lr))
    groups.extend(list(c) for c in _chunks(misc, max_cols))
    for level, attr in (("fine", "fine_acc"), ("coarse", "coarse_acc")):
        panels = []
        for k in range(info.n_exits):
            if has(getattr(t, attr)[:, k] for t in trials):
                panels.append((f"{level} accuracy, exit {k}", f"{level} acc. (calibration)",
                               lambda t, a=attr, k=k: getattr(t, a)[:, k]))
        groups.extend(list(c) for c in _chunks(panels, max_cols))
    ncols = max((len(g) for g in groups), default=1)
    nrows = max(len(groups), 1)
    fig = _new_figure(3.1 * ncols + 1.6, 2.5 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False)

    numbers = [t.trial_number for t in trials]
    use_legend = len(trials) <= 10
    if use_legend:
        colors = _palette(len(trials))
    else:
        import matplotlib

        finite = [n for n in numbers if n is not None]
        norm = Normalize(min(finite, default=0), max(max(finite, default=1), min(finite, default=0) + 1))
        cmap = matplotlib.colormaps["viridis"]
        colors = [cmap(norm(n)) if n is not None else (0.5, 0.5, 0.5, 1.0) for n in numbers]

    used: list[Axes] = []
    for r, group in enumerate(groups):
        for c in range(ncols):
            ax = axes[r][c]
            if c >= len(group):
                ax.set_visible(False)
                continue
            title, ylabel, get = group[c]
            for t, color in zip(trials, colors):
                ax.plot(t.epoch, get(t), color=color, lw=1.1, alpha=0.9,
                        ls=_STATUS_LINESTYLE.get(t.status, "-."),
                        marker="o" if t.epoch.size == 1 else None, ms=3)
            if title == "learning rate":
                values = np.concatenate([t.lr for t in trials])
                values = values[np.isfinite(values)]
                if values.size and values.min() > 0 and values.max() / values.min() > 20:
                    ax.set_yscale("log")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, color="0.9", lw=0.5)
            used.append(ax)
    if not groups:
        axes[0][0].set_visible(False)

    status_handles = [Line2D([], [], color="0.3", ls=ls, label=s)
                      for s, ls in _STATUS_LINESTYLE.items() if any(t.status == s for t in trials)]
    if use_legend:
        handles = [Line2D([], [], color=c, lw=1.5, label=_trial_label(t.trial_number, t.trial_id))
                   for t, c in zip(trials, colors)]
        fig.legend(handles=handles + status_handles, loc="outside right upper", fontsize=8,
                   frameon=False, title="trial", title_fontsize=8)
    else:
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=used or axes[0][0], label="trial number",
                     shrink=0.6)
        if status_handles:
            fig.legend(handles=status_handles, loc="outside lower right", fontsize=8, frameon=False)
    fig.suptitle("Learning curves (calibration accuracy per exit)", fontsize=11)
    return fig


def render_figures(info: ReportInfo) -> dict[str, bytes]:
    """Every figure that has something to show, as PNG bytes, keyed as in build.FIGURE_NAMES."""
    out: dict[str, bytes] = {}
    if info.front_flops.drawable:
        out["front_flops"] = figure_to_png(render_front(
            info.front_flops, "Global front: accuracy vs expected FLOPs (test scores)"))
    if info.front_specificity.drawable:
        out["front_specificity"] = figure_to_png(render_front(
            info.front_specificity, "Global front: accuracy vs specificity (test scores)"))
    if info.threshold_curves.curves:
        out["threshold_curves"] = figure_to_png(render_threshold_curves(info.threshold_curves))
    if len(info.hypervolume.trial_number):
        out["hypervolume"] = figure_to_png(render_hypervolume(info.hypervolume))
    if info.learning_curves.drawable:
        out["learning_curves"] = figure_to_png(render_learning_curves(info.learning_curves))
    return out


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;
padding:1rem 2rem;color:#222;line-height:1.4}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:.25rem 1rem}dl.kv dt{font-weight:600}
dl.kv dd{margin:0}
.wrap{overflow-x:auto}table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.2rem .45rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.calib{color:#777}tr:nth-child(even) td{background:#fafafa}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555;max-width:900px}
.note{background:#fff8e1;border-left:4px solid #f0c000;padding:.3rem .6rem;font-size:.9rem}
.empty{color:#777;font-style:italic}pre.err{white-space:pre-wrap;margin:0;font-size:.8rem;max-width:60rem}
nav ol{columns:2;font-size:.9rem}code{background:#f4f4f4;padding:0 .2rem}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "—"
        return f"{float(value):.{digits}g}"
    return _e(value)


def _fmt_list(values: Sequence[float] | None) -> str:
    if not values:
        return "—"
    return " / ".join("—" if not math.isfinite(v) else f"{v:g}" for v in values)


def _config_text(config: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items()) or "—"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], classes: Sequence[str] | None = None) -> str:
    """Headers are escaped here; cells must already be HTML (escape data before passing it)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = classes[i] if classes and i < len(classes) and classes[i] else ""
            cells.append(f'<td class="{cls}">{cell}</td>' if cls else f"<td>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _kv(items: Iterable[tuple[str, str]]) -> str:
    """A definition list; keys and values are escaped here."""
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return f'<dl class="kv">{rows}</dl>' if rows else '<p class="empty">nothing recorded</p>'


def _figure(png: bytes | None, alt: str, caption: str, missing: str) -> str:
    if png is None:
        return f'<p class="empty">{_e(missing)}</p>'
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _header(info: ReportInfo) -> str:
    h = info.header
    c = h.counts
    counts = f"{c.total} total: {c.complete} complete, {c.partial} partial, {c.failed} failed"
    if c.other:
        counts += f", {c.other} other"
    best = "—"
    if math.isfinite(h.best_hypervolume):
        best = f"{h.best_hypervolume:.6g} (trial #{h.best_trial_number})"
    items: list[tuple[str, str]] = [
        ("run", h.run), ("space", h.space), ("dataset", h.dataset), ("trials", counts),
        ("best trial hypervolume", best + " — calibration, complete trials"),
        ("global front size", f"{h.front_size} operating points"),
        ("point objectives", ", ".join(f"{k} ({v})" for k, v in h.point_objectives.items())),
    ]
    if h.objectives:
        items.append(("search objectives", ", ".join(f"{k} ({v})" for k, v in h.objectives.items())))
    items.append(("FLOPs convention", h.flops_convention
                  + ("" if h.flops_convention_from_spec else " [spec.json states none; results schema's]")))
    items.append(("specificity", h.specificity_definition
                  + ("" if h.specificity_definition_from_spec else " [spec.json states none; results schema's]")))
    if h.reference_mflops is not None:
        items.append(("largest network", f"{h.reference_mflops:.4g} MFLOPs per image"))
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in h.notes)
    return (f'<header id="summary"><h1>Run {_e(h.run)}</h1>{_kv(items)}{notes}'
            f'<p>Built {_e(datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))} from '
            f"<code>{_e(info.run_dir)}</code>. Scores in figures are on the <b>test</b> split; "
            "operating points were chosen on the <b>calibration</b> split.</p></header>")


def _front_caption(p: FrontPlotInfo) -> str:
    parts = [
        "Grey dots: every calibrated operating point of the complete trials, test scores. "
        "Red: the run's global front, chosen on calibration scores and drawn with their test "
        "scores (the line is the envelope of those front points that stay non-dominated in this "
        "projection). Triangles: fixed reference policies (▲ fine, ▼ coarse; colour = exit).",
    ]
    if len(p.partial):
        parts.append("Hollow grey: partial trials (stopped early), never eligible for the front.")
    if p.skipped:
        parts.append(f"{p.skipped} row(s) with a null coordinate are not drawn.")
    return _e(" ".join(parts))


def _front_table(info: ReportInfo) -> str:
    t = info.front_table
    if not t.rows:
        return '<p class="empty">No global-front points among complete trials.</p>'
    headers = ["trial", "policy", "accuracy (test)", "(calib.)", "specificity (test)", "(calib.)",
               "MFLOPs (test)", "(calib.)", "FLOPs / largest (test)", "thresholds fine",
               "thresholds coarse", "exit fraction (test)", *t.config_names]
    classes = ["", "", "num", "num calib", "num", "num calib", "num", "num calib", "num", "", "", "",
               *(["num"] * len(t.config_names))]
    rows = []
    for r in t.rows:
        rows.append([
            f'<span title="{_e(r.point_id)}">{_e(_trial_label(r.trial_number, r.trial_id))}</span>',
            _e(r.policy),
            _fmt(r.test_accuracy), _fmt(r.calib_accuracy),
            _fmt(r.test_specificity), _fmt(r.calib_specificity),
            _fmt(r.test_mflops), _fmt(r.calib_mflops), _fmt(r.test_flops_norm),
            _e(_fmt_list(r.thresholds_fine)), _e(_fmt_list(r.thresholds_coarse)),
            _e(_fmt_list(r.exit_fraction)),
            *[_fmt(r.config.get(name)) for name in t.config_names],
        ])
    return _table(headers, rows, classes) + (
        "<p>Thresholds are per-exit normalised-entropy thresholds (rounded); "
        "hover a trial for its point id.</p>")


def _trials_table(info: ReportInfo) -> str:
    if not info.trials:
        return '<p class="empty">No trials.</p>'
    rows = [[_e(_trial_label(t.trial_number)), _e(t.trial_id), _e(t.status),
             _fmt(t.fidelity, 3), f"{_fmt(t.epochs_done)} / {_fmt(t.epochs_planned)}",
             _fmt(t.hypervolume, 6), _e(_config_text(t.config))] for t in info.trials]
    return _table(["trial", "id", "status", "fidelity", "epochs", "hypervolume", "config"], rows,
                  ["", "", "", "num", "num", "num", ""])


def _failed(info: ReportInfo) -> str:
    if not info.failed.trials:
        return '<p class="empty">No failed trials.</p>'
    rows = [[_e(_trial_label(t.trial_number)), _e(t.trial_id),
             f"{_fmt(t.epochs_done)} / {_fmt(t.epochs_planned)}",
             f'<pre class="err">{_e(t.error or "(no reason recorded)")}</pre>',
             _e(_config_text(t.config))] for t in info.failed.trials]
    return _table(["trial", "id", "epochs", "reason", "config"], rows)


def render_html(info: ReportInfo, figures: Mapping[str, bytes]) -> str:
    """The whole report as one self-contained HTML page."""
    h = info.header
    sections: list[tuple[str, str, str]] = []

    front_body = _figure(figures.get("front_flops"), "accuracy vs expected FLOPs",
                         _front_caption(info.front_flops),
                         "Nothing to draw: no test-split operating points with accuracy and FLOPs.")
    front_body += _figure(figures.get("front_specificity"), "accuracy vs specificity",
                          _front_caption(info.front_specificity),
                          "Accuracy vs specificity not drawn: no test-split point has a specificity "
                          "(e.g. a space with a single operating point per trial).")
    sections.append(("front", "Global front", front_body))

    sections.append(("curves", "Threshold curves per trial", _figure(
        figures.get("threshold_curves"), "threshold curve per trial",
        _e("Each complete trial's calibrated trial-front points, test scores, joined by FLOPs. "
           "The legend lists the trials with the highest hypervolume; others are grey."),
        "No complete trial has calibrated trial-front points on the test split.")))

    sections.append(("table", "Front operating points", _front_table(info)))

    hv_body = _figure(figures.get("hypervolume"), "hypervolume over trials",
                      _e("Each trial's calibration-front hypervolume (its search signal). The "
                         "running best counts complete trials only; partial trials are hollow."),
                      "No trial has a hypervolume.")
    sections.append(("hypervolume", "Hypervolume over trials and trials overview",
                     hv_body + _trials_table(info)))

    sections.append(("learning", "Learning curves", _figure(
        figures.get("learning_curves"), "learning curves",
        _e("Per trial and epoch: training loss, quick calibration hypervolume, learning rate and "
           "each exit's calibration accuracy (fine and coarse heads)."),
        "No learning curves (curves.parquet absent or empty).")))

    sections.append(("failed", f"Failed trials ({len(info.failed.trials)})", _failed(info)))

    s = info.spec
    spec_body = "<h3>Spec</h3>" + _kv(s.spec_items)
    spec_body += "<h3>Provenance (spec.json)</h3>" + _kv(s.provenance_items)
    spec_body += "<h3>Provenance recorded in the results rows</h3>" + _kv(s.row_provenance)
    sections.append(("spec", "Spec and provenance", spec_body))

    toc = '<li><a href="#summary">Summary</a></li>' + "".join(
        f'<li><a href="#{sid}">{_e(title)}</a></li>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{i}. {_e(title)}</h2>{content}</section>'
                   for i, (sid, title, content) in enumerate(sections, start=2))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>Report: {_e(h.run)}</title><style>{_CSS}</style></head><body>"
            f"{_header(info)}<nav><ol>{toc}</ol></nav>{body}</body></html>\n")
