"""A learning-curve simulator, registered as the search space `simulated_curves`: trials that "train"
in a fraction of a second, through the real search path (Ray Tune, the Optuna searcher, the
scheduler, the trial files, collect, the report), with two objectives that improve with epochs at
trial-specific rates. Used by the scheduler tests (tests/search/test_moasha.py) and by
`python3 -m benchmarks.mo_early_stopping`.

Register it by naming this module in EXITSEARCH_SPACES (the driver and every Ray worker import it):

    EXITSEARCH_SPACES=benchmarks.learning_curves python3 -m search.run --space simulated_curves --data synthetic

The simulated problem (both objectives minimised; fixed before any benchmark was run):

* searched: `angle` in [0, 1] (where on the trade-off a trial lands), `x1`, `x2` in [0, 1] (how
  far from the best trade-off: g = 2 ((x1 - 0.5)^2 + (x2 - 0.5)^2)), `lr` in [1e-4, 1] (log);
* final values (after the budget's epochs, noise aside): (1 + g + p) (cos a, sin a) with
  a = angle * pi / 2 and p = 0.25 ((log10 lr + 1.5) / 2.5)^2 (too small or too large a learning
  rate ends worse): the best trade-offs lie on the quarter circle of radius 1;
* learning curve: value(t) = final + (1, 1) exp(-r t) after t epochs, with r = 1.5 * 10^(log10(lr) / 2)
  per epoch: a large learning rate learns fast and ends worse, a small one slowly, so curves cross;
* noise: each epoch's values times (1 + 0.02 e), e standard normal from the trial's seed and epoch.

Each simulated epoch sleeps the budget's `seconds_per_epoch`, so wall time means something. The
trial writes what an engine trial writes (status.json, curves.json with per-epoch `ended_at`,
points.json, a checkpoint per epoch) and resumes from its checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from spaces import Budget, Space, register_space
from trainables.atomic import write_json
from trainables.contract import Column, Declaration, ReportSpec, Selection
from trainables.engine.family import point_rows

__all__ = ["DECLARATION", "OBJECTIVES", "final_values", "values_at"]

OBJECTIVES = ("f1", "f2")
BUDGETS = {
    # tests: eight epochs (rungs 1, 2, 4), a hundredth of a second each
    "smoke": Budget("smoke", epochs=8, data_size="tiny", trials=12, calibration={"seconds_per_epoch": 0.01}),
    # the benchmark: sixteen epochs (rungs 1, 2, 4, 8), a tenth of a second each
    "full": Budget("full", epochs=16, data_size="tiny", trials=32, calibration={"seconds_per_epoch": 0.1}),
    # the same with a third (rungs 1, 3, 9) and a quarter (rungs 1, 4) of a rung's trials going on: Syne Tune's
    # and Ray Tune's default reduction factors, for the benchmark's sweep (--sim-budgets)
    "full-rf3": Budget("full-rf3", epochs=16, data_size="tiny", trials=32, calibration={"seconds_per_epoch": 0.1},
                       reduction_factor=3.0),
    "full-rf4": Budget("full-rf4", epochs=16, data_size="tiny", trials=32, calibration={"seconds_per_epoch": 0.1},
                       reduction_factor=4.0),
}

DECLARATION = Declaration(
    yields="point",
    point=tuple(Column(n, direction="min", description=f"simulated objective {n} after the trial's epochs")
                for n in OBJECTIVES),
    policy=(),
    trial=(),
    curves=tuple(Column(n, direction="min", description=f"simulated objective {n} after this epoch") for n in OBJECTIVES),
    point_objectives=OBJECTIVES,
    objectives={n: "min" for n in OBJECTIVES},
    report=ReportSpec(fronts=(OBJECTIVES,), table=OBJECTIVES, epoch_panels=OBJECTIVES,
                      key_config=("angle", "x1", "x2", "lr")),
    selection=Selection(best="f1", tie_break="f2", description="the front point with the lowest f1"),
    notes={"simulator": "benchmarks/learning_curves.py: no network is trained"},
)


def define(trial, budget: Budget) -> None:
    trial.suggest_float("angle", 0.0, 1.0)
    trial.suggest_float("x1", 0.0, 1.0)
    trial.suggest_float("x2", 0.0, 1.0)
    trial.suggest_float("lr", 1e-4, 1.0, log=True)


def final_values(config: Mapping[str, Any]) -> np.ndarray:
    """The objectives a trial ends at, noise aside."""
    g = 2.0 * ((config["x1"] - 0.5) ** 2 + (config["x2"] - 0.5) ** 2)
    p = 0.25 * ((math.log10(config["lr"]) + 1.5) / 2.5) ** 2
    a = config["angle"] * math.pi / 2
    return (1.0 + g + p) * np.array([math.cos(a), math.sin(a)])


def values_at(config: Mapping[str, Any], seed: int, epoch: int) -> np.ndarray:
    """The objectives after `epoch` epochs of a trial with this config and seed."""
    rate = 1.5 * 10.0 ** (math.log10(config["lr"]) / 2.0)
    noise = np.random.default_rng([int(seed) % 2**32, int(epoch)]).standard_normal(len(OBJECTIVES))
    return (final_values(config) + np.exp(-rate * epoch)) * (1.0 + 0.02 * noise)


@dataclass(frozen=True)
class _Family:
    """What the driver asks of a family before trials start: the declaration and a data check."""

    declaration: Declaration = DECLARATION

    def check(self, data: Any) -> None:
        return None

    def check_data(self, data: Any) -> None:  # a simulated trial takes any dataset
        return None

    def fetch(self, download: bool) -> None:  # nothing beyond the dataset
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass(frozen=True)
class SimulatedSpace(Space):
    """A space whose trials are simulated learning curves instead of trained networks."""

    def train(self, config: dict[str, Any], ctx, budget: Budget, options: Mapping[str, str] | None = None) -> dict[str, Any]:
        trial_dir = Path(ctx.trial_dir)
        trial_dir.mkdir(parents=True, exist_ok=True)
        seconds = float(budget.calibration.get("seconds_per_epoch", 0.0))
        start, curves = 0, []
        ckpt = ctx.reporter.get_checkpoint()
        if ckpt is not None:
            state = json.loads((Path(ckpt) / "state.json").read_text())
            start, curves = int(state["epoch"]), list(state["curves"])
            if start >= budget.epochs and (trial_dir / "points.json").exists():
                return {}  # it had finished (a search resumed after a kill restarts it): its status stays complete
        try:
            starts = json.loads((trial_dir / "status.json").read_text()).get("starts", [])
        except (OSError, ValueError):
            starts = []
        status: dict[str, Any] = {
            "status": "running", "trial_id": ctx.trial_id, "epochs_planned": budget.epochs, "epochs_done": start,
            "seed": ctx.seed, "config": config, "provenance": {"device": "simulated", "hostname": socket.gethostname(),
                                                                "pid": os.getpid(), "workers": 1},
            "starts": [*starts, {"from_epoch": start, "pid": os.getpid(), "at": _now()}],
            "updated_at": _now(),
        }
        write_json(trial_dir / "status.json", status)
        metrics: dict[str, Any] = {}
        for epoch in range(start + 1, budget.epochs + 1):
            t0 = time.perf_counter()
            time.sleep(seconds)
            values = dict(zip(OBJECTIVES, values_at(config, ctx.seed, epoch).tolist()))
            curves.append({"epoch": epoch, "epoch_seconds": time.perf_counter() - t0, "ended_at": _now(), **values})
            write_json(trial_dir / "curves.json", curves)
            done = epoch == budget.epochs
            if done:
                rows = point_rows("final/0", "final", reference=False, trial_front=True, params={},
                                  by_split={"calibration": values, "test": values})
                write_json(trial_dir / "points.json", {"points": rows, "trial": {}})
            status.update(epochs_done=epoch, status="complete" if done else "running", signal=values, updated_at=_now())
            write_json(trial_dir / "status.json", status)
            metrics = {"epoch": epoch, "fidelity": epoch / budget.epochs, **values}
            with tempfile.TemporaryDirectory() as tmp:
                write_json(Path(tmp) / "state.json", {"epoch": epoch, "curves": curves})
                ctx.reporter.report(metrics, tmp)
        return metrics


@register_space
def simulated_curves() -> Space:
    """Simulated learning curves of two objectives (benchmarks/learning_curves.py)."""
    return SimulatedSpace(
        name="simulated_curves", description="simulated learning curves, two objectives (scheduler tests and benchmark)",
        define=define, family=lambda budget, options: _Family(), largest_configs=lambda budget: [],
        default_data="synthetic", budgets=dict(BUDGETS))
