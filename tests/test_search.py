"""The search: spaces as define-by-run functions, the trial loop, failures, results, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import optuna
import pyarrow.parquet as pq
import pytest
import torch

from search.collect import collect
from search.results import RESULT_SCHEMA, results_table, write_table
from search.spec import RunSpec
from spaces import get_space, list_spaces, register_space
from trainables.loop import DeviceLoader, LocalReporter, TrialContext, TrialDiverged, train

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

TINY_CFG = {
    "backbone": "resnet", "resnet.width": 4, "resnet.blocks": 1, "resnet.n_stages": 3, "exit_after": [0, 1, 2],
    "head": "linear", "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4, "lr_schedule": "cosine",
    "batch_size": 64, "epochs": 2, "lambda_fine": 1.0, "lambda_coarse": 1.0, "exit_weight_last": 0.6,
}
TINY_CAL = {"n_trials": 16, "neighbours": 4, "population": 8, "levels": 16, "max_points": 8}


def tiny_ctx(tmp_path, **kw):
    d = tmp_path / "trial"
    kw.setdefault("cpu_threads", 1)
    return TrialContext(trial_dir=str(d), reporter=LocalReporter(d), data="synthetic", data_size="tiny",
                        epochs=2, calibration=TINY_CAL, **kw)


# --- spaces -----------------------------------------------------------------------------------

def test_registry_lists_gran_hbn_and_rejects_duplicates():
    assert "gran_hbn" in list_spaces()
    def gran_hbn():
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="already registered"):
        register_space(gran_hbn)
    with pytest.raises(KeyError, match="known spaces"):
        get_space("no_such_space")


@pytest.mark.parametrize("budget", ["smoke", "full"])
def test_space_runs_in_a_plain_optuna_loop_and_builds(budget):
    """The define-by-run function, unchanged, in a plain Optuna loop: every config builds."""
    from trainables.models import build_early_exit_net

    space = get_space("gran_hbn")
    define = space.search_space(space.budget(budget))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        constants = define(trial)
        config = {**trial.params, **constants}
        net = build_early_exit_net(config, 3, 100, 20)
        assert net.n_exits == len(config["exit_after"]) >= 1
        assert config["exit_after"][-1] == net.exit_after[-1]
        assert 1 <= config["epochs"] <= space.budget(budget).epochs
        study.tell(trial, 0.0)


def test_space_with_fixed_trial():
    space = get_space("gran_hbn")
    params = {"backbone": "alexnet", "alexnet.width": 0.125, "exit_after_stage0": False, "exit_after_stage1": True,
              "head": "linear", "epochs": 2, "lambda_fine": 1.0, "lambda_coarse": 1.0, "fine_start_epoch": 0,
              "fine_ramp_epochs": 0, "coarse_start_epoch": 0, "coarse_ramp_epochs": 0, "exit_grad_scale": 1.0, "exit_weight_first": 1.0, "exit_weight_last": 0.5,
              "optimizer": "adam", "lr_adam": 1e-3, "weight_decay": 1e-4, "lr_schedule": "cosine",
              "label_smoothing": 0.0, "batch_size": 64}
    out = space.search_space(space.budget("smoke"))(optuna.trial.FixedTrial(params))
    assert out == {"exit_after": [1, 2], "lr": 1e-3}


def test_paper_config_builds_three_exits():
    from spaces.gran_hbn import paper_config
    from trainables.models import build_early_exit_net

    cfg = paper_config()
    assert cfg["lambda_fine"] == 1.5 and paper_config(ag_hbn=True)["lambda_fine"] == 1.02
    assert build_early_exit_net(cfg, 3, 100, 20).n_exits == 3


# --- the trial loop ---------------------------------------------------------------------------

def test_device_loader_augments_on_device_deterministically():
    from trainables.data import Split

    imgs = torch.arange(4 * 3 * 8 * 8, dtype=torch.int64).remainder(256).to(torch.uint8).view(4, 3, 8, 8)
    split = Split(imgs, torch.tensor([0, 1, 2, 3]))
    kw = dict(coarse_of=np.array([0, 0, 1, 1]), batch_size=2, device=torch.device("cpu"),
              mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))
    a = [b[0] for b in DeviceLoader(split, train=True, seed=1, **kw).epoch(0)]
    b = [b[0] for b in DeviceLoader(split, train=True, seed=1, **kw).epoch(0)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    ev = list(DeviceLoader(split, train=False, **kw).epoch())
    assert torch.equal(ev[0][0], imgs[:2].float()) and ev[1][2].tolist() == [1, 1]
    # a crop with padding keeps the shape; values come from the image or the zero padding
    assert a[0].shape == (2, 3, 8, 8) and set(a[0].unique().tolist()) <= set(range(256))


def test_train_writes_points_cache_and_checkpoint(tmp_path):
    ctx = tiny_ctx(tmp_path)
    m = train(dict(TINY_CFG), ctx)
    d = tmp_path / "trial"
    assert m["hv_kind"] == "calibrated" and 0 <= m["hypervolume"] <= 1
    assert len(ctx.reporter.history) == 2 and ctx.reporter.history[0]["hv_kind"] == "quick"
    status = json.loads((d / "status.json").read_text())
    assert status["status"] == "complete" and status["epochs_done"] == 2
    pts = json.loads((d / "points.json").read_text())["points"]
    assert {p["split"] for p in pts} == {"calibration", "test"}
    assert any(p["policy"].startswith("fixed:") for p in pts)
    for f in ("exit_cache_calibration.npz", "exit_cache_test.npz", "model.pt", "checkpoint/state.pt"):
        assert (d / f).exists(), f


def test_train_resumes_from_checkpoint(tmp_path):
    cfg = dict(TINY_CFG)
    ctx = tiny_ctx(tmp_path)
    train({**cfg, "epochs": 2}, ctx)
    # a retried trial: same directory, checkpoint after epoch 2 of 3 -> only epoch 3 runs
    cfg3 = {**cfg, "epochs": 3}
    state = torch.load(tmp_path / "trial" / "checkpoint" / "state.pt", weights_only=False)
    assert state["epoch"] == 1
    m = train(cfg3, ctx)
    status = json.loads((tmp_path / "trial" / "status.json").read_text())
    assert status["resumed_from_epoch"] == 2 and m["epoch"] == 3
    assert len(ctx.reporter.history) == 3  # 2 from the first run + 1 resumed epoch


def test_diverging_trial_raises_with_reason(tmp_path):
    with pytest.raises(TrialDiverged, match="loss became"):
        train({**TINY_CFG, "lr": 1e30, "lr_schedule": "multistep"}, tiny_ctx(tmp_path))


def test_accelerate_state_does_not_leak_between_trials(tmp_path):
    """Reused workers: a second trial in the same process starts from a clean state."""
    from accelerate.state import AcceleratorState

    train({**TINY_CFG, "epochs": 1}, tiny_ctx(tmp_path / "a"))
    assert AcceleratorState._shared_state != {}
    torch.set_num_threads(2)
    train({**TINY_CFG, "epochs": 1}, tiny_ctx(tmp_path / "b", cpu_threads=1))
    assert torch.get_num_threads() == 1


# --- results ----------------------------------------------------------------------------------

def test_results_schema_and_config_columns(tmp_path):
    rows = [
        {"trial_id": "t1", "status": "complete", "split": "test", "accuracy": 0.5, "thresholds_fine": [0.1, 0.2],
         "config": {"lr": 0.1, "backbone": "resnet", "epochs": 3, "exit_after": [0, 1]}},
        {"trial_id": "t2", "status": "failed", "error": "RuntimeError: x", "config": {"lr": 1, "backbone": "alexnet"}},
    ]
    t = results_table(rows)
    for f in RESULT_SCHEMA:
        assert t.schema.field(f.name).type == f.type
    assert t.schema.field("config.lr").type.id == __import__("pyarrow").float64().id
    assert t.column("config.exit_after").to_pylist() == ["[0, 1]", None]
    write_table(t, tmp_path / "r.parquet")
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 2


def test_collect_marks_front_only_among_complete_calibration_points(tmp_path):
    def point(pid, split, acc, spec, flops):
        return {"point_id": pid, "policy": "calibrated", "split": split, "accuracy": acc, "specificity": spec,
                "expected_flops": flops, "expected_flops_norm": flops, "thresholds_fine": [0.1], "thresholds_coarse": [2.0],
                "exit_fraction": [1.0], "trial_front": True}

    def write_trial(tid, status, pts):
        d = tmp_path / "trials" / tid
        d.mkdir(parents=True)
        (d / "status.json").write_text(json.dumps({"status": status, "epochs_done": 1, "epochs_planned": 2 if status == "running" else 1,
                                                   "config": {"lr": 0.1}, "seed": 1}))
        if pts is not None:
            (d / "points.json").write_text(json.dumps({"points": pts, "per_exit_accuracy": {}, "hypervolume": 0.1}))

    write_trial("a", "complete", [point("calibrated/0", "calibration", 0.8, 0.5, 0.5), point("calibrated/0", "test", 0.7, 0.5, 0.5),
                                  point("calibrated/1", "calibration", 0.6, 0.4, 0.6), point("calibrated/1", "test", 0.9, 0.9, 0.1)])
    write_trial("b", "running", None)  # stopped by a scheduler
    write_trial("c", "failed", None)
    results, _ = collect(tmp_path, {"name": "r"}, {}, {"accuracy": "max", "specificity": "max", "expected_flops_norm": "min"})
    rows = results.to_pylist()
    on = {(r["point_id"], r["split"]) for r in rows if r["on_front"]}
    # a/1 is dominated on calibration, whatever its test score: it stays off the front
    assert on == {("a/calibrated/0", "calibration"), ("a/calibrated/0", "test")}
    status = {r["trial_id"]: r["status"] for r in rows}
    assert status == {"a": "complete", "b": "partial", "c": "failed"}
    assert [r["fidelity"] for r in rows if r["trial_id"] == "b"] == [0.5]
    failed = [r for r in rows if r["trial_id"] == "c"][0]
    assert failed["error"] and failed["point_id"] is None


def test_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="trials"):
        RunSpec(space="gran_hbn", data="synthetic", name="x", storage="/tmp", trials=0)
    with pytest.raises(ValueError, match="run name"):
        RunSpec(space="gran_hbn", data="synthetic", name="../evil", storage="/tmp")


def test_atomic_write_keeps_previous_file_on_crash(tmp_path):
    from search.atomic import atomic_write, write_text

    p = tmp_path / "f.txt"
    write_text(p, "complete")

    def broken(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(p, broken)
    assert p.read_text() == "complete"
    assert [q.name for q in tmp_path.iterdir()] == ["f.txt"]


# --- local loop and CLI -----------------------------------------------------------------------

def test_local_loop_records_failures_and_goes_on(tmp_path):
    from search.local import run_local

    spec = RunSpec(space="faulty", data="synthetic", name="loc", storage=str(tmp_path), trials=6, seed=3)
    run_dir = run_local(spec)
    t = pq.read_table(run_dir / "results.parquet").to_pylist()
    by_trial = {}
    for r in t:
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
    from search.local import run_local

    spec = RunSpec(space="tiny_gran", data="synthetic", name="tiny", storage=str(tmp_path_factory.mktemp("runs")), trials=2)
    return run_local(spec)


def test_recalibrate_a_finished_run_without_retraining(local_run):
    from search.recalibrate import main as recalibrate_main

    before = pq.read_table(local_run / "results.parquet")
    mtimes = {p: p.stat().st_mtime_ns for p in local_run.glob("trials/*/model.pt")}
    assert recalibrate_main([str(local_run), "--n-trials", "16", "--max-points", "3", "--levels", "8", "--no-report"]) == 0
    after = pq.read_table(local_run / "results.parquet")
    calibrated = [r for r in after.to_pylist() if r["policy"] == "calibrated" and r["split"] == "test"]
    assert 1 <= len(calibrated) <= 3 * 2  # at most 3 points kept per trial now
    assert not before.equals(after)
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # networks untouched
    pts = json.loads(next(local_run.glob("trials/*/points.json")).read_text())
    assert pts["recalibrated_with"]["max_points"] == 3


def test_single_point_space_is_multi_objective_outside(tmp_path):
    from search.local import run_local

    spec = RunSpec(space="single_point", data="synthetic", name="sp", storage=str(tmp_path), trials=2)
    run_dir = run_local(spec)
    study = json.loads((run_dir / "study.json").read_text())
    assert all(len(t["values"]) == 2 for t in study if t["state"] == "COMPLETE")


def test_cli_rejects_unknown_space_and_data():
    for args, msg in ((["--space", "nope"], "unknown space"), (["--space", "gran_hbn", "--data", "nope"], "unknown dataset")):
        p = subprocess.run([sys.executable, "-m", "search.run", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and msg in p.stderr, p.stderr


def test_cli_missing_dataset_is_a_clear_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "search.run", "--space", "gran_hbn", "--data", "cifar100",
                        "--data-root", str(tmp_path), "--storage", str(tmp_path / "runs")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "--download" in p.stderr and "synthetic" in p.stderr


def test_help_lists_spaces_and_datasets():
    p = subprocess.run([sys.executable, "-m", "search.run", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "gran_hbn" in p.stdout and "cifar100" in p.stdout and "synthetic" in p.stdout


@pytest.mark.slow
def test_ray_search_survives_failed_trials_and_resumes(tmp_path):
    """Ray Tune + OptunaSearch end to end with injected failures, then --resume adds nothing."""
    cmd = [sys.executable, "-m", "search.run", "--space", "faulty", "--data", "synthetic", "--trials", "6",
           "--storage", str(tmp_path), "--name", "ft", "--seed", "0", "--retries", "0"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "ft"
    rows = pq.read_table(run / "results.parquet").to_pylist()
    trials = {r["trial_id"]: r for r in rows}
    assert len(trials) == 6
    faults = set()
    for r in trials.values():
        fault = json.loads(r["config_json"]).get("fault")
        faults.add(fault)
        assert r["status"] == ("complete" if fault == "none" else "failed"), r
        if fault != "none":
            assert ("injected failure" in r["error"]) or ("TrialDiverged" in r["error"]), r["error"]
    assert faults == {"none", "raise", "nan"}
    assert (run / "report.html").exists() and (run / "study.journal").exists()
    # the Optuna study in the journal: failed trials are FAIL, fidelity recorded on complete ones
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="ft", storage=JournalStorage(JournalFileBackend(str(run / "study.journal"))))
    states = sorted(t.state.name for t in study.trials)
    n_ok = sum(1 for r in trials.values() if r["status"] == "complete")
    assert states.count("COMPLETE") == n_ok and states.count("FAIL") == 6 - n_ok
    assert all(t.user_attrs.get("fidelity") == 1.0 for t in study.trials if t.state.name == "COMPLETE")
    # --resume of a finished run: Tune restores it, nothing is retrained, results are kept
    p = subprocess.run(cmd + ["--resume", "--no-report"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    again = pq.read_table(run / "results.parquet").to_pylist()
    assert {r["trial_id"]: r["status"] for r in again} == {t: r["status"] for t, r in trials.items()}


@pytest.mark.slow
def test_asha_stopped_trials_are_partial_and_off_the_front(tmp_path):
    cmd = [sys.executable, "-m", "search.run", "--space", "tiny_asha", "--data", "synthetic", "--trials", "6",
           "--storage", str(tmp_path), "--name", "asha", "--scheduler", "asha", "--no-report"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = pq.read_table(tmp_path / "asha" / "results.parquet").to_pylist()
    status = {r["trial_id"]: (r["status"], r["fidelity"]) for r in rows}
    partial = [t for t, (s, f) in status.items() if s == "partial"]
    assert partial, f"ASHA stopped no trial: {status}"
    assert all(status[t][1] < 1 for t in partial)
    assert not any(r["on_front"] for r in rows if r["status"] != "complete")
    assert any(r["on_front"] for r in rows if r["status"] == "complete")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="asha", storage=JournalStorage(JournalFileBackend(str(tmp_path / "asha" / "study.journal"))))
    fid = {t.user_attrs.get("tune_trial_id"): t.user_attrs.get("fidelity") for t in study.trials}
    assert all(fid[t] is not None and fid[t] < 1 for t in partial)


@pytest.mark.slow
def test_ray_multi_objective_space(tmp_path):
    """A space judged on one point per trial: OptunaSearch gets a metric list and a mode list."""
    cmd = [sys.executable, "-m", "search.run", "--space", "single_point", "--data", "synthetic", "--trials", "2",
           "--storage", str(tmp_path), "--name", "mo", "--no-report"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="mo", storage=JournalStorage(JournalFileBackend(str(tmp_path / "mo" / "study.journal"))))
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2 and all(len(t.values) == 2 and 0 < t.values[1] <= 1 for t in done)


@pytest.mark.slow
def test_quick_start_end_to_end(tmp_path):
    """The README's quick-start command, as written, in a scratch storage directory."""
    cmd = [sys.executable, "-m", "search.run", "--space", "gran_hbn", "--data", "synthetic", "--budget", "smoke",
           "--name", "quickstart", "--storage", str(tmp_path)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "quickstart"
    t = pq.read_table(run / "results.parquet")
    rows = t.to_pylist()
    assert {r["status"] for r in rows} == {"complete"}
    assert len({r["trial_id"] for r in rows}) == 4
    front = [r for r in rows if r["on_front"] and r["split"] == "test"]
    assert front and all(r["policy"] == "calibrated" for r in front)
    assert all(r["git_rev"] and r["device"] and r["versions_json"] for r in rows)
    html = (run / "report.html").read_text()
    assert "data:image/png;base64" in html
    # every trial of a run sees the same data: same test labels in every exit cache
    from trainables.exits import ExitCache

    labels = [ExitCache.load(p).y_fine for p in sorted(run.glob("trials/*/exit_cache_test.npz"))]
    assert len(labels) == 4 and all(np.array_equal(labels[0], y) for y in labels)
    # the one-call loader: a front point's network with its thresholds, on new images
    from search.load import load_operating_point
    from trainables.data import get_dataset

    clf = load_operating_point(run)
    ds = get_dataset("synthetic", size="smoke")
    pred = clf.predict(ds.test.images[:200])
    assert len(pred.label) == 200 and set(pred.exit.tolist()) <= set(range(clf.model.n_exits))
    # dynamic inference takes the decisions the policy takes on the cached test outputs
    # (the cache holds fp16 logits, so a sample right at a threshold may fall the other way)
    from trainables.exits import ExitCache, apply_policy

    cache = ExitCache.load(run / "trials" / clf.point["trial_id"] / "exit_cache_test.npz")
    exit_at, fine, correct = apply_policy(cache.stats(), clf.point["thresholds_fine"], clf.point["thresholds_coarse"])
    same = (exit_at[:200] == pred.exit) & (fine[:200] == pred.fine)
    assert same.mean() >= 0.95
    coarse = ds.hierarchy.coarse_of[ds.test.fine[:200].numpy()]
    right = np.where(pred.fine, pred.label == ds.test.fine[:200].numpy(), pred.label == coarse)
    assert abs(right.mean() - correct[:200].mean()) <= 0.05
