"""Every benchmark the README lists runs as a user runs it (`python -m benchmarks.X`), at a tiny
size, and prints its JSON lines with the ratio it exists to measure. The figures themselves are
not asserted: speed is measured by running the benchmarks, not by timed tests."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def bench(cmd, timeout=600):
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def test_calibration_benchmark():
    lines = bench([sys.executable, "-m", "benchmarks.calibration", "--samples", "2000", "--settings", "2000",
                   "--dense-settings", "200"])
    first = lines[0]
    assert first["identical_scores"] is True and first["ratio"] > 0
    assert {ln["budget"] for ln in lines[1:]} == {"smoke", "full"}


def test_throughput_benchmark():
    lines = bench([sys.executable, "-m", "benchmarks.throughput", "--steps", "2", "--warmup", "1", "--width", "4",
                   "--batch", "32", "--workers", "0", "--images", "256"])
    assert {ln.get("loop") for ln in lines[:3]} == {"platform", "bare", "dataloader"}
    assert lines[-1]["platform_over_bare"] > 0 and lines[-1]["platform_over_dataloader"] > 0


def test_exits_vs_plain_benchmark():
    lines = bench([sys.executable, "-m", "benchmarks.exits_vs_plain", "--data", "synthetic", "--size", "tiny", "--epochs",
                   "1", "--width", "4", "--batch", "64", "--threads", "1"])
    assert {ln.get("net") for ln in lines[:-1]} == {"gran_hbn", "plain"}
    assert "mean_gap_points_plain_minus_gran_hbn" in lines[-1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One finished one-trial branchynet-like run, shared by the latency benchmarks' tests."""
    from search.local import run_local
    from search.spec import RunSpec

    return run_local(RunSpec(space="tiny_branchy", data="synthetic", name="dl", storage=str(tmp_path_factory.mktemp("dl")),
                             trials=1))


def test_dynamic_latency_benchmark(tiny_run):
    import pyarrow.parquet as pq

    run = tiny_run
    lines = bench([sys.executable, "-m", "benchmarks.dynamic_latency", str(run), "--images", "10", "--batches", "2",
                   "--rounds", "2", "--warmup-seconds", "0.1"])
    *points, summary = lines
    front = {r["point_id"] for r in pq.read_table(run / "results.parquet").to_pylist() if r["on_front"]}
    assert {p["point_id"] for p in points} == front and summary["points"] == len(front)
    for p in points:  # predicted and measured, batch 1 and batched, with their ratio and the speed-ups
        assert p["predicted_ms_batch1"] > 0 and p["measured_ms_batch1"] > 0 and p["ratio_batch1"] > 0
        assert p["predicted_ms_batched"] > 0 and p["measured_ms_batched"] > 0 and p["ratio_batched"] > 0
        assert p["measured_speedup_batch1"] > 0 and p["speedup_flops"] > 0 and p["threads"] == 1
        # the spread of the trial's own measurement, which the prediction comes from, is reported beside it
        status = json.loads((run / "trials" / p["point_id"].split("/")[0] / "status.json").read_text())
        assert p["trial_spread"] == status["latency"]["spread"]
        assert ("its prediction was measured on a busy machine" in p.get("warning", "")) == (p["trial_spread"] > 0.10)
    calib = {r["point_id"]: r for r in pq.read_table(run / "results.parquet").to_pylist() if r["split"] == "calibration"}
    for p in points:  # the machine's pace and the speed-ups, predicted against measured
        for k, col in (("batch1", "plain_latency_ms"), ("batched", "plain_latency_ms_batched")):
            assert p[f"stored_plain_ms_{k}"] == pytest.approx(calib[p["point_id"]][col], rel=1e-3)  # the trial's own time
            assert p[f"pace_{k}"] == pytest.approx(p[f"plain_ms_{k}"] / p[f"stored_plain_ms_{k}"], rel=1e-3)
            assert p[f"predicted_speedup_{k}"] == pytest.approx(p[f"stored_plain_ms_{k}"] / p[f"predicted_ms_{k}"], rel=1e-3)
            assert p[f"speedup_ratio_{k}"] == pytest.approx(p[f"predicted_speedup_{k}"] / p[f"measured_speedup_{k}"], rel=1e-3)
            assert p[f"speedup_ratio_{k}"] == pytest.approx(1 / (p[f"ratio_{k}"] * p[f"pace_{k}"]), rel=1e-2)
    for k in ("batch1", "batched"):
        assert summary[f"speedup_within_tolerance_{k}"] == sum(abs(p[f"speedup_ratio_{k}"] - 1) <= 0.1 for p in points)
        assert summary[f"pace_{k}_range"] == [min(p[f"pace_{k}"] for p in points), max(p[f"pace_{k}"] for p in points)]
    assert summary["default_point"] in front and 0 <= summary["beat_plain_batch1"] <= len(front)
    one = bench([sys.executable, "-m", "benchmarks.dynamic_latency", str(run), "--point-id", points[0]["point_id"],
                 "--images", "4", "--batches", "1", "--rounds", "1", "--warmup-seconds", "0", "--retime"])
    assert [p["point_id"] for p in one[:-1]] == [points[0]["point_id"]]
    for k in ("batch1", "batched"):  # --retime: the trial's per-exit calls timed again beside the point's
        p = one[0]
        assert p[f"retimed_predicted_ms_{k}"] > 0 and p[f"retimed_measured_ms_{k}"] > 0
        assert p[f"retimed_ratio_{k}"] == pytest.approx(p[f"retimed_predicted_ms_{k}"] / p[f"retimed_measured_ms_{k}"], rel=0.01)
    bad = subprocess.run([sys.executable, "-m", "benchmarks.dynamic_latency", str(run), "--point-id", "nope"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no complete point 'nope'" in bad.stderr


# `python -m benchmarks.trial_overhead` runs, as a user runs it, inside the benchmark suite's --quick
# run (its fixed_cost figure), which tests/benchmarks/test_suite.py checks: one run of it, not two.


def test_trial_startup_benchmark():
    lines = bench([sys.executable, "-m", "benchmarks.trial_startup", "--data", "synthetic", "--size", "tiny",
                   "--repeats", "1", "--batch", "32"])
    assert [ln.get("arm") for ln in lines[:3]] == ["off", "cold", "warm"]
    assert all(ln["train_images"] == 1000 and ln["median_load_s"] > 0 and ln["median_process_s"] > 0 for ln in lines[:3])
    assert lines[-1]["data_s_ratio_with_over_without"] > 0 and lines[-1]["process_s_ratio_with_over_without"] > 0



def test_suite_dynamic_inference_times_the_point_against_its_trials_plain_point(tiny_run):
    """The suite's figure measures as the platform does (issue 16): the run's default point against
    its own trial's plain point (the network without early exits, loaded as a user loads it), each
    input's time the lower quartile of interleaved rounds, and the run's prediction beside it."""
    import pyarrow.parquet as pq

    from benchmarks.suite_inference import dynamic_inference
    from search.load import load_operating_point

    fig = dynamic_inference(tiny_run, images=3, batch=64, rounds=2, warmup=1, threads=1)
    rows = pq.read_table(tiny_run / "results.parquet").to_pylist()
    s = fig["setting"]
    plain = next(r for r in rows if r["point_id"] == s["plain_point_id"] and r["split"] == "calibration")
    assert plain["plain"] and plain["trial_id"] == load_operating_point(tiny_run).point["test"]["trial_id"]
    assert s["point_id"] == load_operating_point(tiny_run).point["test"]["point_id"] and "lower quartile" in s["statistic"]
    for k in ("batch1", "batched"):
        assert fig["value"][f"dynamic_ms_{k}"] > 0 and fig["reference"][f"plain_ms_{k}"] > 0
        assert fig["ratio"][f"predicted_over_measured_{k}"] == pytest.approx(
            fig["value"][f"predicted_ms_{k}"] / fig["value"][f"dynamic_ms_{k}"], rel=0.02)
        assert fig["spread"][k] >= 0
    assert sum(fig["value"]["exit_fraction"]) == s["test_images"]

@pytest.mark.slow
@pytest.mark.cluster
def test_bucket_storage_benchmark():
    lines = bench([sys.executable, "-m", "benchmarks.bucket_storage", "--trials", "1"], timeout=900)
    assert [ln.get("arm") for ln in lines[:2]] == ["local", "bucket"]
    assert all(ln["median_wall_s"] > 0 for ln in lines[:2])
    last = lines[-1]
    assert last["complete_trials_local"] == last["complete_trials_bucket"] == 1
    assert last["bucket_files"] > 10 and last["bucket_bytes"] > 0 and last["wall_ratio_bucket_over_local"] > 0


@pytest.mark.slow
def test_mo_early_stopping_benchmark():
    lines = bench([sys.executable, "-m", "benchmarks.mo_early_stopping", "--quick"], timeout=1800)
    runs = [ln for ln in lines if "scheduler" in ln]
    assert {(ln["problem"], ln["scheduler"]) for ln in runs} == {(p, s) for p in ("simulator", "better_mistakes")
                                                                 for s in ("fifo", "asha_sum", "moasha")}
    for ln in runs:
        assert ln["complete"] >= 1 and ln["hypervolume"] > 0 and ln["wall_s"] > 0
        if ln["scheduler"] == "fifo":  # no stopping: every trial trains to its end
            assert ln["stopped"] == 0 and ln["epochs"] == ln["planned_epochs"]
        else:
            assert ln["epochs"] <= ln["planned_epochs"]
    summaries = {ln["problem"]: ln for ln in lines if "seeds" in ln and "mean_moasha_hv_over_fifo" in ln}
    assert set(summaries) == {"simulator", "better_mistakes"}
    assert all(s["mean_moasha_hv_over_fifo"] > 0 and s["mean_moasha_epochs_over_fifo"] <= 1 for s in summaries.values())
    per_seed = {ln["problem"]: ln for ln in lines if "oracle_epochs_over_fifo" in ln}
    # the bound from FIFO's own trials: at least every trial's first rung, at most every epoch; none on 3 objectives
    assert 1 / 8 <= per_seed["simulator"]["oracle_epochs_over_fifo"] <= 1
    assert per_seed["better_mistakes"]["oracle_epochs_over_fifo"] is None
    sampler = [ln for ln in lines if ln.get("problem") == "sampler" and "mean_rung_tpe_hv_over_tpe" in ln]
    assert {ln["rule"] for ln in sampler} == {"pareto", "weighted_sum"}
    alone = {ln["sampler"]: ln for ln in lines if ln.get("problem") == "rule_alone"}
    assert set(alone) == {"random", "tpe"}  # the rules one trial at a time, each sampler
    for ln in alone.values():
        assert ln["trials"] == 12 and ln["seeds"] == 2 and 0 < ln["mean_moasha_epochs"] <= 1
        assert 0 < ln["mean_moasha_hv"] and 1 / 8 <= ln["mean_oracle_epochs"] <= 1
        assert 0 <= ln["seeds_meeting_target"] <= 2


def test_mo_early_stopping_refuses_unknown_parts_and_a_missing_data_root(tmp_path):
    for args, said in ((["--parts", "simulator,pbt"], "pbt is not a part; choose from simulator, better_mistakes, sampler, rule_alone"),
                       (["--parts", "rule_alone", "--rule-trials", "32,x"], "give trial counts above 0"),
                       (["--data-root", str(tmp_path / "none")], "is not a directory")):
        p = subprocess.run([sys.executable, "-m", "benchmarks.mo_early_stopping", *args], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 2 and said in p.stderr and not p.stdout, p.stderr[-2000:]


def test_mixed_precision_benchmark():
    lines = bench([sys.executable, "-m", "benchmarks.mixed_precision", "--data-size", "tiny", "--backbone",
                   "shufflenet_v2_x1_0", "--input-size", "16", "--epochs", "1", "--threads", "1"])
    assert [ln.get("precision") for ln in lines[:2]] == ["fp32", "bf16"]
    assert lines[-1]["bf16_over_fp32_train_time"] > 0 and "macro_f1_change" in lines[-1]


def test_the_fewest_points_keeping_a_share_of_the_hypervolume_match_a_search_over_every_subset():
    """The oracle bound of benchmarks.mo_early_stopping: the fewest points whose front keeps a share of
    the hypervolume, exact (dynamic programming) against trying every subset, on random fronts with
    dominated points, duplicates and points beyond the reference."""
    import itertools

    import numpy as np

    from benchmarks.mo_early_stopping import fewest_points_for
    from trainables.pareto import hypervolume

    rng = np.random.default_rng(0)
    ref = np.array([1.2, 1.2])
    for case in range(40):
        n = int(rng.integers(1, 9))
        a = rng.uniform(0, np.pi / 2, n)
        pts = np.stack([np.cos(a), np.sin(a)], axis=1) * rng.uniform(0.6, 1.3, (n, 1))
        if case % 5 == 0:
            pts = np.vstack([pts, pts[:1]])  # a duplicate
        total = hypervolume(pts, ref, [False, False])
        for share in (0.5, 0.9, 0.98, 1.0):
            got = fewest_points_for(pts, ref, share)
            if total == 0:
                assert got == 0
                continue
            want = next(c for c in range(1, len(pts) + 1) if any(
                hypervolume(pts[list(s)], ref, [False, False]) >= share * total - 1e-12
                for s in itertools.combinations(range(len(pts)), c)))
            assert got == want, (case, share, pts.tolist())
    # one point dominating every other: it alone keeps it all
    assert fewest_points_for(np.array([[0.1, 0.1], [0.5, 0.5], [0.2, 0.9]]), ref, 1.0) == 1


def test_the_rules_one_at_a_time_with_a_random_sampler_see_the_same_trials():
    """rule_alone's runs: with the random sampler every rule is offered the same trials at a seed, so
    MOASHA's complete trials are some of FIFO's (the same final values), on fewer epochs; FIFO trains
    every trial to the end."""
    import numpy as np

    from benchmarks.learning_curves import BUDGETS
    from benchmarks.mo_early_stopping import _one_at_a_time

    budget = BUDGETS["smoke"]
    fifo, fifo_at, fifo_spent = _one_at_a_time(3, 16, budget, None, "random")
    assert len(fifo) == 16 and fifo_spent == 16 * budget.epochs and fifo_at == [budget.epochs * (k + 1) for k in range(16)]
    mo, mo_at, mo_spent = _one_at_a_time(3, 16, budget, "pareto", "random")
    assert 1 <= len(mo) < 16 and mo_spent < fifo_spent and mo_at == sorted(mo_at) and mo_at[-1] <= mo_spent
    assert all(any(np.array_equal(m, f) for f in fifo) for m in mo)


def test_mo_early_stopping_repeats_the_rules_at_each_reduction_factor_asked():
    lines = bench([sys.executable, "-m", "benchmarks.mo_early_stopping", "--parts", "rule_alone", "--rule-trials", "6",
                   "--rule-seeds", "1", "--sim-budgets", "full,full-rf4"], timeout=300)
    assert {(ln["sampler"], ln["budget"], ln["reduction_factor"], ln["trials"]) for ln in lines} == {
        (s, b, rf, 6) for s in ("random", "tpe") for b, rf in (("full", 2.0), ("full-rf4", 4.0))}
