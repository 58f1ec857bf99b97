"""What the report shows, checked on the info objects (reports.tables, reports.compute, reports.overview),
for gran_hbn's real declaration, a made-up one-level family with four calibration modes, and a
single-point space (tests/reports/fabricate.py)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from reports import compute as rc
from reports import overview as ro
from reports.info import Guide, TrialCounts
from reports.schema import results_table, write_table
from reports.tables import ReportInputError, RunTables, load_run
from tests.reports.fabricate import (
    FAIL_REASON,
    GRAN,
    MARKED,
    ONE_LEVEL,
    SINGLE,
    TRIALS,
    Case,
    cost,
    make_run_dir,
    score,
    spec,
)
from trainables import atomic


def _x_value(case: Case, n: int, q: int, i: int) -> float:
    """A point's shown x on the case's first front: FLOPs in MFLOPs, a ratio as is."""
    x = case.decl.column(case.decl.report.fronts[0][0])
    return cost(n, q, i) / 1e6 if x.unit == "FLOPs" else cost(n, q, i) / 100e6


# ---------------------------------------------------------------------------------------------------- loading


def test_load_run_takes_the_declaration_from_spec(case: Case, tables: RunTables) -> None:
    assert tables.declaration == case.decl
    assert tables.notes == ()
    assert {c.name for c in case.decl.columns()} <= set(tables.results.columns)


def test_missing_or_unreadable_results_raise(tmp_path: Path) -> None:
    with pytest.raises(ReportInputError, match="results.parquet"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(ReportInputError, match="has the search written"):
        load_run(tmp_path)
    (tmp_path / "results.parquet").write_bytes(b"not parquet")
    with pytest.raises(ReportInputError, match="cannot read"):
        load_run(tmp_path)


def test_damaged_optional_inputs_fall_back_to_the_registry(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, GRAN, with_curves=False, with_spec=False)
    (run_dir / "curves.parquet").write_bytes(b"not parquet")
    (run_dir / "spec.json").write_text("[1, 2]")
    tables = load_run(run_dir)
    assert tables.curves.empty and tables.spec == {}
    assert tables.declaration == GRAN.decl  # from the space named in the rows
    notes = " ".join(tables.notes)
    assert "curves.parquet could not be read" in notes and "spec.json is not a JSON object" in notes
    assert "current code of space 'gran_hbn'" in notes
    info = ro.compute_report_info(tables)
    assert not info.learning_curves.drawable
    assert info.fronts[0].guide is None and info.header.references == ()  # no spec: no references
    assert info.header.run == "demo-run"  # taken from the rows


def test_unusable_declaration_in_spec_falls_back_or_fails_clearly(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "gran", GRAN)
    atomic.write_json(run_dir / "spec.json", {"space": "gran_hbn", "declaration": {"yields": "many"}})
    tables = load_run(run_dir)
    assert tables.declaration == GRAN.decl and "unusable" in tables.notes[0]
    made_up = make_run_dir(tmp_path / "made_up", ONE_LEVEL, with_spec=False)
    with pytest.raises(ReportInputError, match="'made_up'"):
        load_run(made_up)


# ---------------------------------------------------------------------------------------------------- trials, header


def test_trials_and_header(case: Case, tables: RunTables) -> None:
    trials = rc.trials_info(tables)
    assert [t.trial_id for t in trials.trials] == ["t0", "t1", "t2", "t3"]
    assert trials.counts == TrialCounts(complete=2, partial=1, failed=1, other=0)
    assert trials.trials[0].config == {**{k: f"{k}-0" for k in case.decl.report.key_config},
                                       "augment": True, "lr": 0.01, "width": 16}
    assert [m.name for m in trials.columns] == [c.name for c in case.decl.trial if c.kind != "floats"]
    h = ro.header_info(tables)
    assert (h.run, h.space, h.dataset, h.yields) == ("demo-run", case.space, "cifar100", case.decl.yields)
    assert h.front_size == len(case.front)
    assert [m.name for m in h.point_objectives] == list(case.decl.point_objectives)
    assert dict(h.conventions) == dict(case.decl.notes)  # (spec.json stores its keys sorted)
    assert any("not complete" in n for n in h.notes)  # the partial trial's on_front flag is reported
    if case is SINGLE:
        assert h.best is None  # the outer objectives are point values
    else:
        # the partial trial's 0.50 is not the best: only complete trials count
        name = next(iter(case.decl.objectives))
        assert h.best == (name, "max", pytest.approx(0.45), 2)
        assert [(r.name, r.value, r.unit) for r in h.references] == [(next(iter(case.reference_costs)), 100.0, "MFLOPs")]
    assert any("reference policies" in n for n in h.notes) == case.reference_on_front


# ---------------------------------------------------------------------------------------------------- fronts


def test_front_is_drawn_from_complete_trials_test_rows(case: Case, tables: RunTables) -> None:
    x, y = case.decl.report.fronts[0]
    info = rc.front_plot_info(tables, x, y)
    assert set(info.front.point_id) == case.front
    drawn = [p for g in (*info.background, *info.references) for p in g.points.point_id] + list(info.front.point_id)
    assert not any(p.startswith(("t1/", "t3/")) for p in drawn)
    assert {p for g in info.partial for p in g.points.point_id} == {
        f"t1/{p}/{i}" for p in case.policies for i in range(case.points)}
    assert sum(len(g.points) for g in info.background) == 2 * len(case.policies) * case.points - len(case.front)
    assert {g.name for g in info.references} == set(case.references)
    assert all(len(g.points) == 2 for g in info.references)  # complete trials only
    assert info.policies == tuple(sorted(case.policies))
    assert [g.name for g in info.background] == sorted({g.name for g in info.background})
    # test scores, shown units: e.g. t2's point (q, i) -> x from its cost, y its TEST score
    for pid, px, py in zip(info.front.point_id, info.front.x, info.front.y):
        trial, policy, index = pid.split("/")
        n, q, i = TRIALS[trial][0], case.policies.index(policy), int(index)
        assert px == pytest.approx(_x_value(case, n, q, i)) and py == pytest.approx(score(n, q, i, "test"))
    assert list(info.front.x) == sorted(info.front.x)
    assert info.x.label("test").endswith("(test)") and info.x.name == x
    # the staircase starts at the cheapest front point and ends at the best y
    assert tuple(info.staircase[0]) == pytest.approx((info.front.x[0], info.front.y[0]))
    assert info.staircase[-1][1] == pytest.approx(info.front.y.max())


def test_front_guides_marks_and_default(case: Case, tables: RunTables) -> None:
    info = rc.front_plot_info(tables, *case.decl.report.fronts[0])
    if case.reference_costs:
        assert info.guide == Guide(pytest.approx(100.0), "largest network: 100 MFLOPs")
    else:
        assert info.guide is None
    if case is ONE_LEVEL:  # the mark is on t2/target/1's calibration row only: calibration decides
        trial, q, i = MARKED
        assert [(g.name, g.points.point_id) for g in info.marks] == [("best_ratio", (case.pid(trial, q, i),))]
        assert info.default.point_id == ("t2/target/1",)
        assert info.x.shown_unit == "MFLOPs" and info.x.scale == 1e6
    else:
        assert info.marks == ()
    if case is GRAN:  # no front point answers at the fine level often enough
        assert len(info.default) == 0
        second = rc.front_plot_info(tables, *case.decl.report.fronts[1])
        assert second.guide is None and set(second.front.point_id) == case.front


def test_staircase_by_hand() -> None:
    # cost (min) vs score (max): (3, .6) is dominated by (2, .7)
    st = rc.staircase(np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.7, 0.6]), False, True)
    np.testing.assert_allclose(st, [[1, 0.5], [2, 0.5], [2, 0.7]])
    # both maximised: walk from the largest x
    st = rc.staircase(np.array([0.2, 0.8]), np.array([0.9, 0.6]), True, True)
    np.testing.assert_allclose(st, [[0.8, 0.6], [0.2, 0.6], [0.2, 0.9]])
    assert rc.staircase(np.array([np.nan]), np.array([1.0]), False, True).shape == (0, 2)


def test_trial_curves(case: Case, tables: RunTables) -> None:
    info = rc.trial_curves_info(tables)
    if case is SINGLE:
        assert info is None  # not declared
        return
    assert [c.trial_id for c in info.curves] == ["t0", "t2"]  # partial and failed: none
    t0 = info.curves[0]
    assert len(t0.points) == 2 * len(case.policies)  # t0's own front: points 0 and 2 of each policy
    np.testing.assert_allclose(sorted(set(t0.points.x)), sorted({_x_value(case, 0, q, i) for q in range(len(case.policies))
                                                                 for i in (0, 2)}))
    assert info.ranked_by == next(iter(case.decl.objectives)) and info.labelled == ("t2", "t0")  # best value first
    capped = rc.trial_curves_info(tables, max_legend=1)
    assert capped.labelled == ("t2",) and capped.hidden_in_legend == 1


# ---------------------------------------------------------------------------------------------------- front table


def test_front_table_rows(case: Case, tables: RunTables) -> None:
    info = rc.front_table_info(tables)
    assert {r.point_id for r in info.rows} == case.front
    assert [m.name for m in info.metrics] == list(case.decl.report.table)
    assert info.params == tuple(c.name for c in case.decl.policy)
    assert info.config_names == tuple(sorted({"augment", "lr", "width", *case.decl.report.key_config}))
    x = case.decl.report.fronts[0][0]
    assert [r.test[x] for r in info.rows] == sorted(r.test[x] for r in info.rows)
    first_max = next(c.name for c in case.decl.point if c.direction == "max")
    for r in info.rows:
        n, q, i = TRIALS[r.trial_id][0], case.policies.index(r.policy), int(r.point_id.rsplit("/", 1)[1])
        assert r.test[first_max] == pytest.approx(score(n, q, i, "test"))
        assert r.calibration[first_max] == pytest.approx(score(n, q, i, "calibration"))
        assert r.config["width"] == 16 * (n + 1)
        for p in info.params:
            assert r.params[p] in ((round(0.1234567 * (i + 1), 3), 0.5, 1.0), 0.25 * i, False)
    if case is GRAN:
        row = next(r for r in info.rows if r.point_id == "t2/calibrated/1")
        assert row.test["expected_flops"] == pytest.approx(42e6)  # stored value; shown in MFLOPs
        assert row.test["specificity"] == pytest.approx(0.57)
        assert row.params["thresholds_fine"] == (0.247, 0.5, 1.0) and row.exit_fraction == (0.5, 0.3, 0.2)
        assert not any(r.default for r in info.rows) and "no front point meets" in info.default.error
    if case is ONE_LEVEL:
        assert [r.point_id for r in info.rows] == ["t0/target/0", "t2/risk/0", "t2/target/1", "t2/target/2"]
        assert [r.default for r in info.rows] == [False, False, True, False]
        assert info.rows[2].marks == ("best_ratio",) and info.marks == ("best_ratio",)
    if case is SINGLE:
        assert info.exit_fraction is None and all(r.exit_fraction is None and r.params == {} for r in info.rows)


def test_default_pick(case: Case, tables: RunTables) -> None:
    pick = rc.default_pick(tables)
    assert pick.rule == case.decl.selection.describe({c.name: c.direction for c in case.decl.point})
    expected = {GRAN.name: None, ONE_LEVEL.name: "t2/target/1", SINGLE.name: "t2/final/0"}[case.name]
    assert pick.point_id == expected
    if expected:
        assert pick.trial_number == 2 and pick.error is None
        first_max = next(c.name for c in case.decl.point if c.direction == "max")
        n, q, i = 2, case.policies.index(expected.split("/")[1]), int(expected.rsplit("/", 1)[1])
        assert pick.calibration[first_max] == pytest.approx(score(n, q, i, "calibration"))
        assert pick.test[first_max] == pytest.approx(score(n, q, i, "test"))
    else:
        assert "no front point meets" in pick.error and pick.calibration == {}


def test_default_pick_treats_a_null_constraint_value_as_unmet(tmp_path: Path) -> None:
    tables = load_run(make_run_dir(tmp_path, ONE_LEVEL))
    results = tables.results.copy()
    results.loc[results["point_id"].eq("t2/target/1") & results["split"].eq("calibration"), "expected_cost"] = np.nan
    assert rc.default_pick(tables._replace(results=results)).point_id == "t2/risk/0"


def test_exit_fractions(case: Case, tables: RunTables) -> None:
    info = rc.exit_fraction_info(tables)
    if case.decl.report.exit_fraction is None:
        assert info is None
        return
    assert info.n_exits == 3 and info.metric.name == case.decl.report.exit_fraction
    assert [b.point_id for b in info.bars] == [r.point_id for r in rc.front_table_info(tables).rows]
    assert all(b.fractions == (0.5, 0.3, 0.2) for b in info.bars)
    assert info.bars[0].label == f"#0 {case.policies[0]}/0"


def test_point_details_carry_hover_content(case: Case, tables: RunTables) -> None:
    details = rc.point_details(tables)
    pid = case.pid("t2", 0, min(1, case.points - 1))
    d = details[pid]
    assert (d.trial_number, d.status, d.policy, d.reference) == (2, "complete", case.policies[0], False)
    assert set(d.test) == set(d.calibration) == set(case.decl.report.table)
    assert d.key_config == {k: (0.03 if k == "lr" else 48 if k == "width" else f"{k}-2") for k in case.decl.report.key_config}
    assert set(d.params) == {c.name for c in case.decl.policy}
    assert all(details[f"t0/{r}/0"].reference for r in case.references)


# ---------------------------------------------------------------------------------------------------- over trials


def test_objective_running_best_by_hand(case: Case, tables: RunTables) -> None:
    infos = rc.objective_info(tables)
    if case is SINGLE:
        assert infos == ()  # its outer objectives are point values
        return
    (info,) = infos
    np.testing.assert_array_equal(info.trial_number, [0, 1, 2])  # the failed trial has none
    np.testing.assert_allclose(info.value, [0.30, 0.50, 0.45])
    assert info.status == ("complete", "partial", "complete")
    np.testing.assert_allclose(info.running_best, [0.30, 0.30, 0.45])  # the partial 0.50 does not count
    assert info.best_trial_number == 2 and info.best_value == pytest.approx(0.45)


def test_objective_minimised(tmp_path: Path) -> None:
    tables = load_run(make_run_dir(tmp_path, ONE_LEVEL))
    tables = tables._replace(declaration=dataclasses.replace(ONE_LEVEL.decl, objectives={"score": "min"}))
    (info,) = rc.objective_info(tables)
    np.testing.assert_allclose(info.running_best, [0.30, 0.30, 0.30])
    assert info.best_trial_number == 0 and info.metric.direction == "min"


def test_learning_curves(case: Case, tables: RunTables) -> None:
    lc = ro.learning_curves_info(tables)
    expected = ["train_loss", "lr"]
    for name in case.decl.report.epoch_panels:
        column = case.decl.column(name)
        expected += [f"{name}, exit {k}" for k in range(3)] if column.per_exit else [name]
    assert [p.title for p in lc.panels] == expected
    assert [t.trial_id for t in lc.trials] == ["t0", "t1", "t2", "t3"] and lc.drawable
    assert lc.trials[1].status == "partial" and lc.trials[1].epoch.tolist() == [1, 2]
    np.testing.assert_allclose(lc.trials[0].values[0], [2.0 / e for e in range(1, 6)])
    vector = [i for i, p in enumerate(lc.panels) if p.exit_index == 1]
    if vector:
        np.testing.assert_allclose(lc.trials[0].values[vector[0]], [0.12 * e for e in range(1, 6)])


def test_failed_and_spec(case: Case, tables: RunTables) -> None:
    failed = ro.failed_trials_info(tables)
    assert [(t.trial_id, t.trial_number, t.error) for t in failed.trials] == [("t3", 3, FAIL_REASON)]
    assert failed.trials[0].config["width"] == 64
    spec = ro.spec_info(tables)
    keys = dict(spec.spec_items)
    assert keys["budget"] == "smoke" and keys["args.out"] == "runs/demo"
    assert not any(k.startswith(("declaration", "provenance")) for k in keys)
    assert dict(spec.provenance_items)["provenance.versions.torch"] == "2.5.0"
    assert dict(spec.row_provenance)["git_rev"] == "abc1234+dirty"
    assert [c.name for c in spec.declaration] == [c.name for c in (*case.decl.point, *case.decl.policy, *case.decl.trial,
                                                                    *case.decl.curves)]


# ---------------------------------------------------------------------------------------------------- degenerate runs


def test_every_trial_failed(case: Case, tmp_path: Path) -> None:
    info = ro.compute_report_info(load_run(make_run_dir(tmp_path, case, all_failed=True, with_curves=False)))
    assert info.header.counts == TrialCounts(0, 0, 4, 0)
    assert not any(f.drawable for f in info.fronts) and info.front_table.rows == ()
    assert info.header.default.point_id is None and "no front point" in info.header.default.error
    assert info.header.best is None or (math.isnan(info.header.best.value) and info.header.best.trial_number is None)
    assert len(info.failed.trials) == 4 and info.points == {}


def test_empty_results(case: Case, tmp_path: Path) -> None:
    write_table(results_table([], case.decl), tmp_path / "results.parquet")
    (tmp_path / "spec.json").write_text("")
    with pytest.raises(ReportInputError, match="no space is named"):  # nothing says which declaration applies
        load_run(tmp_path)
    atomic.write_json(tmp_path / "spec.json", spec(case))
    info = ro.compute_report_info(load_run(tmp_path))
    assert info.header.counts.total == 0 and info.trials.trials == () and not info.learning_curves.drawable
    assert info.header.space == case.space and any("no curves.parquet" in n for n in info.header.notes)
    assert info.front_table.rows == () and info.points == {}


def test_notes_on_front_flags_the_figures_cannot_follow(tmp_path: Path) -> None:
    tables = load_run(make_run_dir(tmp_path, GRAN))
    results = tables.results.copy()
    point = results["point_id"]
    results = results[~(point.eq("t0/calibrated/0") & results["split"].eq("test"))]  # a front point without a test row
    results.loc[point.eq("t2/calibrated/1") & results["split"].eq("calibration"), "on_front"] = False  # flagged on test only
    tables = tables._replace(results=results)
    notes = ro.header_info(tables).notes
    assert any("1 global-front point(s) have no test row" in n and "t0/calibrated/0" in n for n in notes)
    assert any("on one split only (e.g. t2/calibrated/1)" in n for n in notes)
    info = rc.front_plot_info(tables, *GRAN.decl.report.fronts[0])
    assert set(info.front.point_id) == {"t2/calibrated/1", "t2/calibrated/2"}
    assert {r.point_id for r in rc.front_table_info(tables).rows} == GRAN.front  # the table still lists it (calibration only)
