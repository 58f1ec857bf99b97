"""Flat and hierarchical classification metrics from scores and a class tree ("how bad are the mistakes?").

Any search space can report these next to plain accuracy; they follow Bertinetto et al., "Making
Better Mistakes: Leveraging Class Hierarchies with Deep Networks" (CVPR 2020) and the evaluation
code of fiveai/making-better-mistakes (`better_mistakes/model/run_xent.py`, read to check every
definition below). Pure numpy, vectorised over samples; torch tensors are accepted and converted.

Inputs: `scores` (N, C) -- logits, probabilities or negative embedding distances, higher = more
likely; `labels` (N,) integer classes; `distances` (C, C) -- the class distance D,
`Hierarchy.distance_matrix()`: the height of the lowest common ancestor (LCA) node of two classes
(the longest path from it down to a leaf below it), 0 on the diagonal, >= 1 off it, as in the
paper's code and distance files (convention `trainables.hierarchy.CLASS_DISTANCE`, version 2). A
`Hierarchy` may be passed wherever a distance matrix is accepted by `hierarchical_metrics`.

Definitions (p_i1..p_ik = the k highest-scoring classes of sample i, y_i its label):

* ranking: classes sorted by decreasing score, ties broken by the LOWER class index (deterministic).
  Departs from the paper's code, which ranks with torch.topk (tie order unspecified); the two can
  differ where scores tie exactly (more often with float16 caches). Every k is clipped to C.
* top1_error = mean_i [p_i1 != y_i].
* level / coarse accuracy = mean_i [a(p_i1) == a(y_i)] for a = ancestor at a depth, or a given
  fine -> coarse map (CIFAR-100's superclasses are not a level of its WordNet tree).
* mistake_severity = mean of D[y_i, p_i1] over the misclassified samples only; NaN when there are
  none. (Paper: "average mistake severity"; code: `_mistakes/avg01`, which selects D != 0 -- the same
  samples, since D[a, b] >= 1 for a != b.)
* hdist@k = mean_i mean_{j<=k} D[y_i, p_ij] (paper: "average hierarchical distance@k"; code:
  `_avg/k`, np.mean over the (N, k) table). hdist@1 over all samples includes correct ones (0).
* hprecision@k (code: `_precision/k`): with similarity s = 1 - D / max(D),
  sum_i sum_{j<=k} s[y_i, p_ij] / sum_i sum_{j<=k} sort_desc(s[y_i, :])_j, i.e. the similarity
  of the returned top-k relative to the best achievable k retrievals FOR THAT LABEL (the label
  itself first). Deliberate departure: the paper's code divides by the ideal similarities of every
  class of its (C, C) table (`best_hier_similarities[:, :k]`, not indexed by the batch's labels), so
  its ratio also scales with batch size / C, which reads as a bug; indexing by the label is the
  evident intent (and equals the code's when a batch holds each class once). A ratio of sums over
  samples, like the code's per-batch ratio with the whole set as one batch (the code then averages
  batch ratios; with equal batches the two differ only by batch-to-batch variation of the
  denominator). Ties in the ideal list do not matter (only the sorted distance values enter). If
  max(D) == 0 (one class) every similarity is 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trainables.hierarchy import Hierarchy

__all__ = [
    "coarse_accuracy",
    "hdist_at_k",
    "hierarchical_metrics",
    "hprecision_at_k",
    "level_accuracy",
    "mistake_severity",
    "top1_error",
    "topk",
]


def _array(x: Any) -> np.ndarray:
    """numpy view of x; torch tensors are detached and moved to the CPU (no torch import needed)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.double()  # numpy has no bfloat16
        x = x.numpy()
    return np.asarray(x)


def _scores(scores: Any) -> np.ndarray:
    s = _array(scores)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty (N, C) array, got shape {s.shape}")
    if s.dtype.kind not in "fiub":
        raise ValueError(f"scores must be numeric, got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s


def _inputs(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _scores(scores)
    y = _array(labels)
    if y.ndim != 1 or len(y) != len(s):
        raise ValueError(f"labels must have shape ({len(s)},) to match scores {s.shape}, got {y.shape}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    if y.min() < 0 or y.max() >= s.shape[1]:
        raise ValueError(f"labels must lie in [0, {s.shape[1]}), got range [{y.min()}, {y.max()}]")
    return s, y


def _class_map(m: Any, n_classes: int, what: str) -> np.ndarray:
    a = _array(m)
    if a.shape != (n_classes,) or a.dtype.kind not in "iu":
        raise ValueError(f"{what} must be an integer array of shape ({n_classes},), got {a.dtype} {a.shape}")
    return a.astype(np.int64, copy=False)


def _distances(d: Any, n_classes: int) -> np.ndarray:
    d = _array(d.distance_matrix() if isinstance(d, Hierarchy) else d).astype(np.float64, copy=False)
    if d.shape != (n_classes, n_classes):
        raise ValueError(f"distances must have shape ({n_classes}, {n_classes}) to match scores, got {d.shape}")
    if np.isnan(d).any() or (d < 0).any() or np.diagonal(d).any():
        raise ValueError("distances must be non-negative, without NaN, and 0 on the diagonal")
    return d


def _k(k: int, n_classes: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return min(int(k), n_classes)


def _topk(s: np.ndarray, k: int) -> np.ndarray:
    # A stable sort of -s keeps equal scores in increasing class order: the documented tie rule.
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def _hprecision(dk: np.ndarray, y: np.ndarray, d: np.ndarray) -> float:
    """`dk` = D[y, top-k] (N, k); see the module docstring."""
    scale = d.max() or 1.0
    best = np.sort(d, axis=1)[y, : dk.shape[1]]  # ideal retrievals: the k smallest distances to y
    return float((1.0 - dk / scale).sum() / (1.0 - best / scale).sum())


def topk(scores: Any, k: int) -> np.ndarray:
    """int64 (N, min(k, C)): the k highest-scoring classes per row, highest first.

    Ties (equal scores) are broken by the lower class index, so the result is deterministic.
    """
    s = _scores(scores)
    return _topk(s, _k(k, s.shape[1]))


def top1_error(scores: Any, labels: Any) -> float:
    """Fraction of samples whose highest-scoring class is not the label."""
    s, y = _inputs(scores, labels)
    return float(np.mean(_topk(s, 1)[:, 0] != y))


def coarse_accuracy(scores: Any, labels: Any, coarse_of: Any) -> float:
    """Accuracy after mapping the top-1 prediction and the label through `coarse_of` (C,)."""
    s, y = _inputs(scores, labels)
    c = _class_map(coarse_of, s.shape[1], "coarse_of")
    return float(np.mean(c[_topk(s, 1)[:, 0]] == c[y]))


def level_accuracy(scores: Any, labels: Any, tree: Hierarchy, level: int) -> float:
    """Accuracy at tree depth `level` (`tree.ancestors_at(level)`; 0 = root, always 1.0)."""
    return coarse_accuracy(scores, labels, tree.ancestors_at(level))


def mistake_severity(scores: Any, labels: Any, distances: Any) -> float:
    """Mean class distance D[label, top-1] over the misclassified samples; NaN if none is wrong."""
    s, y = _inputs(scores, labels)
    d = _distances(distances, s.shape[1])
    pred = _topk(s, 1)[:, 0]
    wrong = pred != y
    return float(d[y[wrong], pred[wrong]].mean()) if wrong.any() else float("nan")


def hdist_at_k(scores: Any, labels: Any, distances: Any, k: int) -> float:
    """Average hierarchical distance@k: mean over samples of the mean D[label, p_j] over the top-k."""
    s, y = _inputs(scores, labels)
    d = _distances(distances, s.shape[1])
    return float(d[y[:, None], _topk(s, _k(k, s.shape[1]))].mean())


def hprecision_at_k(scores: Any, labels: Any, distances: Any, k: int) -> float:
    """Hierarchical precision@k as in the paper's code (`_precision/k`), its ideal similarities indexed
    by the label (see the module docstring).

    In [0, 1]; 1 when the top-k are as close to the label as any k classes can be.
    """
    s, y = _inputs(scores, labels)
    d = _distances(distances, s.shape[1])
    return _hprecision(d[y[:, None], _topk(s, _k(k, s.shape[1]))], y, d)


def hierarchical_metrics(
    scores: Any,
    labels: Any,
    tree_or_distances: Hierarchy | Any,
    *,
    coarse_of: Any = None,
    ks: Sequence[int] = (1, 5, 20),
) -> dict[str, float]:
    """Every metric at once, sorting the scores only once.

    Keys: "top1_error", "coarse_accuracy" (when `coarse_of` is given, or taken from a `Hierarchy`'s
    `coarse_of` when a tree is passed), "mistake_severity" (NaN without mistakes), then "hdist@k"
    and "hprecision@k" for every k in `ks`. Keys use the requested k; values use min(k, C).
    """
    s, y = _inputs(scores, labels)
    n_classes = s.shape[1]
    d = _distances(tree_or_distances, n_classes)
    if coarse_of is None and isinstance(tree_or_distances, Hierarchy):
        coarse_of = tree_or_distances.coarse_of
    clipped: dict[int, int] = {}
    for k in ks:
        kc = _k(k, n_classes)  # validates before int(k) can fail on a bad value
        clipped[int(k)] = kc
    top = _topk(s, max(clipped.values(), default=1))
    dk = d[y[:, None], top]  # (N, max k) distances from the label to each ranked prediction
    wrong = top[:, 0] != y
    out = {"top1_error": float(wrong.mean())}
    if coarse_of is not None:
        c = _class_map(coarse_of, n_classes, "coarse_of")
        out["coarse_accuracy"] = float(np.mean(c[top[:, 0]] == c[y]))
    out["mistake_severity"] = float(dk[wrong, 0].mean()) if wrong.any() else float("nan")
    for k, kc in clipped.items():
        out[f"hdist@{k}"] = float(dk[:, :kc].mean())
    for k, kc in clipped.items():
        out[f"hprecision@{k}"] = _hprecision(dk[:, :kc], y, d)
    return out
