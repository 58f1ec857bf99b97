"""Scores of multi-label answers and their decision thresholds: micro and macro F1, and thresholds
tuned on the calibration split's cached outputs (train once, calibrate many).

A multi-label network answers, for every class, a probability p_c = sigmoid(logit_c); the image is
said to hold class c when p_c > t_c. The thresholds are post-training parameters:

* one global threshold t for every class, chosen to maximise macro F1 on calibration, exactly: every
  threshold between two consecutive distinct probabilities of the split gives the same answers, so
  the candidates are those midpoints (and one below and one above all of them);
* per-class thresholds t_c, each maximising its class's F1 on calibration, exactly (macro F1 is the
  mean of per-class F1s and class c's F1 depends on t_c alone, so this maximises macro F1 too).

Per-class thresholds fit calibration better and are known to overfit it (../shared/RESEARCH.md:
validation F1 0.590 -> test 0.559, against 0.565 for one global threshold): both are scored on
test, side by side, and nothing is chosen there.

F1 of a class = 2 TP / (2 TP + FP + FN). Micro F1 pools TP, FP and FN over the classes; macro F1 is
the mean of the per-class F1s over the classes where it is defined: a class that the split never
holds and that is never answered has F1 0/0 and is left out of the mean (scikit-learn's
`f1_score(average="macro", zero_division=np.nan)`). For single-label answers (one class per image,
the top-1), micro F1 equals accuracy.

Pure numpy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["F1", "answers", "class_thresholds", "f1_scores", "global_threshold", "one_hot", "sigmoid", "subset_accuracy"]


class F1(NamedTuple):
    micro: float
    macro: float
    per_class: np.ndarray  # (C,) F1 of every class, NaN where undefined


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities of logits, in float64 (numerically stable for either sign)."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, C) bool of class indices (N,)."""
    out = np.zeros((len(labels), n_classes), dtype=bool)
    out[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)] = True
    return out


def answers(probs: np.ndarray, thresholds: float | np.ndarray) -> np.ndarray:
    """(N, C) bool: class c answered where p_c > its threshold (one for all, or one per class)."""
    return np.asarray(probs) > np.asarray(thresholds, dtype=np.float64)


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.maximum(den, 1), np.nan)


def f1_scores(pred: np.ndarray, truth: np.ndarray) -> F1:
    """Micro, macro and per-class F1 of (N, C) bool answers against (N, C) multi-hot truth."""
    p, t = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"answers {p.shape} and truth {t.shape} must be the same (N, C) shape")
    tp = (p & t).sum(0).astype(np.float64)
    fp = (p & ~t).sum(0).astype(np.float64)
    fn = (~p & t).sum(0).astype(np.float64)
    per = _f1(tp, fp, fn)
    micro = float(_f1(tp.sum(), fp.sum(), fn.sum()))
    defined = per[~np.isnan(per)]
    return F1(micro if micro == micro else 0.0, float(defined.mean()) if len(defined) else 0.0, per)


def subset_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of images whose answered set is exactly their set of classes (exact match)."""
    p, t = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    return float((p == t).all(1).mean()) if len(p) else float("nan")


def _cuts(scores: np.ndarray) -> np.ndarray:
    """Thresholds giving every distinct answer set of `scores` (descending order of positives): the
    largest score (nothing above it), the midpoints between consecutive distinct scores, and one
    below the smallest (everything above it)."""
    u = np.unique(scores)  # ascending
    mids = (u[1:] + u[:-1]) / 2
    return np.concatenate([[u[-1]], mids[::-1], [np.nextafter(u[0], -np.inf)]])


def class_thresholds(probs: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(C,) thresholds, each maximising its class's F1 on (probs, truth), exactly. Among equal F1s
    the threshold answering the class least often; a class the split never holds gets one above
    every probability (it is never answered, which scores best on this split)."""
    p, t = np.asarray(probs, dtype=np.float64), np.asarray(truth, dtype=bool)
    out = np.empty(p.shape[1])
    for c in range(p.shape[1]):
        s, y = p[:, c], t[:, c]
        cuts = _cuts(s)
        if not y.any():
            out[c] = cuts[0]
            continue
        order = np.sort(s)
        pos = np.sort(s[y])
        answered = len(s) - np.searchsorted(order, cuts, side="right")  # images with p > cut
        tp = len(pos) - np.searchsorted(pos, cuts, side="right")
        f1 = 2 * tp / (answered + len(pos))
        out[c] = cuts[int(np.argmax(f1))]  # first maximum: the fewest answers
    return out


def global_threshold(probs: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(threshold, macro F1): the one threshold for every class that maximises macro F1 on
    (probs, truth), exactly (every distinct answer set is tried). Among equal scores, the threshold
    nearest 0.5."""
    p, t = np.asarray(probs, dtype=np.float64), np.asarray(truth, dtype=bool)
    cuts = _cuts(p.ravel())
    n_pos = t.sum(0)
    f1 = np.empty((len(cuts), p.shape[1]))
    for c in range(p.shape[1]):
        order, pos = np.sort(p[:, c]), np.sort(p[t[:, c], c])
        answered = len(order) - np.searchsorted(order, cuts, side="right")
        tp = len(pos) - np.searchsorted(pos, cuts, side="right")
        den = answered + n_pos[c]
        with np.errstate(invalid="ignore", divide="ignore"):
            f1[:, c] = np.where(den > 0, 2 * tp / np.maximum(den, 1), np.nan)
    defined = ~np.isnan(f1)
    macro = np.where(defined.any(1), np.nansum(f1, 1) / np.maximum(defined.sum(1), 1), 0.0)
    best = np.flatnonzero(macro >= macro.max() - 1e-12)
    i = int(best[np.argmin(np.abs(cuts[best] - 0.5))])
    return float(cuts[i]), float(macro[i])
