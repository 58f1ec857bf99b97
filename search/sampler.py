"""The outer search's Optuna sampler: TPE that learns what the rungs taught from trials a scheduler
stopped, without ever taking their partial values for final ones.

A trial stopped at a rung reaches Optuna as PRUNED (search/tuner.py), with user attributes
`rung_epoch` (the epochs it trained) and `rung_values` (its objective vector there). Optuna 5's
TPESampler learns from COMPLETE and PRUNED trials: it splits them into a good group (`below`,
ceil(0.1 n) trials) and the rest (`above`), complete trials first, in their own order (by value;
multi-objective: non-dominated rank, ties by hypervolume subset selection), then pruned ones by
their last intermediate value, furthest step first (optuna/samplers/_tpe/sampler.py:
`_split_trials`, `_get_pruned_trial_score`). In a single-objective study Ray's OptunaSearch
reports every result as an intermediate value, so Optuna already orders pruned trials by how far
they got, then by value: the order below, for one objective. A multi-objective study cannot hold
intermediate values (`Trial.report` refuses; OptunaSearch reports none), so there every pruned
trial scores the same, (1, 0.0): pruned trials are not dropped, but they are not ranked either,
and whenever fewer trials completed than the good group holds, the *earliest* pruned trials fill
it, whatever their rungs said (Optuna sorts stably, so they keep the order the study lists them in).

`RungTPESampler` lists the pruned trials to TPE in the order the rungs taught instead: the
furthest rung first, then by non-dominated rank among the trials stopped at that rung (on their
rung values, in the study's directions), then by trial number; pruned trials without rung
attributes come last. Complete trials keep Optuna's own order and always come before every
pruned one, and no pruned trial's values are compared with a complete trial's. Everything else is
TPESampler's. Whether it helps is measured by `python3 -m benchmarks.mo_early_stopping`
(sampler ablation).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from optuna.samplers import TPESampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from search.rungs import as_minimisation, nondominated_ranks

__all__ = ["RUNG_EPOCH", "RUNG_VALUES", "RungTPESampler", "rung_order_of_pruned"]

RUNG_EPOCH, RUNG_VALUES = "rung_epoch", "rung_values"


def rung_order_of_pruned(trials: list[FrozenTrial], directions: list[StudyDirection]) -> list[FrozenTrial]:
    """Pruned trials, best first by what their rungs taught (see the module docstring)."""
    modes = ["max" if d == StudyDirection.MAXIMIZE else "min" for d in directions]
    taught: dict[int, list[FrozenTrial]] = {}
    rest = []
    for t in trials:
        epoch, values = t.user_attrs.get(RUNG_EPOCH), t.user_attrs.get(RUNG_VALUES)
        if isinstance(epoch, (int, float)) and isinstance(values, list) and len(values) == len(modes):
            taught.setdefault(int(epoch), []).append(t)
        else:
            rest.append(t)
    out: list[FrozenTrial] = []
    for epoch in sorted(taught, reverse=True):
        group = sorted(taught[epoch], key=lambda t: t.number)
        pts = as_minimisation([[float("nan") if v is None else float(v) for v in t.user_attrs[RUNG_VALUES]] for t in group],
                              modes)
        ranks = nondominated_ranks(pts)
        out += [group[i] for i in np.lexsort((np.arange(len(group)), ranks))]
    return out + sorted(rest, key=lambda t: t.number)


class _RungOrderedStudy:
    """A study as TPE reads it, with its pruned trials listed in rung order (every other attribute is the study's)."""

    def __init__(self, study: Any) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, *args: Any, **kwargs: Any) -> list[FrozenTrial]:
        trials = self._study._get_trials(*args, **kwargs)
        pruned = [t for t in trials if t.state == TrialState.PRUNED]
        if len(pruned) < 2:
            return trials
        others = [t for t in trials if t.state != TrialState.PRUNED]
        return others + rung_order_of_pruned(pruned, self._study.directions)


class RungTPESampler(TPESampler):
    """TPESampler whose pruned trials are ranked by rung, then by Pareto rank at that rung."""

    def _sample(self, study: Any, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return super()._sample(_RungOrderedStudy(study), trial, search_space)
