"""The network without early exits, as an operating point of every early-exit trial.

An early-exit point is worth having only if it beats the network it was made from: the same
stages with no early head and no decision on the way, answering at the last exit's first level
(`DynamicClassifier(..., without_exits=True)`). Every early-exit family offers it as one more
operating point of each trial (policy `plain`, the bool policy column `plain` set): its accuracy
is the last exit's, its cost the plain network's (`ExitCache.plain`: FLOPs counted, latency
measured by trainables/engine/cost.py). It is not a reference policy: it is eligible for the
trial's and the run's fronts, so a default rule that picks the fastest point at some accuracy never
returns one slower than it at no better accuracy, and the report marks it.

A family scores it with its own metrics (`with_plain`): the plain network is scored as "everyone
answers at the last exit" on a copy of the statistics whose every exit costs the plain network's
cost (no sample answers elsewhere, so only the last exit's cost counts).

Pure: numpy only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from trainables.contract import Column
from trainables.exits.cache import ExitStats
from trainables.exits.policy import PointScores, answer_at, evaluate_dense

__all__ = ["PLAIN", "PLAIN_COLUMN", "plain_metrics", "plain_stats", "plain_thresholds", "with_plain"]

PLAIN = "plain"  # the plain point's policy, and its bool policy column
PLAIN_COLUMN = Column(PLAIN, "bool", description="the network without early exits (every stage, then the last exit's "
                                                 "heads only): accuracy of the last exit, cost of the plain network")


def plain_thresholds(n_levels: int, n_exits: int) -> np.ndarray:
    """The plain point's thresholds (L, K): every sample answers at the last exit, at the first level."""
    return answer_at(n_levels, n_exits, n_exits - 1)


def plain_stats(stats: ExitStats) -> ExitStats | None:
    """`stats` with every exit's cost the plain network's; None when the cache lacks a plain cost
    (a cache written before plain costs were stored)."""
    if not stats.costs or any(name not in stats.plain for name in stats.costs):
        return None
    costs = {name: np.full(stats.n_exits, float(stats.plain[name])) for name in stats.costs}
    return dataclasses.replace(stats, costs=costs)


MetricsOf = Callable[[PointScores, ExitStats], Mapping[str, np.ndarray]]


def plain_metrics(metrics_of: MetricsOf, stats: ExitStats) -> dict[str, np.ndarray] | None:
    """A family's metrics (`metrics_of(scores, stats)`) of the network without early exits, as one
    setting (arrays of length 1); None when the cache lacks its costs."""
    plain = plain_stats(stats)
    if plain is None:
        return None
    t = plain_thresholds(stats.n_levels, stats.n_exits)[None]
    return {k: np.asarray(v) for k, v in metrics_of(evaluate_dense(plain, t), plain).items()}


def with_plain(metrics_of: MetricsOf, stats: ExitStats, thresholds: np.ndarray) -> tuple[dict[str, np.ndarray], bool]:
    """A family's metrics of the S settings `thresholds` (S, L, K), followed by those of the plain
    network as row S when the cache has its costs. Returns the metrics and whether that row is there."""
    m = {k: np.asarray(v) for k, v in metrics_of(evaluate_dense(stats, thresholds), stats).items()}
    p = plain_metrics(metrics_of, stats)
    if p is None:
        return m, False
    return {k: np.concatenate([v, p[k]]) for k, v in m.items()}, True
