"""The plain Optuna loop (no Ray) over a space: failures recorded and the search goes on; a
single-point space is multi-objective outside; recalibration from the cached outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from search.local import run_local
from search.spec import RunSpec
from trainables.pareto import hypervolume

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_local_loop_records_failures_and_goes_on(tmp_path):
    spec = RunSpec(space="faulty", data="synthetic", name="loc", storage=str(tmp_path), trials=6, seed=3)
    run_dir = run_local(spec)
    by_trial = {}
    for r in pq.read_table(run_dir / "results.parquet").to_pylist():
        by_trial.setdefault(r["trial_id"], r)
    faults = {tid: json.loads(r["config_json"]).get("fault") for tid, r in by_trial.items()}
    assert len(by_trial) == 6
    for tid, r in by_trial.items():
        if faults[tid] == "none":
            assert r["status"] == "complete"
        else:
            assert r["status"] == "failed"
            assert ("injected failure" in r["error"]) == (faults[tid] == "raise")
            assert ("TrialDiverged" in r["error"]) == (faults[tid] == "nan")
    assert sorted(faults.values()) == ["nan", "nan", "none", "none", "raise", "raise"]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    spec = RunSpec(space="tiny_gran", data="synthetic", name="tiny", storage=str(tmp_path_factory.mktemp("runs")), trials=2)
    return run_local(spec)


def test_recalibrate_a_finished_run_without_retraining(local_run):
    """`python -m search.recalibrate` as a user runs it: fewer points kept, networks untouched,
    the stored hypervolume still recomputable from the stored front."""
    before = {r["trial_id"]: r for r in pq.read_table(local_run / "results.parquet").to_pylist()}
    mtimes = {p: p.stat().st_mtime_ns for p in local_run.glob("trials/*/model.pt")}
    p = subprocess.run([sys.executable, "-m", "search.recalibrate", str(local_run), "--n-trials", "16", "--max-points", "3",
                        "--levels", "8", "--no-report"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "recalibrated 2 trials" in p.stdout
    after = pq.read_table(local_run / "results.parquet").to_pylist()
    per_trial = {}
    for r in after:
        if r["policy"] == "calibrated" and r["split"] == "test":
            per_trial[r["trial_id"]] = per_trial.get(r["trial_id"], 0) + 1
    assert set(per_trial) == set(before) and all(1 <= n <= 3 for n in per_trial.values())
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # networks untouched
    for tdir in local_run.glob("trials/*"):
        pts = json.loads((tdir / "points.json").read_text())
        assert pts["recalibrated_with"]["max_points"] == 3 and pts["recalibrated_with"]["levels"] == 8
        with np.load(tdir / "calibration_front.npz") as z:
            assert hypervolume(z["front"], z["reference"], z["maximize"].tolist()) == pytest.approx(pts["trial"]["hypervolume"])
        row = next(r for r in after if r["trial_id"] == tdir.name)
        assert row["hypervolume"] == pytest.approx(pts["trial"]["hypervolume"])


def test_recalibrate_refuses_bad_input_clearly(local_run, tmp_path):
    p = subprocess.run([sys.executable, "-m", "search.recalibrate", str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "not a run directory" in p.stderr
    cache = next(local_run.glob("trials/*/exit_cache_test.npz"))
    saved = cache.read_bytes()
    try:
        cache.write_bytes(saved[: len(saved) // 2])  # truncated
        before = (local_run / "results.parquet").read_bytes()
        p = subprocess.run([sys.executable, "-m", "search.recalibrate", str(local_run), "--no-report"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and cache.parent.name in p.stderr and "cannot be read" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr
        assert (local_run / "results.parquet").read_bytes() == before  # nothing rewritten
    finally:
        cache.write_bytes(saved)


def test_single_point_space_is_multi_objective_outside(tmp_path):
    spec = RunSpec(space="single_point", data="synthetic", name="sp", storage=str(tmp_path), trials=2)
    run_dir = run_local(spec)
    study = json.loads((run_dir / "study.json").read_text())
    assert all(len(t["values"]) == 2 for t in study if t["state"] == "COMPLETE")
    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    assert {r["policy"] for r in rows} == {"final"} and len(rows) == 4
