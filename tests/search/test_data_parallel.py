"""Data-parallel trials: Ray Train's TorchTrainer inside the Tune trial, Accelerate DDP over gloo.

- The same trial on 2 workers reaches the same metrics as on 1 worker at the same global batch
  size and seed (benchmarks/data_parallel.py, run as a user would). Tolerances:
  * a network without BatchNorm (AlexNet): every worker trains on its slice of the same global
    batch with the same augmentation draws and DDP averages the gradients, so the two runs differ
    only by floating-point summation order: training loss per epoch within 1e-4 relative, the
    final exit's calibration accuracy within 0.2 points (one image in 500);
  * a network with BatchNorm (ResNet): each worker normalises by its half-batch's statistics (no
    SyncBatchNorm on CPUs), a real difference in the computation: per-epoch training loss within
    5% relative and the final exit's calibration accuracy within 5 points.
- An interrupted multi-worker trial resumes (`--resume`) from Ray Train's last checkpoint.
- Two multi-worker trials run at once on a machine that holds exactly their workers (Ray issue
  #54305: Train inside Tune deadlocking over resources), and a worker killed mid-trial (SIGKILL)
  is restarted by Ray Train from the trial's last checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "EXITSEARCH_SPACES": "tests.fault_spaces", **extra}


def _compare(draw: int) -> tuple[dict, dict, dict]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.data_parallel", "--data-size", "tiny", "--epochs", "2",
                          "--draw", str(draw), "--workers", "2", "--cpus", "2"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 3, out.stdout
    one, two, summary = lines
    assert (one["workers"], two["workers"]) == (1, 2)
    # the trial itself saw its workers: the loop records the process group it trained in
    assert (one["provenance_workers"], two["provenance_workers"]) == (1, 2)
    assert one["status"] == two["status"] == "complete"
    assert len(one["train_loss"]) == len(two["train_loss"]) == 2
    return one, two, summary


def test_two_workers_match_one_worker_without_batchnorm():
    one, two, summary = _compare(draw=0)
    assert summary["config"]["backbone"] == "alexnet"  # no BatchNorm: the runs must agree to rounding
    for a, b in zip(one["train_loss"], two["train_loss"]):
        assert abs(a - b) <= 1e-4 * abs(a), (one["train_loss"], two["train_loss"])
    assert abs(one["final_exit_calib_accuracy"] - two["final_exit_calib_accuracy"]) <= 0.002
    # and the space's own signal, from the same calibration outputs
    for key, diff in summary["signal_diff"].items():
        assert abs(diff) <= 1e-3 * max(1.0, abs(one["signal"][key])), (key, diff)


def test_two_workers_match_one_worker_with_batchnorm_within_tolerance():
    one, two, summary = _compare(draw=2)
    assert summary["config"]["backbone"] == "resnet"
    for a, b in zip(one["train_loss"], two["train_loss"]):
        assert abs(a - b) <= 0.05 * abs(a), (one["train_loss"], two["train_loss"])
    assert abs(one["final_exit_calib_accuracy"] - two["final_exit_calib_accuracy"]) <= 0.05


def _at(s: str) -> datetime:
    return datetime.fromisoformat(s)


def test_two_multi_worker_trials_at_once_and_a_killed_worker_resumes_from_checkpoint(tmp_path):
    mark = tmp_path / "killed"
    out = subprocess.run(
        [sys.executable, "-m", "search.run", "--space", "kill_worker", "--trials", "2", "--workers-per-trial", "2",
         "--cpus-per-trial", "1", "--retries", "1", "--storage", str(tmp_path / "runs"), "--name", "dp", "--no-report"],
        cwd=ROOT, env=_env(EXITSEARCH_KILL_MARK=str(mark), EXITSEARCH_KILL_WATCH=str(tmp_path / "runs")),
        capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert mark.exists(), "no worker was killed: the test did not test anything"
    run = tmp_path / "runs" / "dp"
    statuses = [json.loads(p.read_text()) for p in sorted((run / "trials").glob("*/status.json"))]
    assert len(statuses) == 2
    for s in statuses:
        assert s["status"] == "complete", s.get("error")
        assert s["provenance"]["workers"] == 2 and s["provenance"]["backend"] == "gloo"
    # one trial lost a worker in its second epoch and went on from its epoch-1 checkpoint
    restarted = [s for s in statuses if len(s["starts"]) > 1]
    assert len(restarted) == 1, [s["starts"] for s in statuses]
    assert [st["from_epoch"] for st in restarted[0]["starts"]] == [0, 1]
    # the two trials ran at once: 2 trials x 2 workers on a 2-CPU Ray, nothing deadlocked
    a, b = statuses
    assert _at(a["starts"][0]["at"]) < _at(b["updated_at"]) and _at(b["starts"][0]["at"]) < _at(a["updated_at"])
    results = pq.read_table(run / "results.parquet").to_pylist()
    assert {r["trial_id"] for r in results} == {s["trial_id"] for s in statuses}
    assert {r["status"] for r in results} == {"complete"}


def test_an_interrupted_multi_worker_trial_resumes_from_its_ray_train_checkpoint(tmp_path):
    """Ctrl-C mid-trial, then --resume: Tune restarts the trial, whose TorchTrainer (same name and
    storage) restores Ray Train's last checkpoint."""
    import signal
    import time

    storage = tmp_path / "runs"
    args = [sys.executable, "-m", "search.run", "--space", "tiny_asha", "--data-size", "full", "--trials", "1",
            "--workers-per-trial", "2", "--cpus-per-trial", "2", "--storage", str(storage), "--name", "r", "--no-report"]
    p = subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    train = storage / "r" / "train"
    deadline = time.monotonic() + 600
    # Ray Train writes its snapshot once it has registered a checkpoint
    while not list(train.glob("*/checkpoint_manager_snapshot.json")) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(1)
    assert list(train.glob("*/checkpoint_*")), "no Ray Train checkpoint appeared"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err[-3000:]
    (status_path,) = (storage / "r" / "trials").glob("*/status.json")
    before = json.loads(status_path.read_text())
    assert before["status"] == "interrupted" and before["epochs_done"] < 3, before["status"]
    out = subprocess.run(args + ["--resume"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    after = json.loads(status_path.read_text())
    assert after["status"] == "complete" and after["epochs_done"] == 3
    # restarted once, from the epoch after the checkpoint it had, not from scratch
    starts = [s["from_epoch"] for s in after["starts"]]
    assert len(starts) == 2 and starts[0] == 0 and 1 <= starts[1] <= before["epochs_done"], starts
