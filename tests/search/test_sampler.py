"""The outer search's sampler (search/sampler.py): trials a scheduler stopped are ranked by their rung,
then by their Pareto rank there, and TPE learns from that order instead of their trial numbers."""

from __future__ import annotations

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from search.sampler import RUNG_EPOCH, RUNG_VALUES, RungTPESampler, rung_order_of_pruned


X = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}


def _add(study, x, state, values=None, epoch=None, rung_values=None):
    attrs = {RUNG_EPOCH: epoch, RUNG_VALUES: rung_values} if epoch is not None else {}
    study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions=X, values=values, state=state, user_attrs=attrs))


def test_pruned_trials_are_ordered_by_rung_then_pareto_rank_then_number():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "maximize"])
    # (rung epochs, values): numbers 0..6
    for epoch, values in [(1, [0.5, 0.5]), (2, [0.9, 0.1]), (1, [0.1, 0.9]), (None, None), (2, [0.8, 0.2]),
                          (1, [0.6, 0.4]), (2, [0.95, 0.05])]:
        _add(study, 0.5, TrialState.PRUNED, epoch=epoch, rung_values=values)
    order = [t.number for t in rung_order_of_pruned(study.trials, study.directions)]
    # rung 2 first: 4 (dominates 1, which dominates 6); rung 1 (f1 minimised, f2 maximised): 2 dominates 0,
    # which dominates 5; 3 has no rung attributes: last
    assert order == [4, 1, 6, 2, 0, 5, 3]
    # one objective, maximised: the higher value first at a rung
    one = [optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={RUNG_EPOCH: 1, RUNG_VALUES: [v]}) for v in (0.1, 0.3)]
    for n, t in enumerate(one):
        t.number = n
    assert [t.user_attrs[RUNG_VALUES][0] for t in rung_order_of_pruned(one, [StudyDirection.MAXIMIZE])] == [0.3, 0.1]


def test_tpe_learns_from_the_best_stopped_trials_not_the_earliest():
    """One complete trial and thirteen stopped ones: TPE's good group holds ceil(0.1 * 14) = 2 trials, so
    one stopped trial joins the complete one. Stock TPE takes the earliest stopped trial (in a
    multi-objective study they all score alike); RungTPESampler takes the one stopped at the
    furthest rung. The early ones sit near x = 0.1, the far one at x = 0.9, so samples move there."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    share = {}
    for name, cls in (("stock", optuna.samplers.TPESampler), ("rung", RungTPESampler)):
        study = optuna.create_study(directions=["minimize", "minimize"],
                                    sampler=cls(seed=0, n_startup_trials=1, multivariate=True))
        _add(study, 0.5, TrialState.COMPLETE, values=[0.5, 0.5])
        for k in range(12):  # stopped at the first rung
            _add(study, 0.05 + 0.01 * k, TrialState.PRUNED, epoch=1, rung_values=[1.0 + 0.01 * k, 1.0])
        _add(study, 0.9, TrialState.PRUNED, epoch=4, rung_values=[0.6, 0.6])  # stopped at the third rung
        xs = []
        for _ in range(40):
            t = study.ask()
            xs.append(t.suggest_float("x", 0.0, 1.0))
            study.tell(t, None, state=TrialState.FAIL)  # failed asks teach TPE nothing
        share[name] = float(np.mean(np.array(xs) > 0.7))
    assert share["rung"] > share["stock"] + 0.15, share
