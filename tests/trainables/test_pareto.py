"""Pareto sorting and hypervolume against hand-computed cases and brute force."""

import numpy as np
import pytest

from trainables.pareto import hypervolume, non_dominated_mask, pareto_front


def brute_mask(p):
    n = len(p)
    m = np.ones(n, bool)
    for i in range(n):
        for j in range(n):
            if (p[j] <= p[i]).all() and (p[j] < p[i]).any():
                m[i] = False
    return m


def test_hand_2d_maximise():
    pts = np.array([[1, 3], [2, 2], [3, 1], [1, 1], [2, 2]], dtype=float)
    # (1,1) is dominated by (2,2); the duplicate (2,2) keeps both copies
    assert non_dominated_mask(pts, [True, True]).tolist() == [True, True, True, False, True]


def test_hand_2d_hypervolume():
    # maximise both, reference (0, 0): union of 1x3, 2x2, 3x1 boxes = 3 + 2 + 1 = 6
    pts = np.array([[1, 3], [2, 2], [3, 1]], dtype=float)
    assert hypervolume(pts, [0, 0], [True, True]) == pytest.approx(6.0)


def test_hand_3d_hypervolume():
    # minimise, reference (2,2,2): points (1,1,1) alone = 1; add (0,1.5,1.5): its box 2*0.5*0.5=0.5,
    # overlap with the first: x in [1,2] y in [1.5,2] z in [1.5,2] = 0.25 -> total 1.25
    pts = np.array([[1, 1, 1], [0, 1.5, 1.5]], dtype=float)
    assert hypervolume(pts, [2, 2, 2], [False] * 3) == pytest.approx(1.25)


def test_mixed_directions_and_reference():
    # accuracy max, flops min; reference (0 acc, 1 flops): (0.5, 0.5) -> 0.25; (0.8, 0.9) adds 0.3*0.1
    pts = np.array([[0.5, 0.5], [0.8, 0.9]])
    assert hypervolume(pts, [0.0, 1.0], [True, False]) == pytest.approx(0.25 + 0.03)


def test_points_outside_reference_add_nothing():
    assert hypervolume(np.array([[3.0, 3.0]]), [2, 2], [False, False]) == 0.0


@pytest.mark.parametrize("m", [2, 3, 4])
def test_mask_matches_brute_force(m):
    rng = np.random.default_rng(m)
    for _ in range(20):
        p = rng.integers(0, 5, (30, m)).astype(float)
        assert (non_dominated_mask(p, [False] * m) == brute_mask(p)).all()


def test_nan_rows_never_on_front():
    p = np.array([[np.nan, 1.0], [0.5, 0.5]])
    assert non_dominated_mask(p, [True, True]).tolist() == [False, True]


def test_3d_hypervolume_matches_inclusion_exclusion():
    rng = np.random.default_rng(0)
    p = rng.random((6, 3))
    ref = np.ones(3)
    # inclusion-exclusion over all subsets of boxes [p, ref]
    total = 0.0
    from itertools import combinations

    for r in range(1, len(p) + 1):
        for sub in combinations(range(len(p)), r):
            corner = p[list(sub)].max(axis=0)
            total += (-1) ** (r + 1) * np.prod(ref - corner)
    assert hypervolume(p, ref, [False] * 3) == pytest.approx(total)


def test_pareto_front_info():
    pts = np.array([[3, 1], [1, 3], [1, 1]], dtype=float)
    info = pareto_front(pts, [True, True], [0, 0])
    assert info.indices.tolist() == [1, 0]
    assert info.hypervolume == pytest.approx(5.0)
