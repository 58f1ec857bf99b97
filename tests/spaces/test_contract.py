"""The family contract, checked on every registered space (the built-in families and the test spaces):

its define-by-run function replays under FixedTrial; one tiny trial trains through the shared
loop; every row it yields matches the schema its declaration implies; its report builds; and
its loader returns a network whose dynamic decisions are the ones calibration scored.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import optuna
import pyarrow.parquet as pq
import pytest

from reports.schema import CONFIG_PREFIX, result_schema
from search.collect import collect, write_tables
from search.prepare import reference_costs, run_document, trial_context
from search.spec import RunSpec
from spaces import Budget, get_space, list_spaces
from trainables.atomic import write_json
from trainables.contract import Declaration
from trainables.engine.loop import LocalReporter

SPACES = [s for s in list_spaces() if s != "faulty"]  # faulty raises on purpose (tests/search)
SEARCH_KEYS = {"n_trials": 16, "neighbours": 4, "population": 8, "levels": 16, "max_points": 8}


def tiny(space):
    """The space on a budget of seconds: 1 epoch on the tiny synthetic set, a small calibration."""
    budget = space.budget("smoke")
    cal = {**budget.calibration, **{k: v for k, v in SEARCH_KEYS.items() if k in budget.calibration}}
    if "latency" in cal:
        cal["latency"] = {"batch_size": 32, "warmup": 1, "repeats": 2}
    b = Budget("smoke", epochs=1, data_size="tiny", trials=1, calibration=cal)
    return dataclasses.replace(space, budgets={"smoke": b}), b


def sampled_params(space, budget, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    constants = space.search_space(budget)(trial) or {}
    return dict(trial.params), constants


@pytest.mark.parametrize("name", SPACES)
def test_define_replays_under_fixed_trial(name):
    space = get_space(name)
    for budget_name in space.budgets:
        budget = space.budget(budget_name)
        for seed in range(4):
            params, constants = sampled_params(space, budget, seed)
            again = space.search_space(budget)(optuna.trial.FixedTrial(params, number=0)) or {}
            assert again == constants
            # constants never shadow a searched value with another meaning
            assert not (set(constants) & set(params)) or all(constants[k] == params[k] for k in set(constants) & set(params))


@pytest.mark.parametrize("name", SPACES)
def test_declaration_round_trips_and_is_consistent(name):
    space = get_space(name)
    for options in [{}, *({key: choice} for key, opt in space.options.items() for choice in opt.choices)]:
        decl = space.declaration(space.budget("smoke"), options)
        assert Declaration.from_dict(json.loads(json.dumps(decl.to_dict()))) == decl
        schema = result_schema(decl)
        assert len(set(schema.names)) == len(schema.names)
        assert decl.objectives and set(decl.point_objectives) <= {c.name for c in decl.point}


@pytest.fixture(scope="module", params=SPACES)
def one_trial_run(request, tmp_path_factory):
    """A run directory holding one tiny trial of the space, collected as the runners do."""
    registered = get_space(request.param)
    space, budget = tiny(registered)
    storage = tmp_path_factory.mktemp(request.param)
    spec = RunSpec(space=request.param, data="synthetic", name="c", storage=str(storage), trials=1, data_size="tiny")
    refs = reference_costs(space, spec)
    doc = run_document(space, spec, refs, runner="contract test")
    spec.run_dir.mkdir(parents=True)
    write_json(spec.run_dir / "spec.json", doc)
    params, constants = sampled_params(space, budget, seed=1)
    config = {**params, **constants}
    tid = "t0"
    ctx = trial_context(space, spec, tid, LocalReporter(spec.run_dir / "trials" / tid), refs)
    metrics = space.train(config, ctx, budget, space.resolve_options({}))
    decl = Declaration.from_dict(doc["declaration"])
    write_tables(spec.run_dir, *collect(spec.run_dir, doc, decl, {tid: {"number": 0}}))
    return request.param, spec.run_dir, decl, metrics


def test_trial_reports_its_declared_objectives(one_trial_run):
    _, run_dir, decl, metrics = one_trial_run
    for name in decl.objectives:
        assert np.isfinite(metrics[name]), name


def test_rows_match_the_declared_schema(one_trial_run):
    _, run_dir, decl, _ = one_trial_run
    table = pq.read_table(run_dir / "results.parquet")
    declared = result_schema(decl)
    assert [f for f in table.schema if not f.name.startswith(CONFIG_PREFIX)] == list(declared)
    rows = table.to_pylist()
    assert {r["status"] for r in rows} == {"complete"}
    assert {r["split"] for r in rows} == {"calibration", "test"}
    for r in rows:
        for c in decl.point:
            if c.direction is not None:
                assert r[c.name] is not None, (c.name, r["point_id"])
        for c in decl.trial:
            if c.direction is not None:
                assert r[c.name] is not None, c.name
    ids = {(r["point_id"], r["split"]) for r in rows}
    assert len(ids) == len(rows)  # one row per (point, split)
    assert {p for p, s in ids if s == "calibration"} == {p for p, s in ids if s == "test"}
    front = [r for r in rows if r["on_front"]]
    assert front and not any(r["reference"] for r in front)
    curves = pq.read_table(run_dir / "curves.parquet").to_pylist()
    assert len(curves) == 1 and all(curves[0][c.name] is not None for c in decl.curves)


def test_report_builds_from_the_declaration(one_trial_run):
    from reports.build import build_report

    _, run_dir, decl, _ = one_trial_run
    html = Path(build_report(run_dir)).read_text()
    assert "<svg" in html and html.count("<svg") >= len(decl.report.fronts)


def test_loader_predicts_as_calibration_scored(one_trial_run):
    from search.load import load_operating_point
    from trainables.data import get_dataset
    from trainables.exits import ExitCache, apply_policy

    name, run_dir, decl, _ = one_trial_run
    clf = load_operating_point(run_dir)
    calib = clf.point["calibration"]
    assert calib["on_front"] and not calib["reference"]
    ds = get_dataset("synthetic", size="tiny")
    images = ds.test.images[:200]
    pred = clf.predict(images)
    assert len(pred.label) == 200 and set(pred.exit.tolist()) <= set(range(clf.model.n_exits))
    cache = ExitCache.load(run_dir / "trials" / calib["trial_id"] / "exit_cache_test.npz")
    exit_at, level, _ = apply_policy(cache.stats(), clf.thresholds[: len(cache.levels)])  # the levels calibrated on
    # the cache holds fp16 logits, so a sample right at a threshold may fall the other way
    assert ((exit_at[:200] == pred.exit) & (level[:200] == pred.level)).mean() >= 0.95


def test_default_points_predictor_reproduces_its_calibration_accuracy(one_trial_run):
    """The loaded predictor of the space's default point, run on the calibration split's images,
    answers as well as the point's stored calibration score says (the metric the declaration names)."""
    from search.load import load_operating_point
    from trainables.engine.device_data import load_data
    from trainables.predictor import answer_accuracy

    name, run_dir, decl, _ = one_trial_run
    assert decl.answer_metric, f"{name}: its Declaration names no answer_metric"
    clf = load_operating_point(run_dir)
    ds = load_data("synthetic", None, size="tiny", download=False, seed=0)  # the run's data and split (seed 0)
    images, fine = ds.calib.images.numpy(), ds.calib.fine.numpy()
    measured = answer_accuracy(clf.predict(images), clf.levels, fine, ds.hierarchy.coarse_of)
    stored = clf.point["calibration"][decl.answer_metric]
    expected = 1.0 - stored if decl.answer_metric_is_error else stored
    # the stored score comes from fp16-cached logits: a sample right at a threshold may fall the other way
    assert abs(measured - expected) <= 2 / len(fine) + 1e-9, (name, measured, expected)


def test_an_early_exit_trial_offers_its_network_without_exits(one_trial_run):
    """Where a family declares the `plain` column (the early-exit families): one plain point per
    trial, not a reference (so eligible for the fronts), answering at the last exit with that exit's
    accuracy at the plain network's cost; its predictor runs no early head, answers as calibration
    scored and costs the plain network per image; the report draws it as a marked point."""
    from reports.compute import front_plot_info
    from reports.tables import load_run
    from search.load import load_operating_point
    from trainables.engine.device_data import load_data
    from trainables.exits import PLAIN, ExitCache
    from trainables.predictor import answer_accuracy

    name, run_dir, decl, _ = one_trial_run
    if PLAIN not in {c.name for c in decl.policy}:
        pytest.skip(f"{name} declares no network without exits (not an early-exit family)")
    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    plain = {r["split"]: r for r in rows if r[PLAIN]}
    assert set(plain) == {"calibration", "test"} and sum(bool(r[PLAIN]) for r in rows) == 2
    status = json.loads((run_dir / "trials" / "t0" / "status.json").read_text())
    for split, r in plain.items():
        assert r["policy"] == PLAIN and not r["reference"] and r["exit_fraction"][-1] == 1.0
        stats = ExitCache.load(run_dir / "trials" / "t0" / f"exit_cache_{split}.npz").stats()
        assert r[decl.answer_metric] == pytest.approx(stats.acc_per_exit(0)[-1])
        assert r["expected_flops"] == pytest.approx(status["plain"]["flops"])
        assert status["plain"]["flops"] < status["costs"]["flops"][-1]  # no early head runs
    clf = load_operating_point(run_dir, plain["calibration"]["point_id"])
    assert clf.without_exits
    ds = load_data("synthetic", None, size="tiny", download=False, seed=0)
    pred = clf.predict(ds.calib.images.numpy())
    assert set(pred.exit.tolist()) == {clf.model.n_exits - 1} and set(pred.cost["flops"].tolist()) == {status["plain"]["flops"]}
    measured = answer_accuracy(pred, clf.levels, ds.calib.fine.numpy(), ds.hierarchy.coarse_of)
    assert abs(measured - plain["calibration"][decl.answer_metric]) <= 2 / len(pred.label) + 1e-9
    x, y = decl.report.fronts[0]
    marked = {g.name: g.points.point_id for g in front_plot_info(load_run(run_dir), x, y).marks}
    assert plain["test"]["point_id"] in marked.get(PLAIN, ())
