"""What a named search space is: a define-by-run function plus what its trials need.

A space's `define(trial, budget)` only calls `trial.suggest_*` and returns constants (derived
values such as `exit_after`), so the very same function serves Ray Tune's `OptunaSearch` and a
plain Optuna loop (`search.local`), and tests can run it with `optuna.trial.FixedTrial`.
The space declares the outer search's objectives with their directions; a trial reports a value
for each. Spaces whose trials yield many operating points report one scalar (the hypervolume of
the trial's calibration front); spaces whose trials yield one point report that point's values
and the outer search is multi-objective over them. The same code path handles both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Budget", "Space"]


@dataclass(frozen=True)
class Budget:
    """How much a run may spend: `smoke` proves the pipeline in minutes on 2 CPU cores,
    `full` is a real search on a GPU."""

    name: str
    epochs: int  # most epochs a trial trains for
    data_size: str  # "smoke" (subset) | "full"
    trials: int  # default number of trials
    calibration: dict[str, Any] = field(default_factory=dict)  # kwargs of trainables.exits.calibrate


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    define: Callable[..., dict[str, Any] | None]  # define(trial, budget) -> constants
    trainable: Callable[..., dict[str, Any]]  # train(config, ctx) -> final metrics
    objectives: dict[str, str]  # outer-search metric -> "max" | "min"
    point_objectives: dict[str, str]  # what one operating point is scored on
    largest_configs: Callable[[Budget], list[dict[str, Any]]]  # candidates for the cost normaliser
    default_data: str
    budgets: dict[str, Budget]

    def search_space(self, budget: Budget) -> Callable[[Any], dict[str, Any] | None]:
        """The define-by-run function, bound to a budget (picklable, for Ray's searcher)."""
        return functools.partial(self.define, budget=budget)

    def budget(self, name: str) -> Budget:
        try:
            return self.budgets[name]
        except KeyError:
            raise ValueError(f"space {self.name!r} has no budget {name!r}; known: {', '.join(self.budgets)}") from None
