"""The exit policy, written once, and its evaluation over many threshold settings.

Policy (per sample; exits k = 0..K-1; answer levels j = 0..L-1, e.g. fine then coarse): at exit
k, answer at the first level j whose normalised entropy passes its threshold t[j, k]; if none
passes, go on to the next exit. At the last exit the last level answers whatever is left, so
t[L-1, K-1] is unused. With one level (BranchyNet) this is "exit where entropy <= t[k]"; with
fine and coarse levels it is Gran-HBN's fine -> coarse -> go deeper rule.

`cascade_step` is that rule at one exit, using only &, | and ~, so the same function decides on
numpy bool arrays (`apply_policy`, `evaluate_dense`), packed 64-sample bitsets
(`BitsetEvaluator`) and torch tensors during dynamic inference (trainables/dynamic.py).

Speed: thresholds live on a per-(level, exit) grid of the calibration entropies' quantiles, so
"which samples pass" is a precomputed bitset per grid value and a setting costs a few ANDs and
popcounts over N/64 words; `benchmarks/calibration.py` measures it against `evaluate_dense`,
which is also the exact reference the tests check it against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from trainables.exits.cache import ExitStats

__all__ = [
    "ALWAYS",
    "NEVER",
    "BitsetEvaluator",
    "PointScores",
    "answer_at",
    "apply_policy",
    "cascade_step",
    "evaluate_dense",
    "fixed_policies",
]

NEVER = -1.0  # a threshold no normalised entropy (>= 0) passes
ALWAYS = 2.0  # a threshold every normalised entropy (<= 1) passes


def cascade_step(undecided: Any, passes: Sequence[Any], last: bool) -> list[Any]:
    """Which undecided samples answer at each level of one exit (masks of the same kind)."""
    out = []
    for j, p in enumerate(passes):
        go = undecided if (last and j == len(passes) - 1) else undecided & p
        out.append(go)
        undecided = undecided & ~go
    return out


class PointScores(NamedTuple):
    """Scores of S settings: arrays of length S; fractions (S, L) and (S, K)."""

    accuracy: np.ndarray  # right at the level answered
    level_fraction: np.ndarray  # (S, L) fraction answered at each level
    exit_fraction: np.ndarray  # (S, K) fraction answered at each exit
    risk: np.ndarray | None  # fraction the last exit gets right (level 0) but the answer is wrong; None if not computed

    def expected(self, per_exit: np.ndarray) -> np.ndarray:
        """Expected per-image value of a per-exit quantity (cumulative cost) under each setting."""
        return self.exit_fraction @ np.asarray(per_exit, dtype=np.float64)


def _as_settings(thresholds: np.ndarray, stats: ExitStats) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim == 2:
        t = t[None]
    if t.shape[1:] != (stats.n_levels, stats.n_exits):
        raise ValueError(f"thresholds must be (S, {stats.n_levels}, {stats.n_exits}), got {t.shape}")
    return t


def apply_policy(stats: ExitStats, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample under one setting (L, K): (exit index, level index, answer right?)."""
    t = _as_settings(thresholds, stats)[0]
    L, K, N = stats.entropy.shape
    exit_at = np.zeros(N, dtype=np.int64)
    level = np.zeros(N, dtype=np.int64)
    undecided = np.ones(N, dtype=bool)
    for k in range(K):
        goes = cascade_step(undecided, [stats.entropy[j, k] <= t[j, k] for j in range(L)], k == K - 1)
        for j, go in enumerate(goes):
            exit_at[go], level[go] = k, j
            undecided &= ~go
    correct = stats.correct[level, exit_at, np.arange(N)]
    return exit_at, level, correct


def _risk_target(stats: ExitStats) -> np.ndarray:
    """Samples the last exit answers right at the first level (the full network's answer)."""
    return stats.correct[0, -1]


def evaluate_dense(stats: ExitStats, thresholds: np.ndarray, chunk: int = 1 << 22) -> PointScores:
    """Scores of S settings (S, L, K) by a plain broadcast over settings x samples: the exact
    reference for any threshold values, and the baseline the benchmark compares with. Settings
    are taken `chunk` // N at a time, which bounds memory for large splits."""
    t = _as_settings(thresholds, stats)
    S = t.shape[0]
    L, K, N = stats.entropy.shape
    n_right = np.zeros(S)
    n_worse = np.zeros(S)
    by_level = np.zeros((S, L))
    by_exit = np.zeros((S, K))
    final_right = _risk_target(stats)
    step = max(1, chunk // max(N, 1))
    for s0 in range(0, S, step):
        sl = slice(s0, s0 + step)
        undecided = np.ones((len(t[sl]), N), dtype=bool)
        for k in range(K):
            passes = [stats.entropy[j, k][None, :] <= t[sl, j, k : k + 1] for j in range(L)]
            for j, go in enumerate(cascade_step(undecided, passes, k == K - 1)):
                n = go.sum(1)
                by_level[sl, j] += n
                by_exit[sl, k] += n
                n_right[sl] += (go & stats.correct[j, k]).sum(1)
                n_worse[sl] += (go & final_right & ~stats.correct[j, k]).sum(1)
                undecided &= ~go
    return PointScores(n_right / N, by_level / N, by_exit / N, n_worse / N)


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount_rows(a: np.ndarray) -> np.ndarray:
    """Set bits per row of a (..., W) uint64 array."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(a).sum(axis=-1, dtype=np.int64)
    b = np.ascontiguousarray(a).view(np.uint8)  # older numpy: a byte lookup table
    return _POPCOUNT8[b].sum(axis=-1, dtype=np.int64)


def _pack(bits: np.ndarray) -> np.ndarray:
    """(..., N) bool -> (..., ceil(N/64)) uint64, padding bits zero."""
    n_pad = (-bits.shape[-1]) % 64
    if n_pad:
        bits = np.concatenate([bits, np.zeros(bits.shape[:-1] + (n_pad,), dtype=bool)], axis=-1)
    return np.ascontiguousarray(np.packbits(bits, axis=-1, bitorder="little")).view(np.uint64)


class BitsetEvaluator:
    """Evaluates settings given as grid indices (S, L, K), 64 samples per machine word.

    Grid of level j at exit k: index 0 = NEVER, indices 1..G-1 = the calibration entropies'
    quantiles at probabilities 1/(G-1) .. 1, and index G-1 = ALWAYS. `grid[j, k, i]` is the
    threshold value of index i; a setting chosen on the grid is reported with those exact values,
    which `apply_policy` / `evaluate_dense` reproduce. Risk is not computed here (None).
    """

    def __init__(self, stats: ExitStats, levels: int = 64) -> None:
        if levels < 2:
            raise ValueError("levels >= 2")
        self.stats = stats
        self.levels = levels
        L, K, N = stats.entropy.shape
        probs = np.arange(1, levels) / (levels - 1)
        self.grid = np.empty((L, K, levels))
        self.grid[:, :, 0] = NEVER
        self.grid[:, :, 1:] = np.moveaxis(np.quantile(stats.entropy, probs, axis=2, method="inverted_cdf"), 0, -1)
        self.grid[:, :, -1] = ALWAYS
        # passes[j, k, i] = samples whose level-j entropy at exit k passes grid value i
        self.passes = _pack(stats.entropy[:, :, None, :] <= self.grid[:, :, :, None])
        self.correct = _pack(stats.correct)
        self.all_samples = _pack(np.ones(N, dtype=bool))

    def thresholds(self, idx: np.ndarray) -> np.ndarray:
        """(S, L, K) threshold values of grid indices; the unused last-exit last-level one is ALWAYS."""
        idx = np.asarray(idx)
        L, K = self.grid.shape[:2]
        t = self.grid[np.arange(L)[:, None], np.arange(K)[None, :], idx]
        t[..., L - 1, K - 1] = ALWAYS
        return t

    def evaluate(self, idx: np.ndarray, chunk: int = 4096) -> PointScores:
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim == 2:
            idx = idx[None]
        S = idx.shape[0]
        L, K, N = self.stats.entropy.shape
        n_right = np.zeros(S, dtype=np.int64)
        by_level = np.zeros((S, L), dtype=np.int64)
        by_exit = np.zeros((S, K), dtype=np.int64)
        for s0 in range(0, S, chunk):
            sl = slice(s0, s0 + chunk)
            undecided = np.broadcast_to(self.all_samples, (len(idx[sl]), self.all_samples.shape[0])).copy()
            for k in range(K):
                passes = [self.passes[j, k, idx[sl, j, k]] for j in range(L)]
                for j, go in enumerate(cascade_step(undecided, passes, k == K - 1)):
                    n = _popcount_rows(go)
                    by_level[sl, j] += n
                    by_exit[sl, k] += n
                    n_right[sl] += _popcount_rows(go & self.correct[j, k])
                    undecided &= ~go
        return PointScores(n_right / N, by_level / N, by_exit / N, None)

    def random_settings(self, n: int, rng: np.random.Generator) -> np.ndarray:
        L, K = self.grid.shape[:2]
        return rng.integers(0, self.levels, (n, L, K))


def answer_at(n_levels: int, n_exits: int, k: int, level: int = 0) -> np.ndarray:
    """Thresholds (L, K) at which every sample answers at exit k, at `level`: no earlier exit answers."""
    t = np.full((n_levels, n_exits), NEVER)
    t[level, k] = ALWAYS
    t[-1, -1] = ALWAYS  # unused: what reaches the last exit's last level answers there
    return t


def fixed_policies(n_levels: int, n_exits: int, level_names: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """Reference points "always answer at exit k, level j" as (name, thresholds (L, K)) pairs."""
    return [(f"fixed:{name}@{k}", answer_at(n_levels, n_exits, k, j))
            for k in range(n_exits) for j, name in enumerate(level_names)]
