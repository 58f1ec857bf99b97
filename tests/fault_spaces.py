"""Test-only spaces, registered through EXITSEARCH_SPACES so that Ray workers see them too.

`tiny_gran`: gran_hbn's own define-by-run function on a tiny budget.
`single_point`: the same trials, judged by one point (final-exit accuracy, its cost).
`faulty`: the same, plus a searched `fault` that makes a trial raise, diverge (NaN loss through
a huge learning rate), or train normally, to check that one failed trial never sinks a search.
"""

from __future__ import annotations

from spaces import Budget, Space, register_space
from spaces.gran_hbn import define as gran_define
from spaces.gran_hbn import largest_configs
from trainables.exits import POINT_OBJECTIVES
from trainables.loop import train

TINY = Budget("smoke", epochs=1, data_size="tiny", trials=3,
              calibration={"n_trials": 32, "neighbours": 4, "population": 16, "levels": 16, "max_points": 16})


def tiny_define(trial, budget):
    out = gran_define(trial, budget)
    return out


def faulty_define(trial, budget):
    out = gran_define(trial, budget)
    # by the Optuna trial number, so the pattern does not depend on what the sampler draws:
    # trial 1, 4, ... raise; trial 2, 5, ... diverge; the others train normally
    return {**out, "fault": {1: "raise", 2: "nan"}.get(trial.number % 3, "none")}


def faulty_train(config, ctx):
    fault = config.get("fault", "none")
    if fault == "raise":
        raise RuntimeError("injected failure for the test")
    if fault == "nan":
        config = {**config, "optimizer": "sgd", "lr": 1e30, "lr_schedule": "multistep"}
    return train(config, ctx)


def _space(name, define, trainable):
    return Space(name=name, description="test space", define=define, trainable=trainable,
                 objectives={"hypervolume": "max"}, point_objectives=dict(POINT_OBJECTIVES),
                 largest_configs=largest_configs, default_data="synthetic", budgets={"smoke": TINY})


@register_space
def single_point():
    """A space whose trial yields one operating point: the outer search is multi-objective."""
    space = _space("single_point", tiny_define, train)
    return Space(**{**space.__dict__, "objectives": {"final_fine_acc": "max", "final_exit_flops_norm": "min"}})


@register_space
def tiny_asha():
    """Three epochs a trial, so an ASHA scheduler has something to stop."""
    space = _space("tiny_asha", tiny_define, train)
    budget = Budget("smoke", epochs=3, data_size="tiny", trials=6, calibration=TINY.calibration)
    return Space(**{**space.__dict__, "budgets": {"smoke": budget}})


@register_space
def tiny_gran():
    return _space("tiny_gran", tiny_define, train)


@register_space
def faulty():
    return _space("faulty", faulty_define, faulty_train)
