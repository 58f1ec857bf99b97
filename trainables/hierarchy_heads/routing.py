"""Routing calibrated after training: which child heads run for an image, scored on cached outputs.

Pure numpy (no torch): the rule the predictor runs live (trainables/hierarchy_heads/predictor.py),
here vectorised over every routing setting at once on a split's cached head outputs.

The rule, for an image with superclass probabilities p(s) (softmax of the superclass head):
if the normalised entropy H(p) = -sum p log p / log(#superclasses) is at most the threshold t,
only the most probable superclass's child head runs (hard routing); otherwise the child heads of
the k most probable superclasses run. The answer is the class c, among the classes of the heads
that ran, maximising p(s(c)) x p(c | s(c)). Ties: the superclass order is a stable sort of p
(equal probabilities: the lower superclass index first), and the answer is the lowest class
index among equal scores. Head cost of the image: the superclass head's MACs plus those of every
child head that ran; total FLOPs add the backbone's (2 FLOPs per MAC).

t and k are post-training parameters: t >= 1 is hard routing everywhere (H <= 1 always), t < 0
runs k heads for every image, and k = #superclasses runs them all (the full product rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["Routed", "answers", "log_softmax", "normalised_entropy", "route_top_k", "score_settings", "thresholds_grid"]

NEVER_UNSURE = 2.0  # a threshold above every normalised entropy: hard routing
ALWAYS_UNSURE = -1.0  # below every entropy: k heads for every image


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def normalised_entropy(logits: np.ndarray) -> np.ndarray:
    """H(softmax(logits)) / log(#classes), in [0, 1] (0 for a single class)."""
    logp = log_softmax(logits)
    n = logp.shape[-1]
    if n < 2:
        return np.zeros(logp.shape[:-1])
    return np.clip(-(np.exp(logp) * logp).sum(-1) / np.log(n), 0.0, 1.0)


class Routed(NamedTuple):
    """Answers and head MACs of N images under top-k routing, for each k of `ks`."""

    ks: np.ndarray  # (K,) int
    label: np.ndarray  # (K, N) int64: the answer when the image's top-k child heads run
    head_macs: np.ndarray  # (K, N) float: superclass head + those k child heads
    entropy: np.ndarray  # (N,) normalised entropy of the superclass head


def route_top_k(fine_joint: np.ndarray, coarse_logits: np.ndarray, coarse_of: Sequence[int], ks: Sequence[int],
                coarse_macs: float, child_macs: Sequence[float]) -> Routed:
    """`fine_joint` (N, C): log p(s(c)) + log p(c | s(c)) for every class (every child head's output,
    as cached); `coarse_logits` (N, S); `child_macs` (S,) the MACs of each superclass's child head."""
    fine = np.asarray(fine_joint, dtype=np.float64)
    coarse = np.asarray(coarse_logits, dtype=np.float64)
    group = np.asarray(coarse_of, dtype=np.int64)
    n_coarse = coarse.shape[1]
    ks_arr = np.asarray(sorted({min(max(int(k), 1), n_coarse) for k in ks}), dtype=np.int64)
    order = np.argsort(-log_softmax(coarse), axis=1, kind="stable")  # most probable superclass first
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n_coarse)[None, :].repeat(len(order), 0), axis=1)
    class_rank = rank[:, group]  # (N, C): where each class's superclass stands for that image
    macs_in_order = np.cumsum(np.asarray(child_macs, dtype=np.float64)[order], axis=1)  # (N, S)
    labels, macs = [], []
    for k in ks_arr:
        labels.append(np.where(class_rank < k, fine, -np.inf).argmax(axis=1))
        macs.append(float(coarse_macs) + macs_in_order[:, k - 1])
    return Routed(ks_arr, np.stack(labels), np.stack(macs), normalised_entropy(coarse))


def thresholds_grid(entropy: np.ndarray, levels: int) -> np.ndarray:
    """Candidate thresholds: hard routing, always-k, and up to `levels` cuts between neighbouring
    distinct entropies of the split (midpoints, so no image sits on a cut)."""
    e = np.unique(np.asarray(entropy, dtype=np.float64))
    mids = (e[1:] + e[:-1]) / 2 if len(e) > 1 else np.empty(0)
    if len(mids) > levels:
        mids = mids[np.unique(np.linspace(0, len(mids) - 1, levels).round().astype(int))]
    return np.concatenate([[ALWAYS_UNSURE], mids, [NEVER_UNSURE]])


def answers(routed: Routed, threshold: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One setting's answers and head MACs per image."""
    j = int(np.searchsorted(routed.ks, min(k, int(routed.ks[-1]))))
    unsure = routed.entropy > threshold
    return (np.where(unsure, routed.label[j], routed.label[0]), np.where(unsure, routed.head_macs[j], routed.head_macs[0]))


def score_settings(routed: Routed, thresholds: np.ndarray, fine_labels: np.ndarray,
                   coarse_of: Sequence[int]) -> dict[str, np.ndarray]:
    """Metrics of every (threshold, k) setting, flattened threshold-major: (T * K,) each."""
    y = np.asarray(fine_labels, dtype=np.int64)
    group = np.asarray(coarse_of, dtype=np.int64)
    n = len(y)
    t = np.asarray(thresholds, dtype=np.float64)
    unsure = (routed.entropy[None, :] > t[:, None]).astype(np.float64)  # (T, N)
    right = (routed.label == y[None, :]).astype(np.float64)  # (K, N)
    right_super = (group[routed.label] == group[y][None, :]).astype(np.float64)

    def mix(per_k: np.ndarray) -> np.ndarray:  # mean over images of where(unsure, per_k[k], per_k[0])
        return (per_k[0].mean() + unsure @ (per_k - per_k[0]).T / n).reshape(-1)

    accuracy, super_acc = mix(right), mix(right_super)
    with np.errstate(invalid="ignore", divide="ignore"):
        child_acc = np.where(super_acc > 0, accuracy / super_acc, np.nan)
    routed_more = (unsure.mean(axis=1)[:, None] * (routed.ks[None, :] > 1)).reshape(-1)
    T, K = len(t), len(routed.ks)
    return {
        "threshold": np.repeat(t, K), "k": np.tile(routed.ks, T).astype(np.float64),
        "accuracy": accuracy, "answer_superclass_accuracy": super_acc, "child_accuracy": child_acc,
        "head_macs": mix(routed.head_macs), "multi_head_fraction": routed_more,
    }
