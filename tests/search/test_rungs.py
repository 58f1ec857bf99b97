"""The rung rules of search/rungs.py on hand-made rungs: non-dominated sorting with ties, duplicates and
missing values, the epsilon-net order, ASHA's rule on one objective, three objectives, the
weighted-sum baseline, and the promise that a trial non-dominated at its rung always goes on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from search.rungs import as_minimisation, epsilon_net_order, goes_on, nondominated_ranks, rung_order, weighted_sum_order


def test_nondominated_ranks_with_ties_duplicates_and_nan():
    pts = np.array([[1, 5], [2, 2], [5, 1], [2, 2], [3, 3], [4, 4], [np.nan, 0]], dtype=float)
    # equal points share a front; NaN counts as the worst value of its objective, so [nan, 0] is still unbeaten on f2
    assert nondominated_ranks(pts).tolist() == [0, 0, 0, 0, 1, 2, 0]
    assert nondominated_ranks(np.array([[3.0], [1.0], [2.0], [1.0]])).tolist() == [2, 0, 1, 0]
    # a tie on one objective: [1, 2] dominates [1, 3] (<= both, < one)
    assert nondominated_ranks(np.array([[1.0, 3.0], [1.0, 2.0]])).tolist() == [1, 0]
    assert nondominated_ranks(np.zeros((0, 2))).tolist() == []


def test_as_minimisation_negates_maximised_objectives():
    assert as_minimisation([[0.9, 2.0]], ["max", "min"]).tolist() == [[-0.9, 2.0]]


def test_one_objective_is_ashas_rule():
    # the plain order of the values, ties to the earlier arrival
    assert rung_order(np.array([[3.0], [1.0], [2.0], [1.0]])).tolist() == [1, 3, 2, 0]
    assert weighted_sum_order(np.array([[3.0], [1.0], [2.0], [1.0]])).tolist() == [1, 3, 2, 0]
    rng = np.random.default_rng(0)
    for n in range(1, 12):
        values = rng.permutation(n).astype(float)[:, None]
        for rf in (2.0, 3.0):
            # the newest arrival goes on iff it is among the best ceil(n / rf) values recorded: ASHA's promotion rule
            expected = int(np.sum(values[:, 0] < values[-1, 0])) < math.ceil(n / rf)
            assert goes_on(values, n - 1, rf) == expected == goes_on(values, n - 1, rf, "weighted_sum")


def test_epsilon_net_order_three_objectives_and_ties():
    front = np.array([[0.0, 1.0, 1.0], [0.1, 0.9, 0.95], [1.0, 0.0, 0.5], [0.5, 0.5, 0.0]])
    # the best in the first objective, then the farthest from it (scaled), then the farthest from both, ...
    assert epsilon_net_order(front).tolist() == [0, 2, 3, 1]
    # duplicates: at distance zero from the one taken, they come last, in arrival order
    dup = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert epsilon_net_order(dup).tolist() == [0, 1, 2, 3]
    # a tie on the first objective goes to the next objective, then to the earlier arrival
    assert epsilon_net_order(np.array([[0.0, 1.0], [0.0, 0.5], [1.0, 0.0]]))[0] == 1
    assert epsilon_net_order(np.array([[0.0, 1.0], [0.0, 1.0]])).tolist() == [0, 1]
    assert epsilon_net_order(np.zeros((0, 3))).tolist() == []


def test_rung_order_is_by_front_then_spread_and_ignores_units():
    rung = np.array([[4, 4, 4], [1, 9, 5], [2, 2, 2], [9, 1, 5], [5, 5, 1], [3, 3, 3], [9, 9, 9]], dtype=float)
    order = rung_order(rung)
    assert nondominated_ranks(rung).tolist() == [2, 0, 0, 0, 0, 1, 3]
    assert order[:4].tolist() == [1, 3, 4, 2]  # front 0: best f1, then the farthest (scaled), ...
    assert order[4:].tolist() == [5, 0, 6]
    # an objective in other units (FLOPs beside an error rate) changes nothing: each is scaled over the front
    assert (rung_order(rung * np.array([1.0, 1e9, 1e-3])) == order).all()


def test_a_trial_nondominated_at_its_rung_always_goes_on():
    rung = np.array([[1, 9], [2, 8], [3, 7], [4, 6], [5, 5], [9, 9]], dtype=float)
    # six at the rung, rf 2: three would go on by rank, but all five non-dominated ones do
    assert [goes_on(rung, i, 2.0) for i in range(6)] == [True] * 5 + [False]
    # the weighted-sum baseline keeps its top three only (scaled sums 1, .875, .75, .625, .5, 2), non-dominated or not
    assert [goes_on(rung, i, 2.0, "weighted_sum") for i in range(6)] == [False, False, True, True, True, False]
    chain = np.array([[1, 1], [2, 2], [3, 3], [4, 4]], dtype=float)
    assert [goes_on(chain, i, 2.0) for i in range(4)] == [True, True, False, False]
    rng = np.random.default_rng(1)
    for _ in range(200):
        pts = rng.integers(0, 4, size=(int(rng.integers(1, 9)), 3)).astype(float)  # small integers: many ties
        cand = int(rng.integers(len(pts)))
        if nondominated_ranks(pts)[cand] == 0:
            assert goes_on(pts, cand, 3.0)


def test_weighted_sum_scales_each_objective_over_the_rung():
    rung = np.array([[0.0, 1e9], [1.0, 0.0], [0.2, 2e8]])  # scaled: [0, 1], [1, 0], [0.2, 0.2]
    assert weighted_sum_order(rung).tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="not one of pareto, weighted_sum"):
        rung_order(rung, "crowding")
