"""Ray Tune + OptunaSearch end to end, as a user runs it (`python -m search.run`): injected
failures and resume, ASHA's partial trials, a multi-objective space, and the README's quick
starts for gran_hbn and branchynet."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import optuna
import pyarrow.parquet as pq
import pytest

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def search(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "search.run", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def study(run):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=run.name, storage=JournalStorage(JournalFileBackend(str(run / "study.journal"))))


def test_ray_search_survives_failed_trials_and_resumes(tmp_path):
    args = ["--space", "faulty", "--data", "synthetic", "--trials", "6", "--storage", str(tmp_path), "--name", "ft",
            "--seed", "0", "--retries", "0"]
    p = search(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "ft"
    trials = {r["trial_id"]: r for r in pq.read_table(run / "results.parquet").to_pylist()}
    assert len(trials) == 6
    faults = set()
    for r in trials.values():
        fault = json.loads(r["config_json"]).get("fault")
        faults.add(fault)
        assert r["status"] == ("complete" if fault == "none" else "failed"), r
        if fault != "none":
            assert ("injected failure" in r["error"]) or ("TrialDiverged" in r["error"]), r["error"]
    assert faults == {"none", "raise", "nan"}
    assert "Traceback" not in p.stdout + p.stderr  # expected trial failures are one line each, not a traceback
    assert "Trial task failed" in p.stdout + p.stderr
    assert (run / "report.html").exists()
    # where Tune staged its state is noted in the run (a resume after a kill -9 mid-copy puts it back from there)
    staging = pathlib.Path(json.loads((run / ".tune_staging.json").read_text())["path"])
    assert any(f.name.startswith("experiment_state-") for f in staging.iterdir())
    # the Optuna study in the journal: failed trials are FAIL, fidelity recorded on complete ones
    st = study(run)
    states = sorted(t.state.name for t in st.trials)
    n_ok = sum(1 for r in trials.values() if r["status"] == "complete")
    assert states.count("COMPLETE") == n_ok and states.count("FAIL") == 6 - n_ok
    assert all(t.user_attrs.get("fidelity") == 1.0 for t in st.trials if t.state.name == "COMPLETE")
    assert {t.user_attrs["tune_trial_id"]: t.number for t in st.trials} == {t: r["trial_number"] for t, r in trials.items()}
    # --resume of a finished run: Tune restores it, nothing is retrained, results are kept; its Tune state, cut
    # off here as a kill -9 while Tune copied it into the run would, is put back whole from the staging copy
    state = next(f for f in run.iterdir() if f.name.startswith("experiment_state-"))
    state.write_bytes(state.read_bytes()[:100])
    p = search(*args, "--resume", "--no-report")
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"put back whole from Tune's staging copy ({state.name}" in " ".join((p.stdout + p.stderr).split())
    again = pq.read_table(run / "results.parquet").to_pylist()
    assert {r["trial_id"]: r["status"] for r in again} == {t: r["status"] for t, r in trials.items()}


@pytest.mark.parametrize("scheduler", ["asha", "moasha"])
def test_stopped_trials_are_partial_off_the_front_and_not_final_to_optuna(tmp_path, scheduler):
    p = search("--space", "tiny_asha", "--data", "synthetic", "--trials", "6", "--storage", str(tmp_path), "--name", "asha",
               "--scheduler", scheduler, "--no-report")
    assert p.returncode == 0, p.stderr[-3000:]
    rows = pq.read_table(tmp_path / "asha" / "results.parquet").to_pylist()
    status = {r["trial_id"]: (r["status"], r["fidelity"]) for r in rows}
    partial = [t for t, (s, f) in status.items() if s == "partial"]
    assert partial, f"{scheduler} stopped no trial: {status}"
    assert all(status[t][1] < 1 for t in partial)
    assert not any(r["on_front"] for r in rows if r["status"] != "complete")
    assert any(r["on_front"] for r in rows if r["status"] == "complete")
    trials = {t.user_attrs.get("tune_trial_id"): t for t in study(tmp_path / "asha").trials}
    assert all(trials[t].user_attrs.get("fidelity") is not None and trials[t].user_attrs["fidelity"] < 1 for t in partial)
    assert all(trials[t].state.name == "PRUNED" for t in partial)  # a partial value is not told as final
    if scheduler == "moasha":  # its rungs kept in the run directory, every stop among them
        kept = json.loads((tmp_path / "asha" / "scheduler" / "rungs.json").read_text())
        assert set(kept["stopped"]) == set(partial) and kept["rungs"]


def test_ray_multi_objective_space(tmp_path):
    """A space judged on one point per trial: OptunaSearch gets a metric list and a mode list."""
    p = search("--space", "single_point", "--data", "synthetic", "--trials", "2", "--storage", str(tmp_path), "--name", "mo",
               "--no-report")
    assert p.returncode == 0, p.stderr[-3000:]
    st = study(tmp_path / "mo")
    assert [d.name for d in st.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = [t for t in st.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2 and all(len(t.values) == 2 and 0 < t.values[1] <= 1 for t in done)


def _check_loader(run, n_images=200):
    """The one-call loader: the default point (chosen on calibration), on new images, takes the
    decisions the policy takes on the cached test outputs."""
    from search.load import load_operating_point
    from trainables.data import get_dataset
    from trainables.exits import ExitCache, apply_policy

    clf = load_operating_point(run)
    assert clf.point["calibration"]["on_front"]
    ds = get_dataset("synthetic", size="smoke")
    pred = clf.predict(ds.test.images[:n_images])
    assert len(pred.label) == n_images and set(pred.exit.tolist()) <= set(range(clf.model.n_exits))
    cache = ExitCache.load(run / "trials" / clf.point["calibration"]["trial_id"] / "exit_cache_test.npz")
    exit_at, level, _ = apply_policy(cache.stats(), clf.thresholds[: len(cache.levels)])  # the levels calibrated on
    assert ((exit_at[:n_images] == pred.exit) & (level[:n_images] == pred.level)).mean() >= 0.95
    return clf


def test_quick_start_end_to_end(tmp_path):
    """The README's quick-start command, as written, in a scratch storage directory."""
    p = search("--space", "gran_hbn", "--data", "synthetic", "--budget", "smoke", "--name", "quickstart",
               "--storage", str(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "quickstart"
    rows = pq.read_table(run / "results.parquet").to_pylist()
    assert {r["status"] for r in rows} == {"complete"} and len({r["trial_id"] for r in rows}) == 4
    front = [r for r in rows if r["on_front"] and r["split"] == "test"]
    # calibrated points, and (issue 16) the network without early exits where nothing cheaper is as good
    assert front and not any(r["reference"] for r in front) and {r["policy"] for r in front} <= {"calibrated", "plain"}
    assert "calibrated" in {r["policy"] for r in front}
    assert all(r["git_rev"] and r["device"] and r["versions_json"] for r in rows)
    html = (run / "report.html").read_text()
    assert "data:image/png;base64" in html and html.count("<svg") >= 2
    # every trial of a run sees the same data: same test labels in every exit cache
    from trainables.exits import ExitCache

    labels = [ExitCache.load(q).labels["fine"] for q in sorted(run.glob("trials/*/exit_cache_test.npz"))]
    assert len(labels) == 4 and all(np.array_equal(labels[0], y) for y in labels)
    clf = _check_loader(run)
    assert clf.point["calibration"]["specificity"] >= 0.9  # the default rule, not the all-superclass corner


def test_branchynet_smoke_end_to_end(tmp_path):
    """The issue's own command: branchynet on synthetic data at the smoke budget, results and report."""
    p = search("--space", "branchynet", "--data", "synthetic", "--budget", "smoke", "--name", "bn",
               "--storage", str(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "bn"
    rows = pq.read_table(run / "results.parquet").to_pylist()
    assert {r["status"] for r in rows} == {"complete"} and len({r["trial_id"] for r in rows}) == 4
    assert {"target", "budget", "search", "risk"} <= {r["policy"] for r in rows}
    assert all(r["latency_ms"] > 0 and len(r["exit_latency_ms"]) == len(r["exit_fraction"]) for r in rows)
    marked = [r for r in rows if r["best_ratio"] and r["split"] == "calibration"]
    assert len(marked) == 4  # one best accuracy-to-latency target point per trial
    assert json.loads((run / "spec.json").read_text())["options"] == {"objective": "latency"}
    html = (run / "report.html").read_text()
    assert html.count("<svg") >= 3 and "best_ratio" in html
    clf = _check_loader(run)
    best = max(r["accuracy"] for r in rows if r["on_front"] and r["split"] == "calibration")
    assert clf.point["calibration"]["accuracy"] >= best - 0.01 - 1e-12  # the default rule, on calibration


def test_better_mistakes_smoke_end_to_end(tmp_path):
    """The issue's command: better_mistakes on synthetic data at the smoke budget: a multi-objective
    outer search, one point per trial, results and report."""
    p = search("--space", "better_mistakes", "--data", "synthetic", "--budget", "smoke", "--name", "bm",
               "--storage", str(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "bm"
    rows = pq.read_table(run / "results.parquet").to_pylist()
    assert {r["status"] for r in rows} == {"complete"} and len({r["trial_id"] for r in rows}) == 5
    assert len(rows) == 10 and all(r["top1_error"] is not None and r["hdist_5"] is not None for r in rows)
    st = study(run)
    assert [d.name for d in st.directions] == ["MINIMIZE"] * 3
    html = (run / "report.html").read_text()
    assert html.count("<svg") >= 2 and "mistake_severity" in html
    _check_loader(run)


def test_hierarchy_heads_smoke_end_to_end(tmp_path):
    """The README's hierarchy_heads quick start: heads searched, routing calibrated per trial, results
    and report; the default point's predictor runs only its routed heads and says what each image cost."""
    p = search("--space", "hierarchy_heads", "--data", "synthetic", "--budget", "smoke", "--name", "hh",
               "--storage", str(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "hh"
    rows = pq.read_table(run / "results.parquet").to_pylist()
    assert {r["status"] for r in rows} == {"complete"} and len({r["trial_id"] for r in rows}) == 4
    assert all(r["head_macs"] > 0 and r["expected_flops"] > r["head_macs"] for r in rows)
    assert all(r["flat_head"] == (r["head_type"] in ("flat", "lowrank")) for r in rows)
    html = (run / "report.html").read_text()
    assert html.count("<svg") >= 2 and "head_macs" in html
    from search.load import load_operating_point
    from trainables.data import get_dataset

    clf = load_operating_point(run)
    assert clf.point["calibration"]["on_front"]
    pred = clf.predict(get_dataset("synthetic", size="smoke").test.images[:64])
    assert pred.cost["head_macs"].shape == (64,) and (pred.cost["flops"] > pred.cost["head_macs"]).all()
