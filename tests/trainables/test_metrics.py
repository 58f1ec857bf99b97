"""Tests for trainables.metrics: hand-computed metrics on small trees (balanced and unbalanced), the
tie rule, consistency between metrics, a literal per-sample reference of the paper's code, and the
real CIFAR-100 WordNet tree when ../shared/data is present."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.hierarchy import Hierarchy
from trainables.metrics import (
    coarse_accuracy,
    hdist_at_k,
    hierarchical_metrics,
    hprecision_at_k,
    level_accuracy,
    mistake_severity,
    top1_error,
    topk,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def scores_from_rankings(rankings: list[list[int]]) -> np.ndarray:
    """Scores whose ranking (highest first) is each given permutation, without ties."""
    r = np.asarray(rankings)
    s = np.empty(r.shape, dtype=np.float64)
    np.put_along_axis(s, r, np.arange(r.shape[1], 0, -1, dtype=np.float64)[None, :], axis=1)
    return s


# ---------------------------------------------------------------------------- two-level tree
# root -> {X: 0, 1, 2; Y: 3, 4, 5}. LCA height: 0 same class, 1 same superclass, 2 otherwise.

TWO = Hierarchy.from_fine_to_coarse([0, 0, 0, 1, 1, 1])
TWO_D = TWO.distance_matrix()
TWO_LABELS = np.array([0, 1, 3, 5])
TWO_SCORES = scores_from_rankings(
    [
        [0, 1, 3, 2, 4, 5],  # label 0: correct;            D to ranks = 0, 1, 2, 1, 2, 2
        [2, 1, 4, 0, 3, 5],  # label 1: wrong, same super;  D = 1, 0, 2, 1, 2, 2
        [0, 4, 3, 5, 1, 2],  # label 3: wrong, other super; D = 2, 1, 0, 1, 2, 2
        [5, 0, 1, 3, 4, 2],  # label 5: correct;            D = 0, 2, 2, 1, 1, 2
    ]
)


def test_two_level_tree_distances_as_assumed() -> None:
    assert TWO_D[0].tolist() == [0, 1, 1, 2, 2, 2]
    assert TWO_D[3].tolist() == [2, 2, 2, 0, 1, 1]


def test_two_level_hand_computed() -> None:
    s, y, d = TWO_SCORES, TWO_LABELS, TWO_D
    assert topk(s, 3).tolist() == [[0, 1, 3], [2, 1, 4], [0, 4, 3], [5, 0, 1]]
    # top-1 = 0, 2, 0, 5 vs labels 0, 1, 3, 5: samples 1 and 2 are wrong.
    assert top1_error(s, y) == 0.5
    # superclasses: 0->0 ok; 2,1 both X ok; 0 (X) vs 3 (Y) wrong; 5->5 ok.
    assert coarse_accuracy(s, y, TWO.coarse_of) == 0.75
    assert level_accuracy(s, y, TWO, 1) == 0.75
    assert level_accuracy(s, y, TWO, 2) == 0.5  # the leaves themselves: 1 - top1_error
    assert level_accuracy(s, y, TWO, 0) == 1.0
    # severity over the two mistakes: D[1, 2] = 1, D[3, 0] = 2 -> 1.5
    assert mistake_severity(s, y, d) == 1.5
    # hdist@1 over all four: (0 + 1 + 2 + 0) / 4
    assert hdist_at_k(s, y, d, 1) == 0.75
    # hdist@2: per sample (0+1)/2, (1+0)/2, (2+1)/2, (0+2)/2 -> (0.5 + 0.5 + 1.5 + 1) / 4
    assert hdist_at_k(s, y, d, 2) == 0.875
    # hdist@3: 3/3, 3/3, 3/3, 4/3 -> 13/12
    assert hdist_at_k(s, y, d, 3) == pytest.approx(13 / 12)
    # hprecision, similarity 1 - D/2 (D 0, 1, 2 -> 1, 0.5, 0); every label's ideal list has
    # distances 0, 1, 1, 2, 2, 2 -> similarities 1, 0.5, 0.5, 0, 0, 0.
    # @1: (1 + 0.5 + 0 + 1) / (4 * 1)
    assert hprecision_at_k(s, y, d, 1) == 0.625
    # @2: (1.5 + 1.5 + 0.5 + 1) / (4 * 1.5)
    assert hprecision_at_k(s, y, d, 2) == 0.75
    # @3: (1.5 + 1.5 + 1.5 + 1) / (4 * 2)
    assert hprecision_at_k(s, y, d, 3) == 0.6875
    # @6 (everything retrieved) is 1; k = 20 is clipped to 6; hdist@6 = mean of a row = 8/6.
    assert hprecision_at_k(s, y, d, 6) == 1.0
    assert hprecision_at_k(s, y, d, 20) == 1.0
    assert hdist_at_k(s, y, d, 20) == pytest.approx(8 / 6)
    assert topk(s, 20).shape == (4, 6)


def test_hierarchical_metrics_dict() -> None:
    m = hierarchical_metrics(TWO_SCORES, TWO_LABELS, TWO, ks=(1, 2, 20))
    assert list(m) == [
        "top1_error", "coarse_accuracy", "mistake_severity",
        "hdist@1", "hdist@2", "hdist@20", "hprecision@1", "hprecision@2", "hprecision@20",
    ]  # fmt: skip
    assert m["top1_error"] == 0.5 and m["coarse_accuracy"] == 0.75 and m["mistake_severity"] == 1.5
    assert m["hdist@1"] == 0.75 and m["hdist@2"] == 0.875 and m["hdist@20"] == pytest.approx(8 / 6)
    assert m["hprecision@1"] == 0.625 and m["hprecision@2"] == 0.75 and m["hprecision@20"] == 1.0
    assert all(isinstance(v, float) for v in m.values())
    # A bare distance matrix has no superclasses unless coarse_of is given.
    bare = hierarchical_metrics(TWO_SCORES, TWO_LABELS, TWO_D)
    assert "coarse_accuracy" not in bare and list(bare)[-1] == "hprecision@20"
    # Superclasses {0, 1} and {2..5}: sample 1 (2 vs 1) and sample 2 (0 vs 3) cross them.
    other = hierarchical_metrics(TWO_SCORES, TWO_LABELS, TWO_D, coarse_of=[0, 0, 1, 1, 1, 1], ks=())
    assert other == {"top1_error": 0.5, "coarse_accuracy": 0.5, "mistake_severity": 1.5}


def test_torch_inputs() -> None:
    s = torch.tensor(TWO_SCORES, dtype=torch.bfloat16, requires_grad=True)
    y = torch.tensor(TWO_LABELS)
    m = hierarchical_metrics(s, y, torch.tensor(TWO_D), coarse_of=torch.tensor(TWO.coarse_of), ks=(2,))
    assert m == {"top1_error": 0.5, "coarse_accuracy": 0.75, "mistake_severity": 1.5, "hdist@2": 0.875, "hprecision@2": 0.75}


# ---------------------------------------------------------------------------- unbalanced tree
# Leaves at depths 1..4. Fine classes: 0 a1 (depth 2), 1 a2x (3), 2 a3y (4), 3 a3z (4), 4 b (1),
# 5 c1 (2), 6 c2 (2).

UNBALANCED_TEXT = """\
root
-- A
---- a1
---- A2
------ a2x
------ A3
-------- a3y
-------- a3z
-- b
-- C
---- c1
---- c2
"""
UB = Hierarchy.from_indented(UNBALANCED_TEXT, ["a1", "a2x", "a3y", "a3z", "b", "c1", "c2"])
# Node heights by hand: A3 1, A2 2, A 3, C 1, root 4. D = height of the LCA node: e.g. a1-a3y: LCA A,
# 3; a3y-a3z: LCA A3, 1; b-anything: LCA root, 4; c1-c2: LCA C, 1.
UB_D = np.array(
    [
        [0, 3, 3, 3, 4, 4, 4],
        [3, 0, 2, 2, 4, 4, 4],
        [3, 2, 0, 1, 4, 4, 4],
        [3, 2, 1, 0, 4, 4, 4],
        [4, 4, 4, 4, 0, 4, 4],
        [4, 4, 4, 4, 4, 0, 1],
        [4, 4, 4, 4, 4, 1, 0],
    ],
    dtype=np.float64,
)
# The rule before version 2, max(depth a, depth b) - depth(LCA), differs on this tree (e.g. a1-b:
# LCA root, max(2, 1) - 0 = 2, where the root's height is 4).
UB_D_V1 = np.array(
    [
        [0, 2, 3, 3, 2, 2, 2],
        [2, 0, 2, 2, 3, 3, 3],
        [3, 2, 0, 1, 4, 4, 4],
        [3, 2, 1, 0, 4, 4, 4],
        [2, 3, 4, 4, 0, 2, 2],
        [2, 3, 4, 4, 2, 0, 1],
        [2, 3, 4, 4, 2, 1, 0],
    ],
    dtype=np.float64,
)
UB_LABELS = np.array([2, 4, 0, 6, 1])
UB_SCORES = scores_from_rankings(
    [
        [3, 2, 0, 1, 4, 5, 6],  # label a3y: D of top-2 = 1, 0  (version 1: 1, 0)
        [5, 6, 4, 0, 1, 2, 3],  # label b:   4, 4               (2, 2)
        [2, 3, 0, 1, 4, 5, 6],  # label a1:  3, 3               (3, 3)
        [6, 5, 4, 3, 2, 1, 0],  # label c2:  0, 1 (correct)     (0, 1)
        [4, 0, 1, 2, 3, 5, 6],  # label a2x: 4, 3               (3, 2)
    ]
)


def test_unbalanced_distances_as_hand_computed() -> None:
    assert UB.leaf_depths.tolist() == [2, 3, 4, 4, 1, 2, 2]
    np.testing.assert_array_equal(UB.distance_matrix(), UB_D)


def test_unbalanced_hand_computed() -> None:
    s, y, d = UB_SCORES, UB_LABELS, UB.distance_matrix()
    assert top1_error(s, y) == 0.8  # only c2 is right
    assert mistake_severity(s, y, d) == 3.0  # (1 + 4 + 3 + 4) / 4
    assert hdist_at_k(s, y, d, 1) == 2.4  # (1 + 4 + 3 + 0 + 4) / 5
    assert hdist_at_k(s, y, d, 2) == pytest.approx(2.3)  # (0.5 + 4 + 3 + 0.5 + 3.5) / 5
    # similarity 1 - D/4. Top-2: (0.75+1) + (0+0) + (0.25+0.25) + (1+0.75) + (0+0.25) = 4.25;
    # ideal top-2 distances per label: a3y 0,1; b 0,4; a1 0,3; c2 0,1; a2x 0,2
    # -> 1.75 + 1 + 1.25 + 1.75 + 1.5 = 7.25
    assert hprecision_at_k(s, y, d, 2) == pytest.approx(4.25 / 7.25)
    # the rule before version 2 gave other figures on the same answers: 2.25, 1.8, 1.7
    assert mistake_severity(s, y, UB_D_V1) == 2.25 and hdist_at_k(s, y, UB_D_V1, 1) == 1.8
    # depth 1: ancestors A, A, A, A, b, C, C -> right for a3y/a3z (A), a1/a3y (A), c2; wrong b/c1, a2x/b
    assert level_accuracy(s, y, UB, 1) == 0.6
    # depth 2: a1, A2, A2, A2, b, c1, c2 -> right for a3y/a3z and c2
    assert level_accuracy(s, y, UB, 2) == 0.4
    assert level_accuracy(s, y, UB, 3) == 0.4  # a1, a2x, A3, A3, b, c1, c2: the same two
    assert level_accuracy(s, y, UB, 4) == pytest.approx(0.2)  # the leaves: 1 - top1_error
    assert level_accuracy(s, y, UB, 0) == 1.0
    m = hierarchical_metrics(s, y, UB, ks=(1, 2))
    assert m["coarse_accuracy"] == 0.6  # a Hierarchy's default coarse_of is its depth-1 ancestor
    assert m["hdist@2"] == pytest.approx(2.3) and m["mistake_severity"] == 3.0
    assert m["hprecision@2"] == pytest.approx(4.25 / 7.25)


def test_hprecision_denominator_is_indexed_by_the_label() -> None:
    """The departure from the paper's code: its denominator sums the best similarities of EVERY
    class of its table, whatever labels the batch holds; ours those of each sample's label."""
    d = UB.distance_matrix()
    best2 = np.sort(1 - d / 4, axis=1)[:, ::-1][:, :2]  # each class's two best similarities, by hand below
    np.testing.assert_allclose(best2[:, 1], [0.25, 0.5, 0.75, 0.75, 0.0, 0.75, 0.75])
    # one sample of b answered ideally (b, then a class at distance 4): ours 1, the code's 1 / 10.75
    one = scores_from_rankings([[4, 0, 1, 2, 3, 5, 6]])
    assert hprecision_at_k(one, np.array([4]), d, 2) == 1.0
    assert float(np.sum(1 - d[4, [4, 0]] / 4) / best2.sum()) == pytest.approx(1 / 10.75)
    # a batch holding every class once, each answered ideally: the two agree (1)
    ideal = scores_from_rankings([list(np.argsort(d[c], kind="stable")) for c in range(7)])
    assert hprecision_at_k(ideal, np.arange(7), d, 2) == pytest.approx(1.0)


# ---------------------------------------------------------------------------- ties


def test_ties_broken_by_lower_class_index() -> None:
    s = np.array(
        [
            [0, 0, 0, 0, 0, 0],  # all equal: ranking 0, 1, 2, 3, 4, 5
            [1, 3, 3, 0, 3, 0],  # 1, 2, 4 tie at 3, then 0, then 3 and 5 tie at 0
            [0, 0, 0, 5, 5, 0],  # the label (4) ties with 3 and loses to the lower index
        ],
        dtype=np.float32,
    )
    y = np.array([4, 3, 4])
    assert topk(s, 6).tolist() == [[0, 1, 2, 3, 4, 5], [1, 2, 4, 0, 3, 5], [3, 4, 0, 1, 2, 5]]
    assert top1_error(s, y) == 1.0
    # top-1 distances on TWO: D[4, 0] = 2, D[3, 1] = 2, D[4, 3] = 1
    assert mistake_severity(s, y, TWO_D) == pytest.approx(5 / 3)
    # top-3: (2 + 2 + 2) / 3, (2 + 2 + 1) / 3, (1 + 0 + 2) / 3 -> mean (6 + 5 + 3) / 9
    assert hdist_at_k(s, y, TWO_D, 3) == pytest.approx(14 / 9)
    # hprecision@3: sims (0+0+0) + (0+0+0.5) + (0.5+1+0) = 2 over ideal 3 * (1 + 0.5 + 0.5) = 6
    assert hprecision_at_k(s, y, TWO_D, 3) == pytest.approx(2 / 6)


# ---------------------------------------------------------------------------- consistency


def _reference(scores: np.ndarray, labels: np.ndarray, d: np.ndarray, k: int) -> tuple[float, float]:
    """Per-sample loops written after the paper's run_xent.py (one batch = the whole set)."""
    n, c = scores.shape
    table = np.empty((n, k))
    for i in range(n):
        ranked = sorted(range(c), key=lambda j: (-scores[i, j], j))
        table[i] = [d[labels[i], ranked[j]] for j in range(k)]
    max_dist = d.max()
    best = np.array([1 - np.sort(d[labels[i]]) / max_dist for i in range(n)])
    return float(np.mean(table)), float(np.sum(1 - table / max_dist) / np.sum(best[:, :k]))


@pytest.mark.parametrize("k", [1, 3, 7])
def test_matches_per_sample_reference(k: int) -> None:
    rng = np.random.default_rng(k)
    s = rng.integers(0, 4, size=(300, 7)).astype(np.float64)  # many ties
    y = rng.integers(0, 7, size=300)
    ref_hdist, ref_hprec = _reference(s, y, UB_D, k)
    assert hdist_at_k(s, y, UB_D, k) == pytest.approx(ref_hdist)
    assert hprecision_at_k(s, y, UB_D, k) == pytest.approx(ref_hprec)


def test_consistency_on_random_data() -> None:
    rng = np.random.default_rng(0)
    s = rng.normal(size=(500, 7))
    y = rng.integers(0, 7, size=500)
    pred = s.argmax(axis=1)
    assert hdist_at_k(s, y, UB_D, 1) == pytest.approx(UB_D[y, pred].mean())
    wrong = pred != y
    assert mistake_severity(s, y, UB_D) == pytest.approx(hdist_at_k(s[wrong], y[wrong], UB_D, 1))
    assert hprecision_at_k(s, y, UB_D, 1) == pytest.approx(1 - hdist_at_k(s, y, UB_D, 1) / 4)
    m = hierarchical_metrics(s, y, UB, ks=(1, 5, 20))
    assert m["top1_error"] == top1_error(s, y)
    assert m["coarse_accuracy"] == coarse_accuracy(s, y, UB.coarse_of)
    assert m["mistake_severity"] == pytest.approx(mistake_severity(s, y, UB_D))
    for k in (1, 5, 20):
        assert m[f"hdist@{k}"] == pytest.approx(hdist_at_k(s, y, UB_D, k))
        assert m[f"hprecision@{k}"] == pytest.approx(hprecision_at_k(s, y, UB_D, k))


def test_perfect_and_worst_classifiers() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 7, size=200)
    perfect = np.eye(7)[y] * 10
    m = hierarchical_metrics(perfect, y, UB, ks=(1,))
    assert m["top1_error"] == 0.0 and m["hdist@1"] == 0.0 and m["hprecision@1"] == 1.0
    assert math.isnan(m["mistake_severity"]) and math.isnan(mistake_severity(perfect, y, UB_D))
    # Always predict the farthest class: severity is each label's largest distance, the maximum.
    farthest = np.eye(7)[UB_D[y].argmax(axis=1)]
    assert mistake_severity(farthest, y, UB_D) == pytest.approx(UB_D[y].max(axis=1).mean())
    assert mistake_severity(farthest, y, UB_D) >= mistake_severity(rng.normal(size=(200, 7)), y, UB_D)
    y2 = rng.integers(0, 6, size=50)
    assert mistake_severity(np.eye(6)[(y2 + 3) % 6], y2, TWO_D) == TWO_D.max() == 2.0


def test_large_input_is_vectorised() -> None:
    # Not timed: a per-sample Python loop would still pass, but this exercises the full-size path.
    rng = np.random.default_rng(2)
    tree = Hierarchy.from_fine_to_coarse(np.repeat(np.arange(20), 5))
    s = rng.normal(size=(10_000, 100)).astype(np.float32)
    y = rng.integers(0, 100, size=10_000)
    m = hierarchical_metrics(s, y, tree)
    assert 0.9 < m["top1_error"] <= 1.0 and 1.9 < m["hdist@20"] <= 2.0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: top1_error(np.zeros(5), np.zeros(5, int)), "scores"),
        (lambda: top1_error(np.zeros((0, 3)), np.zeros(0, int)), "non-empty"),
        (lambda: top1_error(np.full((2, 3), np.nan), np.zeros(2, int)), "NaN"),
        (lambda: top1_error(np.zeros((2, 3)), np.zeros(3, int)), "labels"),
        (lambda: top1_error(np.zeros((2, 3)), np.zeros(2)), "integers"),
        (lambda: top1_error(np.zeros((2, 3)), np.array([0, 3])), r"\[0, 3\)"),
        (lambda: hdist_at_k(np.zeros((2, 6)), np.zeros(2, int), np.zeros((5, 5)), 1), "shape"),
        (lambda: hdist_at_k(np.zeros((2, 6)), np.zeros(2, int), TWO_D + 1, 1), "diagonal"),
        (lambda: hdist_at_k(np.zeros((2, 6)), np.zeros(2, int), TWO_D, 0), "positive"),
        (lambda: topk(np.zeros((2, 6)), 1.5), "positive"),
        (lambda: coarse_accuracy(np.zeros((2, 6)), np.zeros(2, int), [0, 1]), "coarse_of"),
        (lambda: level_accuracy(np.zeros((2, 5)), np.zeros(2, int), TWO, 1), "coarse_of"),
        (lambda: hierarchical_metrics(np.zeros((2, 6)), np.zeros(2, int), TWO, ks=(5, 0)), "positive"),
    ],
)
def test_invalid_inputs(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------- real WordNet tree


@pytest.fixture(scope="module")
def wordnet() -> Hierarchy:
    names_path = SHARED_DATA / "cifar100" / "fine_to_coarse.json"
    tree_path = SHARED_DATA / "cifar100" / "wordnet-hierarchy.txt"
    if not names_path.is_file() or not tree_path.is_file():
        pytest.skip(f"real CIFAR-100 label files not present under {SHARED_DATA / 'cifar100'}")
    names = json.loads(names_path.read_text(encoding="utf-8"))
    return Hierarchy.from_indented_file(
        tree_path, names["fine_label_names"], coarse_of=names["fine_to_coarse"], coarse_names=names["coarse_label_names"]
    )


@pytest.mark.real_data
def test_real_wordnet_tree(wordnet: Hierarchy) -> None:
    rng = np.random.default_rng(3)
    s = rng.normal(size=(2000, 100))
    y = rng.integers(0, 100, size=2000)
    d = wordnet.distance_matrix()
    assert topk(s, 5).shape == (2000, 5)
    m = hierarchical_metrics(s, y, wordnet, ks=(1, 5, 20, 100))
    assert 0.9 < m["top1_error"] <= 1.0 and 0.0 <= m["coarse_accuracy"] <= 0.2
    assert 1.0 <= m["mistake_severity"] <= 8.0 and 0.0 <= m["hdist@1"] <= 8.0
    for k in (1, 5, 20, 100):
        assert 0.0 <= m[f"hprecision@{k}"] <= 1.0
    # all 100 classes retrieved: hdist is each label's mean distance, hprecision is 1
    assert m["hdist@100"] == pytest.approx(d[y].mean()) and m["hprecision@100"] == pytest.approx(1.0)
    assert level_accuracy(s, y, wordnet, 0) == 1.0
    assert level_accuracy(s, y, wordnet, 8) == pytest.approx(1 - m["top1_error"])
    assert m["coarse_accuracy"] == coarse_accuracy(s, y, wordnet.coarse_of)
