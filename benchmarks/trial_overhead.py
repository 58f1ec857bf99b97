"""Fixed cost of a trial with Tune's actor reuse on vs off, in one command.

Runs the same search twice (a tiny space: 1 epoch on 1000 synthetic images, so the fixed cost
dominates) with and without `--no-reuse-actors`, and prints each run's wall time per trial,
the time each trial spent inside its own training function, and the difference: the fixed cost
(worker start, imports, data load, Accelerate set-up).

    python -m benchmarks.trial_overhead [--trials 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(trials: int, reuse: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "search.run", "--space", "tiny_gran", "--data", "synthetic", "--trials", str(trials),
               "--storage", tmp, "--name", "oh", "--no-report", "--cpus-per-trial", str(os.cpu_count() or 1)]
        if not reuse:
            cmd.append("--no-reuse-actors")
        env = {**os.environ, "EXITSEARCH_SPACES": "tests.fault_spaces", "PYTHONPATH": str(ROOT)}
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - t
        curves = [json.loads(p.read_text()) for p in Path(tmp, "oh", "trials").glob("*/curves.json")]
        train_s = sum(c["epoch_seconds"] for cc in curves for c in cc)
        return {"reuse_actors": reuse, "trials": len(curves), "run_wall_s": round(wall, 1),
                "epoch_seconds_per_trial": round(train_s / max(1, len(curves)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=6)
    args = ap.parse_args()
    on, off = one(args.trials, True), one(args.trials, False)
    for r in (on, off):
        print(json.dumps(r))
    # trials run one at a time (all cores each), so the wall-time difference per trial is the saving
    saved = (off["run_wall_s"] - on["run_wall_s"]) / args.trials
    print(json.dumps({"fixed_cost_saved_per_trial_s": round(saved, 2), "wall_ratio_off_over_on": round(off["run_wall_s"] / on["run_wall_s"], 2)}))


if __name__ == "__main__":
    main()
