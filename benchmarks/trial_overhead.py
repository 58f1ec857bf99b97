"""Fixed cost of a trial with Tune's actor reuse on vs off, in one command.

Runs the same search twice (a tiny space: 1 epoch on 1000 synthetic images, so the fixed cost
dominates) with and without `--no-reuse-actors`, trials one at a time (all cores each; on a GPU
machine one GPU each), and prints per run:

- `fixed_cost_per_trial_s`: what a trial adds to the search's wall time beyond its own work,
  read from the trials' own records: the time between one trial's end and the next one's
  (status.json `updated_at`, written when a trial has finished), less the later trial's training
  epochs, calibration evaluations and finish (curves.json `epoch_seconds` and
  `evaluation_seconds`, points.json `finish_seconds`); the median over consecutive trials (the
  first trial is left out: it also waits for the search to start). It holds the worker start or
  reuse, imports, data load, model build, Accelerate set-up, the calibration and test outputs,
  the writes and checkpoints, and Tune's and the driver's work between trials;
- the run's wall time per trial and the time each trial spent in its training epochs.

    python -m benchmarks.trial_overhead [--trials 6]

`run_arm` is the same measurement for other benchmarks (benchmarks/suite.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def trial_records(run_dir: Path) -> list[dict]:
    """Per finished trial of a run: its end (datetime), its training epochs' seconds and its own
    work in seconds (epochs, evaluations, finish), ordered by end."""
    out = []
    for status_path in Path(run_dir, "trials").glob("*/status.json"):
        status = _load(status_path) or {}
        curves = _load(status_path.parent / "curves.json") or []
        points = _load(status_path.parent / "points.json") or {}
        if status.get("status") != "complete" or not status.get("updated_at"):
            continue
        epochs = sum(float(c.get("epoch_seconds", 0.0)) for c in curves)
        evaluation = sum(float(c.get("evaluation_seconds", 0.0)) for c in curves)
        out.append({"trial_id": status_path.parent.name, "end": datetime.fromisoformat(status["updated_at"]),
                    "epoch_seconds": epochs, "work_seconds": epochs + evaluation + float(points.get("finish_seconds", 0.0))})
    return sorted(out, key=lambda r: r["end"])


def fixed_costs(records: list[dict]) -> list[float]:
    """Per trial after the first (trials one at a time): end-to-end time since the previous
    trial's end, less its own work."""
    return [(b["end"] - a["end"]).total_seconds() - b["work_seconds"] for a, b in zip(records, records[1:])]


def run_arm(trials: int, reuse: bool, storage: Path, name: str, timeout: float | None = None) -> dict:
    """One search of the tiny space `tiny_gran` (tests/fault_spaces.py) with `trials` trials one at
    a time, actor reuse on or off, in `storage/name`; returns its figures."""
    import torch

    cmd = [sys.executable, "-m", "search.run", "--space", "tiny_gran", "--data", "synthetic", "--trials", str(trials),
           "--storage", str(storage), "--name", name, "--no-report", "--cpus-per-trial", str(os.cpu_count() or 1)]
    if torch.cuda.is_available():
        cmd += ["--gpus-per-trial", "1"]  # one trial at a time on the GPU, as on the cores
    if not reuse:
        cmd.append("--no-reuse-actors")
    env = {**os.environ, "EXITSEARCH_SPACES": "tests.fault_spaces",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"search ({' '.join(cmd[1:])}) exited {p.returncode}: {p.stderr.strip()[-1500:]}")
    records = trial_records(storage / name)
    fixed = fixed_costs(records)
    return {"reuse_actors": reuse, "trials": len(records), "run_wall_s": round(wall, 1),
            "epoch_seconds_per_trial": round(sum(r["epoch_seconds"] for r in records) / max(1, len(records)), 2),
            "fixed_cost_per_trial_s": round(statistics.median(fixed), 2) if fixed else None,
            "fixed_cost_per_trial_each_s": [round(f, 2) for f in fixed]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        on, off = run_arm(args.trials, True, Path(tmp), "on"), run_arm(args.trials, False, Path(tmp), "off")
    for r in (on, off):
        print(json.dumps(r))
    # trials run one at a time (all cores each), so the wall-time difference per trial is the saving
    saved = (off["run_wall_s"] - on["run_wall_s"]) / args.trials
    fixed_on, fixed_off = on["fixed_cost_per_trial_s"], off["fixed_cost_per_trial_s"]
    print(json.dumps({"fixed_cost_saved_per_trial_s": round(saved, 2), "wall_ratio_off_over_on": round(off["run_wall_s"] / on["run_wall_s"], 2),
                      "fixed_cost_per_trial_s_reuse": fixed_on, "fixed_cost_per_trial_s_no_reuse": fixed_off,
                      "fixed_cost_ratio_off_over_on": round(fixed_off / fixed_on, 2) if fixed_on and fixed_off else None}))


if __name__ == "__main__":
    main()
