"""The results tables: a schema that follows the declaration, undeclared keys refused, the global
front chosen on calibration among complete trials, and stable rows across rebuilds."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reports.schema import COMMON, result_schema, results_table, write_table
from search.collect import collect
from spaces.branchynet import declaration as branchy_declaration
from spaces.gran_hbn import DECLARATION as GRAN
from trainables.contract import Declaration


def test_schema_is_common_plus_declared_columns():
    s = result_schema(GRAN)
    assert s.names[: len(COMMON)] == COMMON.names
    assert s.field("thresholds_fine").type == pa.list_(pa.float64()) and s.field("front_size").type == pa.int64()
    b = result_schema(branchy_declaration("latency"))
    assert "latency_ms" in b.names and "specificity" not in b.names and b.field("certified").type == pa.bool_()


def test_results_table_types_config_and_refuses_undeclared_keys(tmp_path):
    rows = [
        {"trial_id": "t1", "status": "complete", "split": "test", "accuracy": 0.5, "thresholds_fine": [0.1, 0.2],
         "config": {"lr": 0.1, "backbone": "resnet", "epochs": 3, "exit_after": [0, 1]}},
        {"trial_id": "t2", "status": "failed", "error": "RuntimeError: x", "config": {"lr": 1, "backbone": "alexnet"}},
    ]
    t = results_table(rows, GRAN)
    for f in result_schema(GRAN):
        assert t.schema.field(f.name).type == f.type
    assert t.schema.field("config.lr").type == pa.float64()
    assert t.column("config.exit_after").to_pylist() == ["[0, 1]", None]
    write_table(t, tmp_path / "r.parquet")
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 2
    # a family value nobody declared is an error, never a silently dropped column
    with pytest.raises(ValueError, match="mistake_severity"):
        results_table([{**rows[0], "mistake_severity": 3.2}], GRAN)


def _point(pid, split, acc, spec, flops, reference=False):
    return {"point_id": pid, "policy": "fixed:fine@0" if reference else "calibrated", "reference": reference,
            "split": split, "accuracy": acc, "specificity": spec, "expected_flops": flops, "expected_flops_norm": flops,
            "thresholds_fine": [0.1], "thresholds_coarse": [2.0], "exit_fraction": [1.0], "trial_front": not reference}


def _write_trial(root, tid, status, pts, updated="2026-01-02T03:04:05+00:00"):
    d = root / "trials" / tid
    d.mkdir(parents=True)
    (d / "status.json").write_text(json.dumps({
        "status": status, "epochs_done": 1, "epochs_planned": 1 if status in ("complete", "failed") else 2,
        "config": {"lr": 0.1}, "seed": 1, "updated_at": updated}))
    if pts is not None:
        (d / "points.json").write_text(json.dumps({"points": pts, "trial": {"hypervolume": 0.1, "exit_flops": [1.0]}}))


def test_collect_marks_front_only_among_complete_calibration_points(tmp_path):
    _write_trial(tmp_path, "a", "complete", [
        _point("calibrated/0", "calibration", 0.8, 0.5, 0.5), _point("calibrated/0", "test", 0.7, 0.5, 0.5),
        _point("calibrated/1", "calibration", 0.6, 0.4, 0.6), _point("calibrated/1", "test", 0.9, 0.9, 0.1),
        # a reference policy that dominates everything on calibration: still never on the front
        _point("fixed:fine@0/0", "calibration", 0.99, 0.99, 0.01, True), _point("fixed:fine@0/0", "test", 0.99, 0.99, 0.01, True)])
    _write_trial(tmp_path, "b", "stopped", None)  # stopped by a scheduler
    _write_trial(tmp_path, "c", "failed", None)
    _write_trial(tmp_path, "d", "running", None)
    _write_trial(tmp_path, "e", "interrupted", None)  # the run stopped while it ran
    # "f" was suggested (it has a study number) but never wrote anything: no row yet
    results, _ = collect(tmp_path, {"name": "r"}, GRAN, {"f": {"number": 5}, "a": {"number": 0}})
    rows = results.to_pylist()
    on = {(r["point_id"], r["split"]) for r in rows if r["on_front"]}
    # a/1 is dominated on calibration, whatever its test score: it stays off the front
    assert on == {("a/calibrated/0", "calibration"), ("a/calibrated/0", "test")}
    status = {r["trial_id"]: r["status"] for r in rows}
    assert status == {"a": "complete", "b": "partial", "c": "failed", "d": "running", "e": "interrupted"}
    assert {r["trial_number"] for r in rows if r["trial_id"] == "a"} == {0}
    assert [r["fidelity"] for r in rows if r["trial_id"] == "b"] == [0.5]
    failed = [r for r in rows if r["trial_id"] == "c"][0]
    assert failed["error"] and failed["point_id"] is None
    assert all(r["hypervolume"] == 0.1 for r in rows if r["trial_id"] == "a")


def test_rebuilding_the_tables_gives_the_same_rows(tmp_path):
    """created_at is when the trial wrote its result, not when the table was rebuilt."""
    _write_trial(tmp_path, "a", "complete", [_point("calibrated/0", "calibration", 0.8, 0.5, 0.5),
                                             _point("calibrated/0", "test", 0.7, 0.5, 0.5)])
    first, _ = collect(tmp_path, {"name": "r"}, GRAN, {})
    again, _ = collect(tmp_path, {"name": "r"}, GRAN, {})
    assert first.equals(again)
    assert str(first.column("created_at")[0].as_py()) == "2026-01-02 03:04:05+00:00"


def test_undeclared_point_value_from_a_trial_raises(tmp_path):
    p = _point("calibrated/0", "calibration", 0.8, 0.5, 0.5)
    _write_trial(tmp_path, "a", "complete", [{**p, "mistake_severity": 2.0}])
    with pytest.raises(ValueError, match="mistake_severity"):
        collect(tmp_path, {"name": "r"}, GRAN, {})


def test_declaration_rejects_inconsistent_declarations():
    d = GRAN.to_dict()
    d["point_objectives"] = ["accuracy", "no_such_metric"]
    with pytest.raises(ValueError, match="no_such_metric"):
        Declaration.from_dict(d)
    d = GRAN.to_dict()
    d["report"]["fronts"] = [["expected_flops", "nope"]]
    with pytest.raises(ValueError, match="nope"):
        Declaration.from_dict(d)
