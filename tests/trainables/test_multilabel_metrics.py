"""Micro and macro F1 and the decision thresholds tuned on calibration, against cases worked by hand
and against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from trainables.multilabel import (answers, class_thresholds, f1_scores, global_threshold, one_hot, sigmoid,
                                   subset_accuracy)


def test_f1_known_case():
    truth = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]], bool)
    pred = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]], bool)
    f = f1_scores(pred, truth)
    # class 0: TP 2 -> 1; class 1: TP 1, FN 1 -> 2/3; class 2: FP 1, FN 1 -> 0
    assert f.per_class == pytest.approx([1.0, 2 / 3, 0.0])
    assert f.macro == pytest.approx((1 + 2 / 3) / 3)
    assert f.micro == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))  # TP 3, FP 1, FN 2
    assert subset_accuracy(pred, truth) == 0.0 and subset_accuracy(truth, truth) == 1.0
    assert subset_accuracy(np.vstack([truth[:1], pred[1:]]), truth) == pytest.approx(1 / 3)


def test_a_class_never_held_nor_answered_is_left_out_of_the_macro_mean():
    truth = np.array([[1, 0], [0, 0]], bool)
    f = f1_scores(np.array([[1, 0], [0, 0]], bool), truth)
    assert f.macro == 1.0 and np.isnan(f.per_class[1])
    f = f1_scores(np.array([[1, 1], [0, 0]], bool), truth)  # answered though never held: F1 0, counted
    assert f.per_class[1] == 0.0 and f.macro == 0.5


def test_single_label_micro_f1_is_accuracy():
    rng = np.random.default_rng(0)
    y, top1 = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    f = f1_scores(one_hot(top1, 5), one_hot(y, 5))
    assert f.micro == pytest.approx((y == top1).mean())


def test_per_class_threshold_known_case():
    # positives at 0.9 and 0.6, negatives at 0.7 and 0.2: answering the top 3 (threshold 0.4) gives
    # TP 2, FP 1: F1 4/5, better than the top 1 (2/3), the top 2 (1/2) or all four (2/3)
    probs = np.array([[0.9], [0.7], [0.6], [0.2]])
    truth = np.array([[1], [0], [1], [0]], bool)
    t = class_thresholds(probs, truth)
    assert t[0] == pytest.approx(0.4)
    assert f1_scores(answers(probs, t), truth).macro == pytest.approx(0.8)
    # a class never held is never answered
    t = class_thresholds(np.array([[0.3, 0.9], [0.8, 0.1]]), np.array([[0, 1], [0, 0]], bool))
    assert t[0] >= 0.8 and t[1] == pytest.approx(0.5)


def brute_best(probs, truth, per_class: bool):
    grid = np.unique(np.concatenate([probs.ravel(), [0.0, 1.0]]))
    cands = np.concatenate([grid, (grid[1:] + grid[:-1]) / 2])
    if per_class:
        return np.array([max(f1_scores(answers(probs[:, [c]], t), truth[:, [c]]).macro for t in cands)
                         for c in range(probs.shape[1])])
    return max(f1_scores(answers(probs, t), truth).macro for t in cands)


def test_thresholds_are_the_exact_optima_brute_force_finds():
    rng = np.random.default_rng(3)
    truth = rng.random((60, 4)) < [0.5, 0.3, 0.1, 0.05]
    probs = np.round(np.clip(0.35 * truth + rng.random((60, 4)) * 0.7, 0, 1), 2)  # rounded: ties in scores
    t_class = class_thresholds(probs, truth)
    per = f1_scores(answers(probs, t_class), truth).per_class
    assert np.nan_to_num(per) == pytest.approx(brute_best(probs, truth, per_class=True))  # NaN: never held, never answered
    t, macro = global_threshold(probs, truth)
    assert macro == pytest.approx(brute_best(probs, truth, per_class=False))
    assert f1_scores(answers(probs, t), truth).macro == pytest.approx(macro)
    # per-class thresholds fit the split they were tuned on at least as well as any one threshold
    assert f1_scores(answers(probs, t_class), truth).macro >= macro - 1e-12


def test_per_class_thresholds_fit_their_split_better_than_new_data():
    """The overfitting the report must show: tuned on one draw, scored on another from the same
    distribution, per-class thresholds lose more than the one global threshold."""
    rng = np.random.default_rng(0)

    def draw(n):
        truth = rng.random((n, 12)) < 0.1
        return sigmoid(np.where(truth, 1.0, -1.0) + rng.normal(0, 1.6, truth.shape)), truth

    gaps_class, gaps_global = [], []
    for _ in range(20):
        (pc, tc), (pt, tt) = draw(150), draw(2000)
        t_class, (t_glob, _) = class_thresholds(pc, tc), global_threshold(pc, tc)
        gaps_class.append(f1_scores(answers(pc, t_class), tc).macro - f1_scores(answers(pt, t_class), tt).macro)
        gaps_global.append(f1_scores(answers(pc, t_glob), tc).macro - f1_scores(answers(pt, t_glob), tt).macro)
    assert np.mean(gaps_class) > np.mean(gaps_global) > -0.05


def test_sigmoid_is_stable():
    assert sigmoid(np.array([-1000.0, 0.0, 1000.0])) == pytest.approx([0.0, 0.5, 1.0])
