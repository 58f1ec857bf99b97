"""Per-exit early-exit thresholds with a finite-sample risk guarantee (Learn-then-Test + Pareto testing).

A sample leaves at the first exit k with normalised entropy <= thresholds[k]; the last exit always
answers. The loss of a setting on a sample is 1 if the final exit is right and the answering exit is
wrong; its mean (the risk) upper-bounds the accuracy lost against the final exit.

Guarantee: `risk_calibrate` returns thresholds whose population risk is <= epsilon with probability
>= 1 - delta over the draw of the calibration set (i.i.d. with the deployment data). How: candidates
are ordered on a random part D1 of the calibration set (Pareto front of D1 risk and cost, most
conservative first) and tested on the disjoint rest D2 by fixed-sequence testing with Hoeffding-
Bentkus p-values (Angelopoulos et al. 2021, "Learn then Test"; Laufer-Goldshtein et al. 2023,
"Pareto testing"). The order depends on D1 only, so the family-wise error over D2 is <= delta and
every certified candidate is valid at once; the cheapest one is returned. If none is certified, the
all-NEVER setting (everything at the last exit, risk exactly 0) is returned with certified=False.
The exit rule and the loss are those of trainables/exits/policy.py (one level: BranchyNet's rule).
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np

from trainables.exits.cache import ExitStats
from trainables.exits.policy import ALWAYS, NEVER, apply_policy, evaluate_dense

__all__ = ["ALWAYS", "NEVER", "RiskCalibration", "binomial_cdf", "empirical_risk", "hoeffding_bentkus_pvalue",
           "one_level_exits", "risk_calibrate"]

_CHUNK = 1 << 22  # settings x samples evaluated at once: bounds memory for large calibration sets
_lgamma = np.vectorize(math.lgamma, otypes=[np.float64])


def binomial_cdf(k, n: int, p: float) -> np.ndarray:
    """P(Bin(n, p) <= k), vectorised over k; log-space cumulative sum, stable for n of 10^6 and more."""
    k = np.floor(np.asarray(k, dtype=np.float64))
    if n < 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"need n >= 0 and p in [0, 1], got n={n}, p={p}")
    out = np.where(k >= n, 1.0, 0.0)
    inside = (k >= 0) & (k < n)
    if not inside.any():
        return out
    if p == 0.0 or p == 1.0:  # degenerate: all mass at 0 or at n
        out[inside] = 1.0 if p == 0.0 else 0.0
        return out
    j = np.arange(int(k[inside].max()) + 1, dtype=np.float64)
    log_pmf = (math.lgamma(n + 1) - _lgamma(j + 1) - _lgamma(n - j + 1)) + j * math.log(p) + (n - j) * math.log1p(-p)
    log_cdf = np.logaddexp.accumulate(log_pmf)  # no underflow in the far tail, no cancellation
    out[inside] = np.minimum(np.exp(log_cdf[k[inside].astype(np.int64)]), 1.0)
    return out


def hoeffding_bentkus_pvalue(risk_hat, n: int, alpha: float) -> np.ndarray:
    """HB p-value of H0: risk > alpha from the mean `risk_hat` of n losses in [0, 1] (vectorised)."""
    if n < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need n >= 1 and alpha in (0, 1), got n={n}, alpha={alpha}")
    r = np.clip(np.asarray(risk_hat, dtype=np.float64), 0.0, 1.0)
    a = np.minimum(r, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        h1 = np.where(a > 0, a * np.log(a / alpha), 0.0) + (1 - a) * np.log((1 - a) / (1 - alpha))
    p_h = np.exp(-n * h1)
    # round n*r before ceil so a lattice mean count/n is not pushed up a whole count by float error
    p_b = math.e * binomial_cdf(np.ceil(np.round(n * r, 6)), n, alpha)
    return np.minimum(np.minimum(p_h, p_b), 1.0)


def _stats(entropy: np.ndarray, correct: np.ndarray) -> ExitStats:
    """One answer level: the policy module's view of (K, N) entropies and correctness."""
    return ExitStats(("answer",), entropy[None], correct[None], {})


def one_level_exits(entropy: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(S, N) exit index per setting and sample, for thresholds (S, K) (or (K,) -> (N,))."""
    entropy = np.asarray(entropy, dtype=np.float64)
    thr = np.asarray(thresholds, dtype=np.float64)
    single = thr.ndim == 1
    thr = np.atleast_2d(thr)
    if entropy.ndim != 2 or thr.ndim != 2 or thr.shape[1] != entropy.shape[0]:
        raise ValueError(f"need entropy (K, N) and thresholds (S, K) or (K,), got {entropy.shape} and {thr.shape}")
    stats = _stats(entropy, np.ones(entropy.shape, dtype=bool))
    exits = np.stack([apply_policy(stats, t[None])[0] for t in thr])
    return exits[0] if single else exits


def _risk_and_cost(entropy: np.ndarray, correct: np.ndarray, cost: np.ndarray | None, thresholds: np.ndarray):
    """(S,) mean loss and (S,) expected cost (None without `cost`) of one-level settings (S, K)."""
    scores = evaluate_dense(_stats(entropy, correct), np.asarray(thresholds)[:, None, :], chunk=_CHUNK)
    return scores.risk, (scores.expected(cost) if cost is not None else None)


def _check(entropy, correct, cost=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    entropy, correct = np.asarray(entropy, dtype=np.float64), np.asarray(correct)
    if entropy.ndim != 2 or entropy.shape[0] < 1 or entropy.shape[1] < 1:
        raise ValueError(f"entropy must be (K, N) with K >= 1 and N >= 1, got shape {entropy.shape}")
    if correct.shape != entropy.shape:
        raise ValueError(f"correct has shape {correct.shape}, entropy {entropy.shape}: they must match")
    if not (np.isfinite(entropy).all() and entropy.min() >= 0.0 and entropy.max() <= 1.0):
        raise ValueError("entropy must be normalised: finite values in [0, 1]")
    if cost is not None:
        cost = np.asarray(cost, dtype=np.float64)
        if cost.shape != (entropy.shape[0],) or not np.isfinite(cost).all():
            raise ValueError(f"cost must be a finite (K,) = ({entropy.shape[0]},) vector, got shape {cost.shape}")
    return entropy, correct.astype(bool), cost


def empirical_risk(entropy, correct, thresholds) -> np.ndarray:
    """(S,) mean loss per setting for thresholds (S, K); a 0-d array for thresholds (K,)."""
    entropy, correct, _ = _check(entropy, correct)
    thr = np.asarray(thresholds, dtype=np.float64)
    risk, _ = _risk_and_cost(entropy, correct, None, np.atleast_2d(thr))
    return risk[0] if thr.ndim == 1 else risk


class RiskCalibration(NamedTuple):
    thresholds: np.ndarray  # (K,), last entry ALWAYS
    certified: bool
    epsilon: float
    delta: float
    n_order: int  # samples in D1
    n_test: int  # samples in D2
    n_candidates: int  # candidates evaluated on D1
    n_tested: int  # hypotheses tested in the fixed sequence
    n_certified: int
    test_risk: float  # empirical risk of the returned thresholds on D2
    p_value: float  # its HB p-value (1.0 for the all-NEVER fallback; 0.0 when K == 1: nothing to test)


def _candidates(ent_d1: np.ndarray, levels: int, n_candidates: int, rng: np.random.Generator) -> np.ndarray:
    """(S, K) threshold vectors on per-exit D1 entropy quantile grids (NEVER included)."""
    n_early = ent_d1.shape[0] - 1
    probs = np.arange(1, levels + 1) / levels  # the top level lets every D1 sample leave at that exit
    grids = [np.unique(np.concatenate([[NEVER], np.quantile(ent_d1[k], probs)])) for k in range(n_early)]
    sizes = [len(g) for g in grids]
    total = math.prod(sizes)
    if total <= n_candidates:
        early = np.array(list(itertools.product(*grids)), dtype=np.float64)
    else:
        if total < 2**62:  # distinct grid points (no wasted duplicates) while the grid fits an index
            picks = np.unravel_index(rng.choice(total, size=n_candidates, replace=False), sizes)
        else:
            picks = [rng.integers(0, size, size=n_candidates) for size in sizes]
        early = np.stack([g[i] for g, i in zip(grids, picks)], axis=1)
        # the all-NEVER vector and every one-exit-only setting, so the simplest options are always there
        axes = [np.full((1, n_early), NEVER)]
        for k, g in enumerate(grids):
            one = np.full((len(g), n_early), NEVER)
            one[:, k] = g
            axes.append(one)
        early = np.concatenate([early, *axes])
    early = np.unique(early, axis=0)
    return np.concatenate([early, np.full((len(early), 1), ALWAYS)], axis=1)


def _front_in_test_order(risk: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Indices of the Pareto front of (risk min, cost min), one per front point, by risk ascending
    (so cost descending): the most conservative hypotheses are tested first."""
    order = np.lexsort((cost, risk))  # among equal risks the cheapest comes first and dominates the rest
    sorted_cost = cost[order]
    cheapest_before = np.concatenate([[np.inf], np.minimum.accumulate(sorted_cost)[:-1]])
    return order[sorted_cost < cheapest_before]  # strictly cheaper than every point at most as risky


def risk_calibrate(entropy: np.ndarray, correct: np.ndarray, cost: np.ndarray, *, epsilon: float,
                   delta: float = 0.1, split_fraction: float = 0.3, levels: int = 16,
                   n_candidates: int = 4096, seed: int = 0) -> RiskCalibration:
    """Cheapest per-exit thresholds certified to have risk <= epsilon with probability >= 1 - delta."""
    entropy, correct, cost = _check(entropy, correct, cost)
    if not 0.0 < epsilon < 1.0 or not 0.0 < delta < 1.0:
        raise ValueError(f"epsilon and delta must lie in (0, 1), got epsilon={epsilon}, delta={delta}")
    if not 0.0 < split_fraction < 1.0 or levels < 1 or n_candidates < 1:
        raise ValueError(f"need split_fraction in (0, 1), levels >= 1, n_candidates >= 1; got {split_fraction}, "
                         f"{levels}, {n_candidates}")
    n_exits, n = entropy.shape
    n_order = int(round(split_fraction * n))
    if not 0 < n_order < n:
        raise ValueError(f"{n} samples cannot be split {split_fraction:g} / {1 - split_fraction:g} into two non-empty parts")
    never = np.array([NEVER] * (n_exits - 1) + [ALWAYS])
    if n_exits == 1:  # only the final exit: the loss is identically 0, valid without any test
        return RiskCalibration(never, True, epsilon, delta, n_order, n - n_order, 0, 0, 0, 0.0, 0.0)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    d1, d2 = perm[:n_order], perm[n_order:]
    cand = _candidates(entropy[:, d1], levels, n_candidates, rng)
    risk1, cost1 = _risk_and_cost(entropy[:, d1], correct[:, d1], cost, cand)
    keep = _front_in_test_order(risk1, cost1)
    front = cand[keep]
    risk2, _ = _risk_and_cost(entropy[:, d2], correct[:, d2], None, front)
    pvals = hoeffding_bentkus_pvalue(risk2, len(d2), epsilon)
    failed = np.flatnonzero(pvals > delta)
    n_certified = int(failed[0]) if len(failed) else len(front)  # fixed sequence: stop at the first failure
    n_tested = min(n_certified + 1, len(front))
    if n_certified == 0:
        return RiskCalibration(never, False, epsilon, delta, n_order, len(d2), len(cand), n_tested, 0, 0.0, 1.0)
    best_i = int(np.argmin(cost1[keep][:n_certified]))  # every certified setting is valid simultaneously
    return RiskCalibration(front[best_i].copy(), True, epsilon, delta, n_order, len(d2), len(cand), n_tested,
                           n_certified, float(risk2[best_i]), float(pvals[best_i]))
