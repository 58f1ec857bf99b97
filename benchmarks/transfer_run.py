"""The transfer family's real run, summarised: pretrained weights vs from scratch, side by side.

A run sequence (README, "The transfer run") pretrains a backbone on CIFAR-10 classes 0-4, exports
it, and searches transfer on classes 5-9 and on 2x2 mosaics of classes 0-9 from those weights and
from scratch. This command reads the runs it made and prints, per run, one JSON line: trials,
the default point's calibration and test scores (chosen on calibration by the space's own rule),
the test scores of its per-class and fixed-0.5 reference points beside the global threshold's
(multi-label), and the best test macro F1 and accuracy over its trials' chosen points.

    python3 -m benchmarks.transfer_run runs/RUN [runs/RUN ...]

Reads only; every file with the run's safe loaders.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from reports.schema import read_results
from search.load import choose_point
from trainables.contract import Declaration

__all__ = ["summarise"]


def _scores(row: dict | None) -> dict:
    if row is None:
        return {}
    return {k: (round(row[k], 4) if isinstance(row.get(k), float) else row.get(k))
            for k in ("macro_f1", "micro_f1", "accuracy", "macro_f1_per_class", "threshold") if k in row}


def summarise(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    spec = json.loads((run_dir / "spec.json").read_text())
    decl = Declaration.from_dict(spec["declaration"])
    rows = read_results(run_dir).to_pylist()
    by = {(r["point_id"], r["split"]): r for r in rows}
    chosen = choose_point(rows, decl)
    tid = chosen["trial_id"]
    trial_rows = [r for r in rows if r["trial_id"] == tid]
    refs = {r["point_id"].rsplit("/", 1)[-1]: r for r in trial_rows if r["split"] == "test" and r.get("reference")}
    complete = {r["trial_id"] for r in rows if r.get("status") == "complete"}
    test_global = [r for r in rows if r["split"] == "test" and not r.get("reference") and r.get("status") == "complete"]
    out = {
        "run": run_dir.name,
        "data": spec.get("data"),
        "weights": spec.get("options", {}).get("weights", "none"),
        "trials_complete": len(complete),
        "default_point": chosen["point_id"],
        "backbone": chosen.get("backbone"),
        "training": chosen.get("training"),
        "config": {k: v for k, v in json.loads(chosen.get("config_json") or "{}").items()
                   if k in ("optimizer", "lr", "precision", "augment", "batch_size", "epochs", "lr_schedule")},
        "calibration": _scores(chosen),
        "test": _scores(by.get((chosen["point_id"], "test"))),
        "test_reference_points_of_its_trial": {k: _scores(v) for k, v in refs.items()},
        "test_macro_f1_over_trials": {"max": round(max(r["macro_f1"] for r in test_global), 4),
                                      "median": round(statistics.median(r["macro_f1"] for r in test_global), 4)},
        "test_accuracy_over_trials": {"max": round(max(r["accuracy"] for r in test_global), 4),
                                      "median": round(statistics.median(r["accuracy"] for r in test_global), 4)},
        "train_seconds_median": round(statistics.median(r["train_seconds"] for r in test_global), 1),
    }
    if any(r.get("macro_f1_per_class") is not None for r in test_global):
        gaps = [r["macro_f1_per_class"] - r["macro_f1"] for r in test_global if r.get("macro_f1_per_class") is not None]
        out["test_per_class_minus_global_macro_f1_median"] = round(statistics.median(gaps), 4)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python3 -m benchmarks.transfer_run", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    for r in ap.parse_args(argv).runs:
        print(json.dumps(summarise(r)), flush=True)


if __name__ == "__main__":
    main()
