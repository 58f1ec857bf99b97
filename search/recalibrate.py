"""`python -m search.recalibrate RUN_DIR`: calibrate a finished run's exits again, no retraining.

Every complete trial kept its exit outputs on the calibration and test splits
(`trials/<id>/exit_cache_{calibration,test}.npz`). This re-runs the family's calibration on them
with other settings (more settings searched, a finer grid, more points kept), rewrites each
trial's `points.json` and `calibration_front.npz`, then the run's results tables and report.
Thresholds are still chosen on the calibration split only. The outer Optuna study is not
changed: it recorded what the search saw.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from search.collect import collect, write_tables
from trainables.atomic import write_json
from trainables.contract import Declaration

__all__ = ["recalibrate"]

_FLAGS = ("n_trials", "neighbours", "population", "levels", "max_points")


def recalibrate(run_dir: str | Path, calibration: dict[str, Any], seed: int = 0) -> int:
    """Re-calibrate every complete trial from its cached outputs; returns how many were redone.

    `calibration` overrides keys of the run's budget calibration settings; a key the family does
    not use raises ValueError. A trial whose caches are missing or unreadable raises too (naming
    the trial), before anything is rewritten."""
    import torch

    from spaces import get_space
    from trainables.dynamic import data_info
    from trainables.exits import ExitCache
    from trainables.loop import write_outcome

    run_dir = Path(run_dir)
    spec = json.loads((run_dir / "spec.json").read_text())
    space = get_space(spec["space"])
    budget = space.budget(spec.get("budget", "smoke"))
    unknown = sorted(set(calibration) - set(budget.calibration))
    if unknown:
        raise ValueError(f"space {space.name!r} has no calibration setting {unknown}; its settings: {', '.join(budget.calibration)}")
    options = space.resolve_options(spec.get("options") or {})
    family = space.family(budget, options)
    family.calibration.update(calibration)
    decl = Declaration.from_dict(spec["declaration"]) if "declaration" in spec else family.declaration

    pending = []
    for tdir in sorted((run_dir / "trials").glob("*")):
        if not (tdir / "points.json").exists():
            continue  # not complete: nothing was calibrated
        try:
            caches = [ExitCache.load(tdir / f"exit_cache_{s}.npz") for s in ("calibration", "test")]
            data = data_info(torch.load(tdir / "model.pt", map_location="cpu", weights_only=False))
        except (OSError, ValueError, KeyError, EOFError, RuntimeError, zipfile.BadZipFile) as exc:
            raise ValueError(f"trial {tdir.name}: its cached exit outputs or network cannot be read "
                             f"({type(exc).__name__}: {exc}); retrain it or leave it out") from exc
        pending.append((tdir, caches, data))
    for tdir, (calib_cache, test_cache), data in pending:
        status_path = tdir / "status.json"
        status = json.loads(status_path.read_text())
        seed_t = int(status.get("seed") or seed)
        config = status.get("config") or {}
        t0 = time.perf_counter()
        evaluation = family.evaluate(calib_cache, config, seed_t, data)
        outcome = family.finish(evaluation, calib_cache, test_cache, config, seed_t, data)
        write_outcome(tdir, family, outcome, {"finish_seconds": time.perf_counter() - t0, "recalibrated_with": family.calibration})
        status["trial"] = outcome.trial
        write_json(status_path, status)
    numbers = {}
    results_path = run_dir / "results.parquet"
    if results_path.exists():
        import pyarrow.parquet as pq

        old = pq.read_table(results_path, columns=["trial_id", "trial_number"]).to_pylist()
        numbers = {r["trial_id"]: {"number": r["trial_number"]} for r in old}
    write_tables(run_dir, *collect(run_dir, spec, decl, numbers))
    return len(pending)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m search.recalibrate", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n-trials", type=int, help="Optuna proposals of the inner search (default: the run's budget)")
    ap.add_argument("--neighbours", type=int, help="perturbed settings scored around each proposal")
    ap.add_argument("--population", type=int, help="NSGA-II population")
    ap.add_argument("--levels", type=int, help="threshold grid levels per exit (quantiles)")
    ap.add_argument("--max-points", type=int, help="front points kept per trial")
    ap.add_argument("--seed", type=int, default=0, help="seed of a trial that recorded none")
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "spec.json").exists():
        print(f"error: {run_dir} is not a run directory (no spec.json)", file=sys.stderr)
        return 2
    cal = {k: getattr(args, k) for k in _FLAGS if getattr(args, k) is not None}
    try:
        n = recalibrate(run_dir, cal, args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"recalibrated {n} trials in {run_dir}")
    if not args.no_report:
        from reports.build import build_report

        print(f"report {build_report(run_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
