"""Iterative stratification of a multi-label set into parts of given sizes (Sechidis, Tsoumakas and
Vlahavas, "On the Stratification of Multi-Label Data", ECML PKDD 2011, Algorithm 1).

A single-label set is stratified on its class (trainables/data/__init__.py `stratified_split`); a
multi-label one has no one class per sample, so the splits are stratified on labels this way:
the rarest label still to place goes first, each of its samples to the part that most lacks that
label (then the part that most lacks samples, then at random), and every part's wants are lowered
by what the sample brings. One change to the paper's rule keeps the parts' sizes: a part that
already has its share of samples takes no more while another part still wants some. Samples without any label go last, to the parts that most lack samples.
Rare labels thus spread over the parts as evenly as their counts allow, which a random split of a
few thousand images does not do for a label seen twenty times.

Deterministic given (labels, proportions, seed): ties are broken by a numpy Generator seeded with
`seed`, and samples are visited in a seeded random order. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["iterative_stratification", "multilabel_split", "multilabel_subset"]


def iterative_stratification(labels: np.ndarray, proportions: Sequence[float], seed: int = 0) -> np.ndarray:
    """The part (0..len(proportions)-1) of every sample of a multi-hot (N, C) label matrix."""
    y = np.asarray(labels)
    if y.ndim != 2:
        raise ValueError(f"labels must be a multi-hot (N, C) matrix, got shape {y.shape}")
    y = y.astype(bool)
    r = np.asarray(proportions, dtype=np.float64)
    if r.ndim != 1 or len(r) < 1 or (r < 0).any() or not np.isclose(r.sum(), 1.0):
        raise ValueError(f"proportions must be >= 0 and sum to 1, got {list(proportions)}")
    n, c = y.shape
    rng = np.random.default_rng(seed)
    want = r * n  # samples each part still wants
    want_label = r[:, None] * y.sum(0)[None, :].astype(np.float64)  # (parts, C): samples of each label it still wants
    part = np.full(n, -1, dtype=np.int64)
    left = y.sum(0).astype(np.int64)  # samples of each label not yet placed
    order = rng.permutation(n)  # the visiting order of samples within a label
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)

    def choose(candidates: np.ndarray) -> int:
        return int(candidates[rng.integers(len(candidates))]) if len(candidates) > 1 else int(candidates[0])

    while (left > 0).any():
        rarest = np.flatnonzero(left == left[left > 0].min())
        label = choose(rarest)
        samples = np.flatnonzero(y[:, label] & (part < 0))
        for i in samples[np.argsort(rank[samples], kind="stable")]:
            best = np.flatnonzero(want_label[:, label] == want_label[:, label].max())
            if len(best) > 1:
                best = best[want[best] == want[best].max()]
            p = choose(best)
            part[i] = p
            want[p] -= 1
            want_label[p, y[i]] -= 1
            left[y[i]] -= 1
    for i in order[part[order] < 0]:  # samples with no label
        p = choose(np.flatnonzero(want == want.max()))
        part[i] = p
        want[p] -= 1
    return part


def multilabel_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held_out) sorted indices, `fraction` of the samples held out, stratified on labels."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    part = iterative_stratification(labels, [1.0 - fraction, fraction], seed)
    return np.flatnonzero(part == 0).astype(np.int64), np.flatnonzero(part == 1).astype(np.int64)


def multilabel_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a label-stratified subset of about `n` samples (all of them when n >= N)."""
    total = len(labels)
    if n >= total:
        return np.arange(total, dtype=np.int64)
    part = iterative_stratification(labels, [n / total, 1.0 - n / total], seed)
    return np.flatnonzero(part == 0).astype(np.int64)
