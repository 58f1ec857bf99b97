"""The PNG figures (reports.figures): what each draws, checked on the matplotlib Figure objects, and
the files a build writes, named after the declaration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reports import figures as rf
from reports.info import CurvePanel, LearningCurvesInfo, TrialCurves
from reports.overview import compute_report_info
from reports.style import figure_files
from reports.tables import RunTables
from tests.reports.fabricate import GRAN, ONE_LEVEL, SINGLE, Case

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _labels(fig) -> list[str]:
    return fig.axes[0].get_legend_handles_labels()[1]


def test_front_figure_legend_names_policies_references_marks_and_guide(case: Case, tables: RunTables) -> None:
    from reports.compute import front_plot_info

    fig = rf.render_front(front_plot_info(tables, *case.decl.report.fronts[0]))
    labels = _labels(fig)
    info = front_plot_info(tables, *case.decl.report.fronts[0])
    if len(info.policies) <= 1:
        assert f"global front ({len(case.front)}), chosen on calibration" in labels
    else:  # the front's points keep their policy's marker: which mode or loss made each is visible
        front = [lb for lb in labels if lb.startswith("global front: ")]
        assert {lb.split(": ")[1].split(" (")[0] for lb in front} == {g.name for g in info.front_groups}
        assert sum(int(lb.split("(")[1].split(")")[0]) for lb in front) == len(case.front)
    assert all(f"{r} (reference)" in labels for r in case.references)
    if case is ONE_LEVEL:
        assert {"budget (6)", "risk (5)", "search (6)", "target (3)", "best_ratio (1)", "default operating point",
                "largest network: 100 MFLOPs", "front envelope in this projection"} <= set(labels)
        assert all(f"{p}, partial trials (3)" in labels for p in case.policies)
        colors = {tuple(c.get_facecolor()[0][:3]) for c in fig.axes[0].collections[:4]}
        assert len(colors) == 4  # one colour per policy
    if case is GRAN:
        assert "calibrated, complete trials (3)" in labels and "largest network: 100 MFLOPs" in labels
    assert fig.axes[0].get_xlabel() == tables.declaration.report.fronts[0][0] + (
        " [MFLOPs] (test)" if case is not SINGLE else " [ratio] (test)")


def test_render_figures_writes_one_png_per_drawable_figure(case: Case, tables: RunTables) -> None:
    info = compute_report_info(tables)
    pngs = rf.render_figures(info)
    assert set(pngs) == case.figures and set(pngs) <= set(figure_files(info).values())
    assert all(data.startswith(PNG_SIGNATURE) and len(data) > 5000 for data in pngs.values())


def test_objective_exit_fraction_and_trial_curve_figures(tables: RunTables) -> None:
    info = compute_report_info(tables)
    for o in info.objectives:
        labels = _labels(rf.render_objective(o))
        assert "best: #2 (0.45)" in labels and "running best (complete trials)" in labels
        assert "partial trial (lower fidelity)" in labels
    if info.exit_fractions is not None:
        fig = rf.render_exit_fractions(info.exit_fractions)
        assert len(fig.axes[0].patches) == info.exit_fractions.n_exits * len(info.exit_fractions.bars)
        assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [b.label for b in info.exit_fractions.bars]
    if info.trial_curves is not None:
        labels = _labels(rf.render_trial_curves(info.trial_curves))
        assert labels == ["#2 (0.45)", "#0 (0.3)"]  # best first


def test_learning_curves_one_axis_per_panel(case: Case, tables: RunTables) -> None:
    info = compute_report_info(tables).learning_curves
    fig = rf.render_learning_curves(info)
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in visible] == [p.title for p in info.panels]
    assert [len(ax.lines) for ax in visible] == [4] * len(info.panels)  # one line per trial
    assert {t.get_text() for t in fig.legends[0].get_texts()} >= {"#0", "#1", "#2", "#3", "complete", "partial", "failed"}


def test_learning_curves_with_many_trials_use_a_colour_scale() -> None:
    panels = (CurvePanel("train_loss", None, "train_loss", "train_loss"),)
    trials = tuple(TrialCurves(f"t{k}", k, "complete", np.arange(1.0, 4.0), (np.array([3.0, 2.0, 1.0]) + k,))
                   for k in range(12))
    fig = rf.render_learning_curves(LearningCurvesInfo(panels, trials))
    assert any(ax.get_ylabel() == "trial number" for ax in fig.axes)  # the colour bar
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["complete"]


def test_pngs_of_a_built_run(built: Path) -> None:
    for png in (built / "figures").glob("*.png"):
        assert png.read_bytes().startswith(PNG_SIGNATURE)
