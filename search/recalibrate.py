"""`python -m search.recalibrate RUN_DIR`: calibrate a finished run's exits again, no retraining.

Every complete trial kept its exit outputs on the calibration and test splits
(`trials/<id>/exit_cache_{calibration,test}.npz`). This re-runs the threshold search on them
with another budget (more settings, a finer grid, more points kept), rewrites each trial's
`points.json`, then the run's results tables and report. Thresholds are still chosen on the
calibration split only. The outer Optuna study is not changed: it recorded what the search saw.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from search.atomic import write_json
from search.collect import collect, write_tables

__all__ = ["recalibrate"]


def recalibrate(run_dir: str | Path, calibration: dict, seed: int = 0) -> int:
    """Re-calibrate every trial with cached outputs; returns how many were redone."""
    from trainables.exits import ExitCache
    from trainables.loop import operating_points

    run_dir = Path(run_dir)
    spec = json.loads((run_dir / "spec.json").read_text())
    done = 0
    for tdir in sorted((run_dir / "trials").glob("*")):
        c, t = tdir / "exit_cache_calibration.npz", tdir / "exit_cache_test.npz"
        if not (c.exists() and t.exists() and (tdir / "points.json").exists()):
            continue
        t0 = time.perf_counter()
        res, points, per_exit = operating_points(ExitCache.load(c), ExitCache.load(t), calibration, seed)
        write_json(tdir / "points.json", {
            "points": points, "per_exit_accuracy": per_exit, "hypervolume": res.hypervolume,
            "front_size": res.front_size, "settings_evaluated": res.n_evaluated,
            "calibration_seconds": time.perf_counter() - t0, "recalibrated_with": calibration,
        })
        status_path = tdir / "status.json"
        status = json.loads(status_path.read_text())
        status["hypervolume"] = res.hypervolume
        write_json(status_path, status)
        done += 1
    numbers = {}
    results_path = run_dir / "results.parquet"
    if results_path.exists():
        import pyarrow.parquet as pq

        old = pq.read_table(results_path, columns=["trial_id", "trial_number"]).to_pylist()
        numbers = {r["trial_id"]: {"number": r["trial_number"]} for r in old}
    results, curves = collect(run_dir, spec, numbers, spec.get("point_objectives"))
    write_tables(run_dir, results, curves)
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m search.recalibrate", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n-trials", type=int, default=1024, help="Optuna proposals of the inner search")
    ap.add_argument("--neighbours", type=int, default=32, help="perturbed settings scored around each proposal")
    ap.add_argument("--population", type=int, default=64)
    ap.add_argument("--levels", type=int, default=64, help="threshold grid levels per exit (quantiles)")
    ap.add_argument("--max-points", type=int, default=128, help="front points kept per trial")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "spec.json").exists():
        print(f"error: {run_dir} is not a run directory (no spec.json)", file=sys.stderr)
        return 2
    cal = {"n_trials": args.n_trials, "neighbours": args.neighbours, "population": args.population,
           "levels": args.levels, "max_points": args.max_points}
    n = recalibrate(run_dir, cal, args.seed)
    print(f"recalibrated {n} trials in {run_dir}")
    if not args.no_report:
        from reports.build import build_report

        print(f"report {build_report(run_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
