"""The search's progress (reports.progress): the hypervolume of the run's front against wall-clock time
and epochs spent, computed by hand on the fabricated runs (tests/reports/fabricate.py: t0 and t2
complete, t1 stopped early, t3 failed; trial n starts 60 n s after the run, epochs of 100 s), and
drawn in the figure and the page."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports import figures as rf
from reports.html import render_html
from reports.overview import compute_report_info
from reports.progress import front_hypervolume, hypervolume_axes, reference_beyond_worst, run_progress
from reports.tables import RunTables
from tests.reports.fabricate import GRAN, Case
from trainables.pareto import hypervolume


def _points(tables: RunTables, trial: str, names) -> np.ndarray:
    r = tables.results
    rows = r[(r.trial_id == trial) & (r.split == "calibration") & ~r.reference.eq(True)]
    return rows[list(names)].to_numpy(dtype=float)


def test_progress_of_a_run_by_hand(case: Case, tables: RunTables) -> None:
    p = run_progress(tables)
    assert p.complete_trials == ("t0", "t2") and p.stopped_trials == ("t1",)
    # t0 wrote its result at 0 + 500 + 1 s, t2 at 120 + 500 + 1 s; t1 (stopped after 2 epochs) at 60 + 200 + 1 s
    assert p.complete_seconds.tolist() == [501.0, 621.0] and p.stopped_seconds.tolist() == [261.0]
    # epoch ends: t0 100..500, t1 160, 260, t2 220..620, t3 (failed) 280: 11 by 501 s, 13 by 621 s, 5 by 261 s
    assert p.complete_epochs.tolist() == [11, 13] and p.stopped_epochs.tolist() == [5]
    assert p.total_epochs == 13 and p.planned_epochs == 5 + 5 + 5 + 1 and p.total_seconds == 621.0
    assert p.stopped_fidelity.tolist() == [0.4] and p.notes == ()
    names, declared = hypervolume_axes(case.decl)
    maximize = case.decl.maximize(names)
    t0, t2 = _points(tables, "t0", names), _points(tables, "t2", names)
    if case is GRAN:
        assert declared == (0.0, 0.0, 1.0) and p.reference == declared and "declared" in p.reference_rule
    else:
        assert declared is None and p.reference == tuple(reference_beyond_worst(np.concatenate([t0, t2]), maximize))
    assert p.hypervolume.tolist() == pytest.approx([hypervolume(t0, p.reference, maximize),
                                                    hypervolume(np.concatenate([t0, t2]), p.reference, maximize)])
    assert p.hypervolume[1] >= p.hypervolume[0] > 0
    assert p.stopped_hypervolume.tolist() == [0.0]  # t1 stopped before any trial had completed
    # one reference for several runs compared
    assert run_progress(tables, reference=(9.0,) * len(names)).reference == (9.0,) * len(names)


def test_reference_point_and_cumulative_hypervolume() -> None:
    # maximise the first, minimise the second: worst (1, 30), a tenth of the ranges (2, 20) beyond it
    assert reference_beyond_worst(np.array([[1.0, 10.0], [3.0, 30.0]]), [True, False]).tolist() == pytest.approx([0.8, 32.0])
    # no spread: a tenth of the magnitude, or 0.1 at zero
    assert reference_beyond_worst(np.array([[2.0, 0.0], [2.0, 0.0]]), [False, False]).tolist() == pytest.approx([2.2, 0.1])
    with pytest.raises(ValueError, match="no finite point"):
        reference_beyond_worst(np.array([[np.nan, 1.0]]), [False, False])
    hv = front_hypervolume([np.array([[1.0, 3.0]]), np.array([[3.0, 1.0], [4.0, 4.0]]), np.zeros((0, 2))], [4.0, 4.0],
                           [False, False])
    assert hv.tolist() == [3.0, 3.0 + 2.0, 5.0]  # the second batch adds its non-overlapping 1 x 2; an empty batch nothing


def test_curves_without_epoch_times_count_epochs_at_the_last_result(tables: RunTables) -> None:
    old = tables._replace(curves=tables.curves.assign(ended_at=pd.NaT))
    p = run_progress(old)
    # every trial's epochs at its result: t0 5 by 501 s; t1 2 at 261, t3 1 at 281 -> 8; t2 5 more by 621 s
    assert p.complete_epochs.tolist() == [8, 13] and p.stopped_epochs.tolist() == [2] and len(p.notes) == 1
    assert "no per-epoch times" in p.notes[0]


def test_progress_figure_and_section(case: Case, tables: RunTables) -> None:
    info = compute_report_info(tables)
    fig = rf.render_progress(info.progress)
    labels = fig.axes[1].get_legend_handles_labels()[1]
    assert labels == ["hypervolume of the run's front", "a trial completed (2)", "a trial stopped early (1)",
                      "every trial to its end: 16 epochs"]
    assert fig.axes[0].get_xlabel() == "wall-clock time since the run started (min)"
    html = render_html(info, rf.render_figures(info))
    assert 'id="progress"' in html and "Epochs trained: 13 of the 16 these trials would have trained to their end (81%)" in html
    assert "Crosses: the 1 trial(s) a scheduler stopped early" in html
