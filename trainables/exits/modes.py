"""Closed-form threshold rules for one-level early exits (exit at k when entropy <= t[k]).

* `target_thresholds`: BranchyNet's own calibration (kunglab/branchynet): per exit, "always
  exit" when that exit's accuracy over the calibration split meets the target, else the entropy
  threshold at the percentile where the samples it accepts meet the target; swept over targets.
* `budget_thresholds`: MSDNet's adaptive inference (kalviny/MSDNet-PyTorch): an exit-rate profile
  p_k proportional to q^k, thresholds set exit by exit on the samples still undecided so that
  n * p_k of them leave at exit k; swept over q.

Both see the calibration split only and are vectorised over samples; the loops are over exits
and sweep values. Risk-controlled thresholds are in trainables/exits/risk.py.
"""

from __future__ import annotations

import numpy as np

from trainables.exits.policy import ALWAYS, NEVER

__all__ = ["budget_thresholds", "exit_profile", "target_thresholds"]


def target_thresholds(entropy: np.ndarray, correct: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(T, K) thresholds for each target accuracy; entropy, correct: (K, N)."""
    targets = np.asarray(targets, dtype=np.float64)
    K, N = entropy.shape
    out = np.full((len(targets), K), NEVER)
    out[:, -1] = ALWAYS
    for k in range(K - 1):
        order = np.argsort(entropy[k], kind="stable")
        h = entropy[k][order]
        running = np.cumsum(correct[k][order]) / np.arange(1, N + 1)  # accuracy of the n most confident
        ok = running[None, :] >= targets[:, None] - 1e-12
        last = N - 1 - np.argmax(ok[:, ::-1], axis=1)  # largest accepted prefix meeting the target
        out[:, k] = np.where(ok.any(axis=1), h[last], NEVER)
        out[correct[k].mean() >= targets - 1e-12, k] = ALWAYS
    return out


def exit_profile(q: float, n_exits: int) -> np.ndarray:
    """p_k proportional to q^k, k = 0..K-1, summing to 1."""
    p = float(q) ** np.arange(n_exits, dtype=np.float64)
    return p / p.sum()


def exit_counts(p: np.ndarray, n: int) -> np.ndarray:
    """Whole counts per exit that add up to n (rounding the cumulative profile)."""
    cum = np.floor(np.cumsum(p) * n + 0.5).astype(np.int64)  # half up, not to even
    cum[-1] = n
    return np.diff(np.concatenate([[0], cum]))


def budget_thresholds(entropy: np.ndarray, qs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q, K) thresholds and (Q, K) target counts: exit k takes the `count_k` least uncertain of
    the samples still undecided (ties at the threshold may take a few more)."""
    K, N = entropy.shape
    qs = np.asarray(qs, dtype=np.float64)
    out = np.full((len(qs), K), NEVER)
    out[:, -1] = ALWAYS
    counts = np.stack([exit_counts(exit_profile(q, K), N) for q in qs])
    for i in range(len(qs)):
        undecided = np.ones(N, dtype=bool)
        for k in range(K - 1):
            c = int(counts[i, k])
            rest = entropy[k][undecided]
            if c <= 0 or rest.size == 0:
                continue
            t = np.partition(rest, min(c, rest.size) - 1)[min(c, rest.size) - 1]
            out[i, k] = t
            undecided &= ~(entropy[k] <= t)
    return out, counts
