"""`python -m search.recalibrate RUN_DIR`: calibrate a finished run's exits again, no retraining.

RUN_DIR may be a bucket run, `s3://BUCKET/PREFIX/RUN` (or gs://): it is fetched into this
machine's copy (trainables/storage.py), recalibrated there, and the rewritten files pushed back.

Every complete trial kept its exit outputs on the calibration and test splits
(`trials/<id>/exit_cache_{calibration,test}.npz`). This re-runs the family's calibration on them
with other settings (more settings searched, a finer grid, more points kept), rewrites each
trial's `points.json` and `calibration_front.npz`, then the run's results tables and report.
Thresholds are still chosen on the calibration split only. The outer Optuna study is not
changed: it recorded what the search saw.

Everything is read and recalibrated in memory before the first write, so bad input (no run
directory, an unreadable spec.json, a complete trial whose caches or network are missing or
damaged) exits with status 2 and a message saying what to do, and leaves the run directory as it
was.

The points are recomputed by the space's current code, so under its versioned conventions
(trainables/contract.py `Convention`, e.g. the class distance). Where the run's stored declaration
states other versions (or none), spec.json's declaration takes the code's conventions and
`spec["convention_changes"]` records the change (from, to, when), because what training recorded
(learning curves, and the training itself) stays under the run's original versions; the report
states it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from search.collect import collect, write_tables
from trainables.storage import fetch_run
from trainables.atomic import write_json
from trainables.contract import Declaration, convention_changes

__all__ = ["recalibrate"]

_FLAGS = ("n_trials", "neighbours", "population", "levels", "max_points")
#: What recalibration reads from each complete trial; none of it can be rebuilt without retraining.
_NEEDED = ("exit_cache_calibration.npz", "exit_cache_test.npz", "model.pt", "status.json")


def _read_spec(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} does not exist or is not a directory: pass the run directory a search "
                         "wrote (STORAGE/NAME, e.g. runs/my-run)")
    path = run_dir / "spec.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a run directory (no spec.json): pass the run directory a search "
                         "wrote (STORAGE/NAME, e.g. runs/my-run)")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}: {exc}): recalibration needs the run's "
                         "settings from it; restore it from a copy (the search writes it when the run starts)") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("space"), str):
        raise ValueError(f"{path} names no space (expected a JSON object with a \"space\" key): restore it from a "
                         "copy (the search writes it when the run starts)")
    return spec


def _trial_numbers(run_dir: Path) -> dict[str, dict[str, Any]]:
    """trial id -> {"number": its Optuna trial number} from the results table, kept when it is rewritten."""
    path = run_dir / "results.parquet"
    if not path.exists():
        return {}
    import pyarrow.parquet as pq

    try:
        old = pq.read_table(path, columns=["trial_id", "trial_number"]).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        why = " ".join(str(exc).split())
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}: {why}): recalibration keeps the trials' "
                         "numbers from it. Move it aside and run again to rebuild it from the trial folders (trials "
                         "are then numbered in trial-id order), or restore it from a copy. Nothing was changed.") from exc
    return {r["trial_id"]: {"number": r["trial_number"]} for r in old}


def _read_trial(tdir: Path) -> tuple[dict[str, Any], list[Any], Any]:
    """(status, [calibration cache, test cache], data info) of a complete trial; ValueError naming
    the trial and the file when one is missing or cannot be read."""
    from trainables.dynamic import data_info
    from trainables.exits import ExitCache
    from trainables.safe_load import UnsafeFile, load_torch

    for name in _NEEDED:
        if not (tdir / name).is_file():
            raise ValueError(f"trial {tdir.name}: {tdir / name} is missing")
    path = tdir / "status.json"
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(status, dict):
            raise ValueError(f"a JSON {type(status).__name__}, not an object")
        path = tdir / "exit_cache_calibration.npz"
        caches = [ExitCache.load(path)]
        path = tdir / "exit_cache_test.npz"
        caches.append(ExitCache.load(path))
        path = tdir / "model.pt"
        data = data_info(load_torch(path))
    except UnsafeFile as exc:
        raise ValueError(f"trial {tdir.name}: {exc}") from exc
    except Exception as exc:  # a damaged file fails in many ways (BadZipFile, EOFError, KeyError, ...): all mean the same
        raise ValueError(f"trial {tdir.name}: {path} cannot be read ({type(exc).__name__}: {exc}): "
                         "truncated or damaged") from exc
    return status, caches, data


def recalibrate(run_dir: str | Path, calibration: dict[str, Any], seed: int = 0) -> int:
    """Re-calibrate every complete trial from its cached outputs; returns how many were redone.

    `calibration` overrides keys of the run's budget calibration settings; a key the family does
    not use raises ValueError. So does a missing or unreadable spec.json, and a complete trial whose
    caches, network or status are missing or unreadable (naming every such trial and file), all
    before anything is rewritten."""
    from spaces import get_space
    from trainables.engine.family import TrialInputs
    from trainables.engine.loop import write_outcome

    run_dir = Path(run_dir)
    spec = _read_spec(run_dir)
    try:
        space = get_space(spec["space"])
    except KeyError as exc:  # the registry's message lists the known spaces
        raise ValueError(f"{run_dir / 'spec.json'}: {exc.args[0] if exc.args else exc}; a test or plug-in space "
                         "must be registered as when the run was made (EXITSEARCH_SPACES)") from exc
    budget = space.budget(spec.get("budget", "smoke"))
    unknown = sorted(set(calibration) - set(budget.calibration))
    if unknown:
        raise ValueError(f"space {space.name!r} has no calibration setting {unknown}; its settings: {', '.join(budget.calibration)}")
    options = space.resolve_options(spec.get("options") or {})
    family = space.family(budget, options)
    family.calibration.update(calibration)
    try:
        decl = Declaration.from_dict(spec["declaration"]) if "declaration" in spec else family.declaration
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{run_dir / 'spec.json'}: its declaration is unusable ({type(exc).__name__}: {exc}); "
                         "restore spec.json from a copy") from exc

    pending, problems = [], []
    for tdir in sorted((run_dir / "trials").glob("*")):
        if not (tdir / "points.json").exists():
            continue  # not complete: nothing was calibrated
        try:
            pending.append((tdir, *_read_trial(tdir)))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("\n".join(problems) + (
            f"\nRecalibration reuses each complete trial's {', '.join(_NEEDED)} and cannot rebuild them without "
            f"retraining: move the trial folder(s) named above out of {run_dir / 'trials'} to recalibrate the other "
            "trials without them (they then leave the results tables), or start a new run. Nothing was changed."))
    numbers = _trial_numbers(run_dir)
    # every trial is recalibrated in memory first: an error on any leaves the run directory untouched
    outcomes = []
    for tdir, status, (calib_cache, test_cache), data in pending:
        seed_t = int(status.get("seed") or seed)
        config = status.get("config") or {}
        t0 = time.perf_counter()
        inputs = TrialInputs(config, seed_t, data)
        evaluation = family.evaluate(calib_cache, inputs)
        outcome = family.finish(evaluation, calib_cache, test_cache, inputs)
        outcomes.append((tdir, status, outcome, time.perf_counter() - t0))
    changed = bool(convention_changes(decl, family.declaration))
    if changed:  # the points are now the code's: so are the conventions the run states (checked before any write)
        spec, decl = _adopt_conventions(spec, decl, family.declaration)
    for tdir, status, outcome, seconds in outcomes:
        write_outcome(tdir, family, outcome, {"finish_seconds": seconds, "recalibrated_with": family.calibration})
        status["trial"] = outcome.trial
        write_json(tdir / "status.json", status)
    if changed:
        write_json(run_dir / "spec.json", spec)
    write_tables(run_dir, *collect(run_dir, spec, decl, numbers))
    return len(pending)


def _adopt_conventions(spec: dict[str, Any], stored: Declaration, current: Declaration) -> tuple[dict[str, Any], Declaration]:
    """spec.json and its declaration once every point was recomputed under the code's conventions:
    the declaration states the code's versions, and each change is recorded with what it leaves
    under the old version."""
    import dataclasses

    old = {c.name: c.version for c in stored.conventions}
    new = {c.name: c.version for c in current.conventions}
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    records = list(spec.get("convention_changes") or [])
    for name in sorted(set(old) | set(new)):
        if old.get(name) == new.get(name):
            continue
        before = f"version {old[name]}" if name in old else \
            "a version it did not record (it was made before the convention was versioned)"
        after = f"version {new[name]}" if name in new else "none (the code no longer declares it)"
        records.append({"name": name, "from": old.get(name), "to": new.get(name), "by": "search.recalibrate", "at": at,
                        "note": f"{name}: the points of this run (calibration and test rows) were recomputed from the trials' "
                                f"cached outputs under {after} by search.recalibrate on {at}; the run was made under "
                                f"{before}, which the networks' training and the learning curves still follow."})
    decl = dataclasses.replace(stored, conventions=current.conventions)
    return {**spec, "declaration": decl.to_dict(), "convention_changes": records}, decl


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
    cal = {k: getattr(args, k) for k in _FLAGS if getattr(args, k) is not None}
    try:
        run_dir, mirror = fetch_run(args.run_dir)  # a bucket run (s3://.../RUN): recalibrated in this machine's copy
        n = recalibrate(run_dir, cal, args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: some trials may already hold their new calibration; run the same command again "
              "to recalibrate them all and rewrite the results tables", file=sys.stderr)
        return 130
    print(f"recalibrated {n} trials in {run_dir}")
    if not args.no_report:
        from reports.build import build_report

        print(f"report {build_report(run_dir)}")
    if mirror is not None:
        print(f"pushed {len(mirror.push_rewritten())} rewritten files to {mirror.remote.uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
