"""Superclasses induced from a flat classifier (`--tree induced`), for a dataset without a hierarchy
or to test whether its own is the one to route on.

Pure numpy. How alike two classes are: the cosine similarity of their weight vectors in a first
training stage's flat head (the weights alone decide, so every worker of a data-parallel trial
induces the same grouping; a calibration confusion matrix, the other measure one could use, is
seen by the main worker only). Classes are then grouped by average-linkage agglomerative
clustering on 1 - similarity into k groups. Ties merge the pair whose lowest class indices come first; groups are numbered by their
lowest class, so the same inputs always give the same grouping.
"""

from __future__ import annotations

import numpy as np

__all__ = ["agglomerate", "induce_groups", "weight_similarity"]


def weight_similarity(weights: np.ndarray) -> np.ndarray:
    """(C, C) cosine similarity of the rows of a (C, F) weight matrix."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
    return np.clip(w @ w.T, -1.0, 1.0)


def agglomerate(distance: np.ndarray, k: int) -> np.ndarray:
    """Average-linkage clustering of C items into k groups; returns (C,) group ids (by lowest member)."""
    d = np.asarray(distance, dtype=np.float64)
    n = len(d)
    if not 1 <= k <= n:
        raise ValueError(f"cannot group {n} classes into {k} groups")
    clusters: list[list[int]] = [[i] for i in range(n)]
    while len(clusters) > k:
        best, pair = np.inf, (0, 1)
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                link = float(d[np.ix_(clusters[a], clusters[b])].mean())
                if link < best - 1e-12:
                    best, pair = link, (a, b)
        a, b = pair
        clusters[a] = sorted(clusters[a] + clusters[b])
        del clusters[b]
    out = np.empty(n, dtype=np.int64)
    for g, members in enumerate(sorted(clusters, key=min)):
        out[members] = g
    return out


def induce_groups(similarity: np.ndarray, k: int) -> np.ndarray:
    """k groups of classes from a (C, C) similarity."""
    return agglomerate(1.0 - np.asarray(similarity, dtype=np.float64), k)
