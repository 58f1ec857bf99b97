"""A trial's training plan: stages the shared engine runs in order, and the stop rule of a stage.

A family turns a searched config into a plan (`Family.plan`); the engine (trainables/engine/loop.py)
runs any plan, so every family gets checkpoints, resume, precision, data-parallel workers and
reporting for every stage without a line of its own. A stage says, as data (the way timm's
train.py and cleanrl keep a training phase as a config rather than branches in a loop):

* what trains: parameter-name prefixes (`trains`); everything else is frozen — no gradient, no
  optimiser state, and its BatchNorm running statistics untouched (frozen modules run in eval
  mode while the stage trains). None trains every parameter;
* its optimiser and schedule: `overrides` of the searched config's keys for this stage
  (`optimizer`, `lr`, `weight_decay`, `lr_schedule`, ... and the family's loss keys), read by
  trainables/engine/optim.py and the family's `make_loss` exactly as the config's own;
* its epochs, and an optional `StopRule`: patience and min delta on a metric of the family's
  per-epoch evaluation of the calibration split; when it fires, the stage ends and the weights
  of its best epoch are restored.

Epochs count over the whole plan: a trial's `epochs_planned` is the sum of its stages' epochs;
its position after epoch e of stage s is the epochs of the stages before s plus e + 1 (a stage
that stopped early leaves its remaining epochs unspent, and its position jumps to its end), so
`fidelity` = position / epochs_planned rises to 1 exactly when the plan is done.

Pure data and arithmetic: no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Plan", "Stage", "StopRule", "StopTracker", "one_stage"]


@dataclass(frozen=True)
class StopRule:
    """Stop a stage once `metric` has not improved by more than `min_delta` for `patience` epochs."""

    metric: str  # a key of the family's per-epoch Evaluation (signal first, then curve)
    mode: str = "max"  # "max" | "min"
    patience: int = 3
    min_delta: float = 0.0
    restore_best: bool = True  # end the stage with the weights of its best epoch

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"stop rule on {self.metric!r}: mode must be 'max' or 'min', got {self.mode!r}")
        if self.patience < 1:
            raise ValueError(f"stop rule on {self.metric!r}: patience must be >= 1, got {self.patience}")
        if not (self.min_delta >= 0 and math.isfinite(self.min_delta)):
            raise ValueError(f"stop rule on {self.metric!r}: min_delta must be finite and >= 0, got {self.min_delta}")


@dataclass(frozen=True)
class Stage:
    name: str
    epochs: int
    trains: tuple[str, ...] | None = None  # parameter-name prefixes that train; None: all of them
    overrides: Mapping[str, Any] = field(default_factory=dict)  # config keys for this stage (optimiser, schedule, loss)
    stop: StopRule | None = None

    def __post_init__(self) -> None:
        if int(self.epochs) != self.epochs or self.epochs < 1:
            raise ValueError(f"stage {self.name!r}: epochs must be a whole number >= 1, got {self.epochs}")
        if self.trains is not None and not self.trains:
            raise ValueError(f"stage {self.name!r} trains nothing: give parameter prefixes, or None for all")

    def config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The searched config as this stage reads it."""
        return {**config, **self.overrides}

    def trainable(self, name: str) -> bool:
        """Whether the parameter (or module) `name` trains in this stage."""
        if self.trains is None:
            return True
        return any(name == p or name.startswith(p + ".") for p in self.trains)


@dataclass(frozen=True)
class Plan:
    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a training plan needs at least one stage")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")

    @property
    def epochs(self) -> int:
        return int(sum(s.epochs for s in self.stages))

    def offset(self, stage: int) -> int:
        """Epochs of the stages before `stage`."""
        return int(sum(s.epochs for s in self.stages[:stage]))

    def position(self, stage: int, epoch_in_stage: int) -> int:
        """Plan position (1-based epochs) after epoch `epoch_in_stage` (0-based) of `stage`."""
        return self.offset(stage) + epoch_in_stage + 1

    def describe(self) -> list[dict[str, Any]]:
        """The plan as plain data (status.json)."""
        return [{"name": s.name, "epochs": s.epochs, "trains": list(s.trains) if s.trains is not None else None,
                 "overrides": dict(s.overrides),
                 "stop": None if s.stop is None else {"metric": s.stop.metric, "mode": s.stop.mode,
                                                       "patience": s.stop.patience, "min_delta": s.stop.min_delta,
                                                       "restore_best": s.stop.restore_best}}
                for s in self.stages]


def one_stage(epochs: int) -> Plan:
    """Every parameter trains for `epochs` with the config's optimiser and schedule: the plan of a
    family that declares none."""
    return Plan((Stage("train", int(epochs)),))


@dataclass
class StopTracker:
    """The state of a stop rule over one stage (kept in checkpoints, so a resume goes on counting)."""

    rule: StopRule
    best: float | None = None
    best_epoch: int = -1  # epoch within the stage (0-based) of the best value
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> tuple[bool, bool]:
        """Record epoch `epoch`'s value: (is it the new best, should the stage stop now). A NaN
        value never improves."""
        v = float(value)
        sign = 1.0 if self.rule.mode == "max" else -1.0
        improved = math.isfinite(v) and (self.best is None or sign * (v - self.best) > self.rule.min_delta)
        if improved:
            self.best, self.best_epoch, self.bad_epochs = v, int(epoch), 0
        else:
            self.bad_epochs += 1
        return improved, self.bad_epochs >= self.rule.patience

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    @classmethod
    def restore(cls, rule: StopRule, state: Mapping[str, Any] | None) -> StopTracker:
        s = dict(state or {})
        return cls(rule, s.get("best"), int(s.get("best_epoch", -1)), int(s.get("bad_epochs", 0)))


def metric_of(name: str, signal: Mapping[str, Any], curve: Mapping[str, Any]) -> float:
    """A stop rule's metric from an epoch's evaluation: the signal's value, else the curve's."""
    for source in (signal, curve):
        if name in source:
            return float(source[name])
    known: Sequence[str] = [*signal, *curve]
    raise KeyError(f"stop rule metric {name!r} is not in the family's evaluation ({', '.join(known)})")
