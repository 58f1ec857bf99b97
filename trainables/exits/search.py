"""Threshold calibration without retraining: an inner multi-objective Optuna search on cached outputs.

NSGA-II proposes a population of grid-index settings at a time (ask). Each proposal is expanded
into itself plus `neighbours` random perturbations of a few grid levels, and the whole
population with its neighbourhoods is scored in one vectorised call (BitsetEvaluator); Optuna is
told each proposal's own scores, and every scored setting joins the archive whose non-dominated
set is the result. Optuna's ask/tell costs ~3 ms per proposal on a 2-core CPU while the
evaluator scores ~10^5 settings/s, so the neighbourhoods multiply the settings examined at
almost no extra cost. The search starts from the fixed policies ("always answer at exit k,
level j"), the corners of the grid.

The objectives are whatever the family scores a setting on (a function of PointScores), so the
same search serves Gran-HBN's (accuracy, specificity, FLOPs) and BranchyNet's (accuracy, cost).
Only the calibration split is ever looked at here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from trainables.exits.cache import ExitStats
from trainables.exits.policy import BitsetEvaluator, PointScores
from trainables.pareto import hypervolume, non_dominated_mask

__all__ = ["CalibrationResult", "calibrate", "thin_front"]

Objectives = Callable[[PointScores], np.ndarray]  # scores of S settings -> (S, M) objective values


class CalibrationResult(NamedTuple):
    thresholds: np.ndarray  # (P, L, K) settings of the thinned calibration front, ordered by the last objective
    front: np.ndarray  # (F, M) objective values of the whole calibration front (before thinning)
    hypervolume: float  # of `front`, against the given reference point
    n_evaluated: int  # distinct settings scored


def calibrate(
    stats: ExitStats,
    objectives: Objectives,
    maximize: Sequence[bool],
    reference: Sequence[float],
    *,
    n_trials: int = 512,
    neighbours: int = 32,
    population: int = 64,
    levels: int = 64,
    max_points: int = 128,
    seed: int = 0,
) -> CalibrationResult:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ev = BitsetEvaluator(stats, levels=levels)
    L, K = stats.n_levels, stats.n_exits
    top = levels - 1
    free = [(j, k) for k in range(K) for j in range(L) if not (k == K - 1 and j == L - 1)]  # the last one is unused
    rng = np.random.default_rng(seed)
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    study = optuna.create_study(directions=["maximize" if m else "minimize" for m in maximize], sampler=sampler)
    dists = {f"t{j}_{k}": optuna.distributions.IntDistribution(0, top) for j, k in free}
    for j, k in free:  # the corners: "always answer at exit k, level j"
        study.enqueue_trial({f"t{a}_{b}": (top if (a, b) == (j, k) else 0) for a, b in free})

    def to_idx(trials) -> np.ndarray:
        idx = np.full((len(trials), L, K), top, dtype=np.int64)
        for i, t in enumerate(trials):
            for j, k in free:
                idx[i, j, k] = t.params[f"t{j}_{k}"]
        return idx

    archive, scored = [], []
    asked, step = 0, max(1, levels // 16)
    while asked < n_trials:
        batch = min(population, n_trials - asked)
        trials = [study.ask(dists) for _ in range(batch)]
        idx = to_idx(trials)
        if neighbours:
            jitter = rng.integers(-step, step + 1, (batch, neighbours, L, K))
            near = np.clip(idx[:, None] + jitter, 0, top).reshape(-1, L, K)
            idx = np.concatenate([idx, near])
        obj = objectives(ev.evaluate(idx))
        for t, row in zip(trials, obj[:batch]):
            study.tell(t, row.tolist())
        archive.append(idx)
        scored.append(obj)
        asked += batch
    idx = np.concatenate(archive)
    obj = np.concatenate(scored)
    idx[:, L - 1, K - 1] = top  # unused: make equal settings compare equal
    _, first = np.unique(idx.reshape(len(idx), -1), axis=0, return_index=True)
    idx, obj = idx[first], obj[first]
    mask = non_dominated_mask(obj, maximize)
    idx, front = idx[mask], obj[mask]
    # settings that score the same on calibration are one operating point there: keep the first
    _, one = np.unique(front, axis=0, return_index=True)
    one = np.sort(one)
    idx, front = idx[one], front[one]
    hv = hypervolume(front, reference, maximize)
    keep = thin_front(front, max_points, maximize)
    return CalibrationResult(ev.thresholds(idx[keep]), front, hv, int(len(first)))


def thin_front(objectives: np.ndarray, max_points: int, maximize: Sequence[bool]) -> np.ndarray:
    """Indices of at most `max_points` front points that cover it evenly, ordered by the last objective.

    Farthest-point sampling in objective space scaled to [0, 1] per objective, seeded with each
    objective's best point, so the extremes are always kept. The hypervolume a trial reports is
    that of the whole front, before thinning.
    """
    n = len(objectives)
    if n <= max_points:
        return np.argsort(objectives[:, -1], kind="stable")
    lo, hi = objectives.min(0), objectives.max(0)
    z = (objectives - lo) / np.where(hi > lo, hi - lo, 1.0)
    seeds = [int(np.argmax(z[:, j]) if maximize[j] else np.argmin(z[:, j])) for j in range(z.shape[1])]
    chosen = list(dict.fromkeys(seeds))
    dist = np.min(np.linalg.norm(z[:, None, :] - z[chosen][None, :, :], axis=2), axis=1)
    while len(chosen) < max_points:
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(z - z[i], axis=1))
    idx = np.array(chosen)
    return idx[np.argsort(objectives[idx, -1], kind="stable")]
