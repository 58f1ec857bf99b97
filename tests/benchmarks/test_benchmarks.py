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


def test_dynamic_latency_benchmark(tmp_path):
    from search.local import run_local
    from search.spec import RunSpec

    run = run_local(RunSpec(space="tiny_branchy", data="synthetic", name="dl", storage=str(tmp_path), trials=1))
    lines = bench([sys.executable, "-m", "benchmarks.dynamic_latency", str(run), "--images", "20", "--batch", "32", "--repeats", "1"])
    assert lines[0]["plain_ms_batch1"] > 0 and lines[0]["dynamic_ms_batch1"] > 0
    assert lines[1]["measured_speedup_batch1"] > 0 and lines[1]["predicted_speedup_latency"] > 0


# `python -m benchmarks.trial_overhead` runs, as a user runs it, inside the benchmark suite's --quick
# run (its fixed_cost figure), which tests/benchmarks/test_suite.py checks: one run of it, not two.


def test_trial_startup_benchmark():
    lines = bench([sys.executable, "-m", "benchmarks.trial_startup", "--data", "synthetic", "--size", "tiny",
                   "--repeats", "1", "--batch", "32"])
    assert [ln.get("arm") for ln in lines[:3]] == ["off", "cold", "warm"]
    assert all(ln["train_images"] == 1000 and ln["median_load_s"] > 0 and ln["median_process_s"] > 0 for ln in lines[:3])
    assert lines[-1]["data_s_ratio_with_over_without"] > 0 and lines[-1]["process_s_ratio_with_over_without"] > 0


@pytest.mark.slow
@pytest.mark.cluster
def test_bucket_storage_benchmark():
    lines = bench([sys.executable, "-m", "benchmarks.bucket_storage", "--trials", "1"], timeout=900)
    assert [ln.get("arm") for ln in lines[:2]] == ["local", "bucket"]
    assert all(ln["median_wall_s"] > 0 for ln in lines[:2])
    last = lines[-1]
    assert last["complete_trials_local"] == last["complete_trials_bucket"] == 1
    assert last["bucket_files"] > 10 and last["bucket_bytes"] > 0 and last["wall_ratio_bucket_over_local"] > 0


def test_mixed_precision_benchmark():
    lines = bench([sys.executable, "-m", "benchmarks.mixed_precision", "--data-size", "tiny", "--backbone",
                   "shufflenet_v2_x1_0", "--input-size", "16", "--epochs", "1", "--threads", "1"])
    assert [ln.get("precision") for ln in lines[:2]] == ["fp32", "bf16"]
    assert lines[-1]["bf16_over_fp32_train_time"] > 0 and "macro_f1_change" in lines[-1]
