"""Rung decisions of asynchronous successive halving on several objectives, as pure computation.

A rung holds the objective vectors of the trials that reached it, in the order they arrived. Two
rules order a rung, best first:

* `pareto` (MOASHA, Schmucker et al. 2021, as in Syne Tune): non-dominated sorting (front 0
  first), then within each front an epsilon-net: greedily the member farthest, in objectives
  scaled to [0, 1] over that front, from those already taken, starting from the best in the first
  objective (ties: the next objectives, then the earlier arrival). We take the epsilon-net over
  hypervolume contribution because it needs no reference point (a rung's values move as trials
  train, and a reference chosen for final values would cut early, poorer ones off or flatten their
  differences), it is invariant to each objective's scale and units (FLOPs beside an error rate),
  and it spreads the trials that go on along the whole front instead of favouring its knee.
* `weighted_sum` (the baseline Ray's answer to multi-objective ASHA suggests): the sum of the
  objectives, each scaled to [0, 1] over the rung, equal weights; ties: the earlier arrival.

A trial goes on from its rung when it is among the first `ceil(n / reduction_factor)` of the `n`
trials recorded there (itself included), ASHA's promotion rule; under `pareto` a trial that no
other trial at its rung dominates always goes on as well. With one objective both rules are the
plain order of the values, i.e. ASHA on that objective.

Points are given as minimisation (negate maximised objectives first: `as_minimisation`); NaN is
the worst value of its objective. No Ray, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["RULES", "as_minimisation", "epsilon_net_order", "goes_on", "nondominated_ranks", "rung_order",
           "weighted_sum_order"]

RULES = ("pareto", "weighted_sum")


def as_minimisation(points: np.ndarray | Sequence[Sequence[float]], modes: Sequence[str]) -> np.ndarray:
    """(n, d) points with every "max" objective negated."""
    sign = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    return np.asarray(points, dtype=np.float64).reshape(-1, len(sign)) * sign


def _finite(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    return np.where(np.isnan(p), np.inf, p)


def nondominated_ranks(points: np.ndarray) -> np.ndarray:
    """(n,) front index of each point (0: dominated by none); equal points share a front; NaN is worst."""
    p = _finite(points)
    ranks = np.full(len(p), -1, dtype=np.int64)
    left = np.arange(len(p))
    front = 0
    while len(left):
        sub = p[left]
        le = (sub[:, None, :] <= sub[None, :, :]).all(-1)
        lt = (sub[:, None, :] < sub[None, :, :]).any(-1)
        dominated = (le & lt).any(axis=0)  # some other point is <= everywhere and < somewhere
        ranks[left[~dominated]] = front
        left = left[dominated]
        front += 1
    return ranks


def _scaled(points: np.ndarray) -> np.ndarray:
    """Each objective scaled to [0, 1] over these points (a constant one to 0); inf stays beyond 1."""
    p = _finite(points)
    ok = np.isfinite(p)
    lo = np.where(ok, p, np.inf).min(axis=0, initial=np.inf)
    hi = np.where(ok, p, -np.inf).max(axis=0, initial=-np.inf)
    lo, hi = np.where(np.isfinite(lo), lo, 0.0), np.where(np.isfinite(hi), hi, 0.0)
    span = np.where(hi > lo, hi - lo, 1.0)
    out = np.where(ok, (np.where(ok, p, 0.0) - lo) / span, np.where(p < 0, -1.0, 2.0))
    return out  # a missing (NaN) value: 2, beyond the worst but finite for distances


def epsilon_net_order(points: np.ndarray) -> np.ndarray:
    """Indices of `points` (one front) in epsilon-net order, objectives scaled to [0, 1] over them."""
    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    scaled = _scaled(p)
    # the best in the first objective, then the next ones, then the earlier arrival (lexsort: last key first)
    first = int(np.lexsort((np.arange(n), *scaled.T[::-1]))[0])
    order = [first]
    dist = np.linalg.norm(scaled - scaled[first], axis=1)
    dist[first] = -1.0
    while len(order) < n:
        nxt = int(np.argmax(dist))  # the farthest from those taken; ties: the earlier arrival
        order.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(scaled - scaled[nxt], axis=1))
        dist[order] = -1.0
    return np.asarray(order, dtype=np.int64)


def weighted_sum_order(points: np.ndarray) -> np.ndarray:
    """Indices by the equal-weight sum of the objectives scaled to [0, 1] over the rung; ties: earlier."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) == 0:
        return np.empty(0, dtype=np.int64)
    return np.argsort(_scaled(p).sum(axis=1), kind="stable").astype(np.int64)


def rung_order(points: np.ndarray, rule: str = "pareto") -> np.ndarray:
    """Every point of a rung, best first, under `rule` (see the module docstring)."""
    p = np.asarray(points, dtype=np.float64)
    if rule == "weighted_sum":
        return weighted_sum_order(p)
    if rule != "pareto":
        raise ValueError(f"rung rule {rule!r} is not one of {', '.join(RULES)}")
    ranks = nondominated_ranks(p)
    out: list[int] = []
    for front in range(int(ranks.max()) + 1 if len(ranks) else 0):
        members = np.flatnonzero(ranks == front)
        out += members[epsilon_net_order(p[members])].tolist()
    return np.asarray(out, dtype=np.int64)


def goes_on(points: np.ndarray, candidate: int, reduction_factor: float, rule: str = "pareto") -> bool:
    """Whether trial `candidate` (a row of the rung's `points`, itself included) goes on from the rung."""
    p = np.asarray(points, dtype=np.float64)
    if rule == "pareto" and nondominated_ranks(p)[candidate] == 0:
        return True
    keep = max(1, math.ceil(len(p) / float(reduction_factor)))
    return candidate in rung_order(p, rule)[:keep].tolist()
