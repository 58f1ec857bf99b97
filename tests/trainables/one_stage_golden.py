"""Golden record of one tiny trial per built-in family, to check that the engine's one-stage plans
reproduce the results of the loop they replaced (tests/trainables/test_plans.py).

`python3 -m tests.trainables.one_stage_golden OUT.json` runs, for gran_hbn, branchynet and
better_mistakes, one trial of a fixed configuration (drawn from the space under a seeded Optuna
sampler) on tiny synthetic data, 2 epochs, 1 CPU thread, and writes per epoch the training and
calibration losses and per calibration point its deterministic metrics (latency is measured, so
it is left out). The committed golden/one_stage.json was written by the loop as it stood at
commit 720d122, before training plans existed.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import optuna

SPACES = ("gran_hbn", "branchynet", "better_mistakes")
CAL = {"n_trials": 16, "neighbours": 4, "population": 8, "levels": 16, "max_points": 8}
SKIP = ("latency", "speedup", "seconds")  # measured, not computed


def config_of(space_name: str) -> dict[str, Any]:
    from spaces import get_space

    space = get_space(space_name)
    budget = space.budget("smoke")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    const = space.define(trial, budget) or {}
    cfg = {**trial.params, **const, "epochs": 2}
    return cfg


def run_one(space_name: str, trial_dir: Path) -> dict[str, Any]:
    from spaces import get_space
    from trainables.engine.loop import LocalReporter, TrialContext, run_trial

    space = get_space(space_name)
    budget = space.budget("smoke")
    fam = space.family(budget, space.resolve_options({}))
    if fam.calibration:
        fam.calibration.update(CAL)
    cfg = config_of(space_name)
    ctx = TrialContext(trial_dir=str(trial_dir), reporter=LocalReporter(trial_dir), data="synthetic", data_size="tiny",
                       epochs=2, cpu_threads=1, seed=7, data_seed=0)
    run_trial(fam, cfg, ctx)
    curves = json.loads((trial_dir / "curves.json").read_text())
    points = json.loads((trial_dir / "points.json").read_text())["points"]

    def keep(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if isinstance(v, (int, float, list)) and not isinstance(v, bool)
                and not any(s in k for s in SKIP)}

    return {"config": cfg,
            "curves": [{"train_loss": c["train_loss"], "calib_loss": c["calib_loss"]} for c in curves],
            "points": {p["point_id"]: keep(p) for p in points if p["split"] == "calibration"}}


def record() -> dict[str, Any]:
    out = {}
    for name in SPACES:
        with tempfile.TemporaryDirectory() as tmp:
            out[name] = run_one(name, Path(tmp) / "trial")
    return out


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(json.dumps(record(), indent=1, sort_keys=True))
