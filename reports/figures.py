"""Draw the report's info objects as PNG figures (kept in RUN_DIR/figures/ for papers).

Nothing here decides what is shown (which points are on a front, what the running best is): that
is computed, and tested, in `reports.compute` / `reports.overview`. Figures are plain
`matplotlib.figure.Figure` objects bound to the Agg canvas; pyplot is never imported, so no global
figure registry or backend state is touched. Colours and markers come from `reports.style`, so a
policy looks the same here and in the page's interactive SVG.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from reports.info import (
    ExitFractionInfo,
    FrontPlotInfo,
    LearningCurvesInfo,
    ObjectiveInfo,
    ProgressInfo,
    ReportInfo,
    TrialCurvesInfo,
)
from reports.style import FRONT_COLOR, MARK_COLOR, MPL_MARKERS, figure_files, policy_styles, reference_styles
from reports.values import fmt_num, trial_label

__all__ = [
    "figure_to_png",
    "render_exit_fractions",
    "render_figures",
    "render_front",
    "render_learning_curves",
    "render_objective",
    "render_progress",
    "render_trial_curves",
]

DPI = 110
MAX_BARS = 60  # exit-fraction bars drawn; beyond, the figure says how many more the table lists
_STATUS_LINESTYLE = {"complete": "-", "partial": "--", "failed": ":"}
_LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8, "frameon": False}


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _axes(fig: Figure, x_label: str, y_label: str, title: str) -> Any:
    ax = fig.add_subplot()
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=11)
    ax.grid(True, color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    return ax


def figure_to_png(fig: Figure, dpi: int = DPI) -> bytes:
    """Render a figure to PNG bytes (no timestamp/software metadata) and clear it."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    finally:
        fig.clear()
    return buf.getvalue()


def _palette(n: int) -> list[Any]:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def render_front(info: FrontPlotInfo) -> Figure:
    """A global-front projection: points by policy, partial trials fainter, references, front, marks."""
    fig = _new_figure(9.5, 5.6)
    ax = _axes(fig, info.x.label("test"), info.y.label("test"),
               f"Global front: {info.y.name} vs {info.x.name} (test scores)")
    styles, refs = policy_styles(info.policies), reference_styles([g.name for g in info.references])
    single = len(info.policies) <= 1
    for g in info.background:
        s = styles[g.name]
        ax.scatter(g.points.x, g.points.y, s=16 if single else 24, color=s.color, marker=MPL_MARKERS[s.marker],
                   alpha=0.4 if single else 0.6,
                   linewidths=0, zorder=1, label=f"{g.name}{', complete trials' if single else ''} ({len(g.points)})")
    for g in info.partial:
        s = styles[g.name]
        ax.scatter(g.points.x, g.points.y, s=18, facecolors="none", edgecolors=s.color, marker=MPL_MARKERS[s.marker],
                   alpha=0.55, linewidths=0.8, zorder=1, label=f"{g.name}, partial trials ({len(g.points)})")
    for g in info.references:
        s = refs[g.name]
        ax.scatter(g.points.x, g.points.y, s=34, color=s.color, marker=MPL_MARKERS[s.marker], edgecolors="black",
                   linewidths=0.4, alpha=0.8, zorder=2, label=f"{g.name} (reference)")
    if len(info.staircase) >= 2:
        ax.plot(info.staircase[:, 0], info.staircase[:, 1], color=FRONT_COLOR, lw=1.3, alpha=0.9, zorder=3,
                label="front envelope in this projection")
    for g in info.front_groups:  # the front's colour, each policy's own marker (which loss, which mode)
        ax.scatter(g.points.x, g.points.y, s=48, color=FRONT_COLOR, marker=MPL_MARKERS[styles[g.name].marker],
                   edgecolors="black", linewidths=0.7, zorder=4,
                   label=(f"global front ({len(g.points)})" if single else f"global front: {g.name} ({len(g.points)})")
                   + ", chosen on calibration")
    for g in info.marks:
        ax.scatter(g.points.x, g.points.y, s=190, marker="*", color=MARK_COLOR, edgecolors="black", linewidths=0.7,
                   zorder=5, label=f"{g.name} ({len(g.points)})")
    if len(info.default):
        ax.scatter(info.default.x, info.default.y, s=260, facecolors="none", edgecolors="black", linewidths=1.6, zorder=6,
                   label="default operating point")
    if info.guide is not None:
        ax.axvline(info.guide.x, color="0.35", ls=":", lw=1.0, zorder=0, label=info.guide.label)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**_LEGEND)
    return fig


def render_trial_curves(info: TrialCurvesInfo) -> Figure:
    """Each complete trial's own front on test, one line per trial; the legend's trials in colour."""
    fig = _new_figure(9.5, 5.4)
    ax = _axes(fig, info.x.label("test"), info.y.label("test"),
               "Each complete trial's own front (test scores; the line: its staircase in this projection)")
    colors = dict(zip(info.labelled, _palette(len(info.labelled))))
    by_id = {c.trial_id: c for c in info.curves}
    for c in info.curves:  # unlabelled first, in grey, under the labelled ones
        if c.trial_id not in colors:
            ax.plot(c.line[:, 0], c.line[:, 1], color="0.72", lw=0.8, zorder=1)
            ax.scatter(c.points.x, c.points.y, s=5, color="0.72", zorder=1)
    for trial_id in info.labelled:
        c = by_id[trial_id]
        value = f" ({fmt_num(c.value)})" if math.isfinite(c.value) else ""
        ax.plot(c.line[:, 0], c.line[:, 1], color=colors[trial_id], lw=1.4, zorder=2)
        ax.scatter(c.points.x, c.points.y, s=14, color=colors[trial_id], zorder=2)
        ax.plot([], [], color=colors[trial_id], lw=1.4, marker="o", ms=3.5, label=trial_label(c.trial_number, c.trial_id) + value)
    if info.labelled:
        title = f"trial ({info.ranked_by})" if info.ranked_by else "trial"
        if info.hidden_in_legend:
            title += f"\n+{info.hidden_in_legend} more in grey"
        ax.legend(title=title, title_fontsize=8, **_LEGEND)
    return fig


def render_exit_fractions(info: ExitFractionInfo) -> Figure:
    """A stacked horizontal bar per front point: the fraction answered at each exit (test)."""
    bars = info.bars[:MAX_BARS]
    fig = _new_figure(9.0, 1.4 + 0.24 * max(len(bars), 1))
    more = f" (first {len(bars)} of {len(info.bars)})" if len(info.bars) > len(bars) else ""
    ax = _axes(fig, info.metric.label("test"), "", f"{info.metric.name} of the global front's points{more}")
    cmap = matplotlib.colormaps["viridis"]
    colors = [cmap(k / max(info.n_exits - 1, 1)) for k in range(info.n_exits)]
    y = np.arange(len(bars))
    left = np.zeros(len(bars))
    for k in range(info.n_exits):
        width = np.array([b.fractions[k] if k < len(b.fractions) and math.isfinite(b.fractions[k]) else 0.0 for b in bars])
        ax.barh(y, width, left=left, height=0.75, color=colors[k], edgecolor="white", linewidth=0.4, label=f"exit {k}")
        left += width
    ax.set_yticks(y, [b.label for b in bars], fontsize=7)
    ax.invert_yaxis()  # the table's first row on top
    ax.set_xlim(0, max(1.0, float(left.max()) if len(left) else 1.0))
    ax.grid(False)
    ax.legend(**_LEGEND)
    return fig


def render_objective(info: ObjectiveInfo) -> Figure:
    """An outer objective by trial number: complete solid, partial hollow, running best, best starred."""
    fig = _new_figure(8.5, 4.2)
    ax = _axes(fig, "trial number", info.metric.label(), f"{info.metric.name} over trials ({info.metric.direction}imise)")
    complete = np.array([s == "complete" for s in info.status], dtype=bool)
    if complete.any():
        ax.scatter(info.trial_number[complete], info.value[complete], s=30, color="#1f77b4", zorder=2, label="complete trial")
    if (~complete).any():
        ax.scatter(info.trial_number[~complete], info.value[~complete], s=30, facecolors="none", edgecolors="0.5", zorder=2,
                   label="partial trial (lower fidelity)")
    ok = np.isfinite(info.running_best)
    if ok.any():
        x = np.append(info.trial_number[ok], info.trial_number[ok][-1] + 0.5)
        ax.step(x, np.append(info.running_best[ok], info.running_best[ok][-1]), where="post", color=FRONT_COLOR, lw=1.5,
                zorder=1, label="running best (complete trials)")
    if info.best_trial_number is not None:
        ax.scatter([info.best_trial_number], [info.best_value], s=170, marker="*", color=FRONT_COLOR, edgecolors="black",
                   linewidths=0.6, zorder=3, label=f"best: #{info.best_trial_number} ({fmt_num(info.best_value)})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**_LEGEND)
    return fig


def time_unit(seconds: float) -> tuple[float, str]:
    """(divisor, name) to show a span of `seconds` in: seconds, minutes or hours."""
    return (1.0, "s") if seconds < 120 else (60.0, "min") if seconds < 7200 else (3600.0, "h")


def render_progress(info: ProgressInfo) -> Figure:
    """The front's hypervolume against wall-clock time and against epochs spent; stopped trials crossed."""
    fig = _new_figure(11.0, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    div, unit = time_unit(info.total_seconds)
    for ax, x, x_stop, end, label in (
            (axes[0], info.complete_seconds / div, info.stopped_seconds / div, info.total_seconds / div,
             f"wall-clock time since the run started ({unit})"),
            (axes[1], info.complete_epochs, info.stopped_epochs, float(info.total_epochs), "epochs trained by all trials")):
        xs = np.concatenate([[0.0], x, [max(end, x[-1] if len(x) else 0.0)]])
        ys = np.concatenate([[0.0], info.hypervolume, [info.hypervolume[-1] if len(info.hypervolume) else 0.0]])
        ax.step(xs, ys, where="post", color=FRONT_COLOR, lw=1.5, zorder=2, label="hypervolume of the run's front")
        ax.scatter(x, info.hypervolume, s=22, color=FRONT_COLOR, zorder=3, label=f"a trial completed ({len(x)})")
        if len(x_stop):
            ax.scatter(x_stop, info.stopped_hypervolume, s=34, marker="x", color="0.25", linewidths=1.2, zorder=4,
                       label=f"a trial stopped early ({len(x_stop)})")
        ax.set_xlabel(label)
        ax.grid(True, color="0.9", lw=0.6)
        ax.set_axisbelow(True)
    if info.planned_epochs > info.total_epochs:
        axes[1].axvline(info.planned_epochs, color="0.35", ls=":", lw=1.0,
                        label=f"every trial to its end: {info.planned_epochs} epochs")
    axes[0].set_ylabel("hypervolume of the run's front")
    axes[1].legend(**_LEGEND)
    fig.suptitle("Search progress: the hypervolume of the run's front over " + ", ".join(m.name for m in info.objectives)
                 + " (calibration)", fontsize=11)
    return fig


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def render_learning_curves(info: LearningCurvesInfo, max_cols: int = 4) -> Figure:
    """Small multiples, a line per trial: scalar panels first, then each vector column on its own rows.

    Up to 10 trials get distinct colours and a legend; more get a colour scale by trial number.
    Line style gives the status (complete solid, partial dashed, failed dotted).
    """
    trials = [t for t in info.trials if t.epoch.size]
    indexed = list(enumerate(info.panels))
    groups = _chunks([p for p in indexed if p[1].exit_index is None], max_cols)
    for column in dict.fromkeys(p.column for p in info.panels if p.exit_index is not None):
        groups += _chunks([p for p in indexed if p[1].column == column and p[1].exit_index is not None], max_cols)
    ncols, nrows = max((len(g) for g in groups), default=1), max(len(groups), 1)
    fig = _new_figure(3.1 * ncols + 1.6, 2.5 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    numbers = [t.trial_number for t in trials]
    legend = len(trials) <= 10
    if legend:
        colors = _palette(len(trials))
    else:
        finite = [n for n in numbers if n is not None]
        norm = Normalize(min(finite, default=0), max(max(finite, default=1), min(finite, default=0) + 1))
        cmap = matplotlib.colormaps["viridis"]
        colors = [cmap(norm(n)) if n is not None else (0.5, 0.5, 0.5, 1.0) for n in numbers]
    epochs = np.concatenate([t.epoch for t in trials]) if trials else np.zeros(0)
    epochs = epochs[np.isfinite(epochs)]
    used = []
    for r in range(nrows):
        for c in range(ncols):
            ax = axes[r][c]
            if r >= len(groups) or c >= len(groups[r]):
                ax.set_visible(False)
                continue
            i, panel = groups[r][c]
            for t, color in zip(trials, colors):
                ax.plot(t.epoch, t.values[i], color=color, lw=1.1, alpha=0.9, ls=_STATUS_LINESTYLE.get(t.status, "-."),
                        marker="o" if t.epoch.size == 1 else None, ms=3)
            values = np.concatenate([t.values[i] for t in trials]) if trials else np.zeros(0)
            values = values[np.isfinite(values)]
            if values.size and values.min() > 0 and values.max() / values.min() > 100:  # e.g. a decaying learning rate
                ax.set_yscale("log")
            ax.set_title(panel.title, fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.set_ylabel(panel.label, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if epochs.size and epochs.max() - epochs.min() < 2:  # a run of one or two epochs: whole-epoch ticks around them
                ax.set_xlim(epochs.min() - 1, epochs.max() + 1)
            ax.grid(True, color="0.9", lw=0.5)
            used.append(ax)
    status_handles = [Line2D([], [], color="0.3", ls=ls, label=s)
                      for s, ls in _STATUS_LINESTYLE.items() if any(t.status == s for t in trials)]
    if legend:
        handles = [Line2D([], [], color=c, lw=1.5, label=trial_label(t.trial_number, t.trial_id)) for t, c in zip(trials, colors)]
        fig.legend(handles=handles + status_handles, loc="outside right upper", fontsize=8, frameon=False, title="trial",
                   title_fontsize=8)
    else:
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=used or axes[0][0], label="trial number", shrink=0.6)
        if status_handles:
            fig.legend(handles=status_handles, loc="outside lower right", fontsize=8, frameon=False)
    fig.suptitle("Learning curves", fontsize=11)
    return fig


def render_figures(info: ReportInfo) -> dict[str, bytes]:
    """Every figure that has something to show, as PNG bytes, keyed by its file name (`style.figure_files`)."""
    files = figure_files(info)
    out: dict[str, bytes] = {}
    for i, front in enumerate(info.fronts):
        if front.drawable:
            out[files[f"front:{i}"]] = figure_to_png(render_front(front))
    if info.trial_curves is not None and info.trial_curves.curves:
        out[files["trial_curves"]] = figure_to_png(render_trial_curves(info.trial_curves))
    if info.exit_fractions is not None and info.exit_fractions.bars:
        out[files["exit_fractions"]] = figure_to_png(render_exit_fractions(info.exit_fractions))
    for o in info.objectives:
        if len(o.trial_number):
            out[files[f"objective:{o.metric.name}"]] = figure_to_png(render_objective(o))
    if info.progress is not None and (len(info.progress.complete_trials) or len(info.progress.stopped_trials)):
        out[files["progress"]] = figure_to_png(render_progress(info.progress))
    if info.learning_curves.drawable:
        out[files["learning_curves"]] = figure_to_png(render_learning_curves(info.learning_curves))
    return out
