"""Pareto sorting and hypervolume: pure functions over arrays, no drawing.

Convention: every function takes a points array of shape (n, m) and a `maximize` sequence of m
booleans (True: larger is better). Internally everything is turned into minimisation.
The hypervolume is exact: a sweep that grows a 2-D staircase (two and three objectives),
slicing recursion beyond. Non-dominated sorting is O(n log n) for two and three objectives.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["ParetoFront", "hypervolume", "non_dominated_mask", "pareto_front"]


def _as_minimisation(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2:
        raise ValueError(f"points must be 2-D (n, m), got shape {pts.shape}")
    if len(maximize) != pts.shape[1]:
        raise ValueError(f"maximize has {len(maximize)} entries for {pts.shape[1]} objectives")
    sign = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)
    return pts * sign


def _nd_mask_unique_3d(pts: np.ndarray) -> np.ndarray:
    """Non-dominated mask of distinct 3-D points (minimisation), O(n log n).

    Sweep in lexicographic order: any point that dominates p comes before p. A Fenwick tree over
    the ranks of objective 1 keeps the prefix minimum of objective 2 among the points passed.
    """
    n = len(pts)
    order = np.lexsort((pts[:, 2], pts[:, 1], pts[:, 0]))
    ranks = np.searchsorted(np.unique(pts[:, 1]), pts[:, 1]) + 1  # 1-based
    size = int(ranks.max())
    tree = [np.inf] * (size + 1)
    mask = np.ones(n, dtype=bool)
    r_list = ranks.tolist()
    z_list = pts[:, 2].tolist()
    for i in order.tolist():
        r, z = r_list[i], z_list[i]
        best = np.inf
        j = r
        while j > 0:
            if tree[j] < best:
                best = tree[j]
            j -= j & -j
        if best <= z:
            mask[i] = False
            continue
        j = r
        while j <= size:
            if z < tree[j]:
                tree[j] = z
            j += j & -j
    return mask


def non_dominated_mask(points: np.ndarray, maximize: Sequence[bool], chunk: int = 1024) -> np.ndarray:
    """Boolean mask of the points no other point dominates.

    A dominates B when A is at least as good in every objective and strictly better in one.
    Duplicates do not dominate each other, so every copy of a front point is kept.
    Rows with a NaN are never on the front. Two and three objectives take O(n log n) sweeps;
    more fall back to chunked pairwise comparison.
    """
    pts = _as_minimisation(points, maximize)
    n, m = pts.shape
    mask = np.zeros(n, dtype=bool)
    finite = np.flatnonzero(np.isfinite(pts).all(axis=1))
    if len(finite) == 0:
        return mask
    uniq, inverse = np.unique(pts[finite], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    if m == 1:
        umask = uniq[:, 0] == uniq[:, 0].min()
    elif m == 2:
        # lexicographic order (np.unique sorts rows): a point survives iff its objective 1
        # beats every earlier point's
        prev_best = np.minimum.accumulate(np.concatenate([[np.inf], uniq[:-1, 1]]))
        umask = uniq[:, 1] < prev_best
    elif m == 3:
        umask = _nd_mask_unique_3d(uniq)
    else:
        umask = np.ones(len(uniq), dtype=bool)
        for start in range(0, len(uniq), chunk):
            block = uniq[start : start + chunk]
            le = (uniq[None, :, :] <= block[:, None, :]).all(axis=2)
            lt = (uniq[None, :, :] < block[:, None, :]).any(axis=2)
            umask[start : start + chunk] = ~(le & lt).any(axis=1)
    mask[finite] = umask[inverse]
    return mask


class ParetoFront(NamedTuple):
    """What a front is made of, for tests and for the drawing code alike."""

    indices: np.ndarray  # indices into the input of the non-dominated points, sorted by objective 0
    mask: np.ndarray  # boolean mask over the input
    hypervolume: float


class _Staircase:
    """The 2-D region dominated by a growing point set (minimisation), with its area kept current."""

    def __init__(self, ref_x: float, ref_y: float) -> None:
        self.rx, self.ry = ref_x, ref_y
        self.xs: list[float] = []  # ascending
        self.ys: list[float] = []  # strictly descending
        self.area = 0.0

    def add(self, px: float, py: float) -> None:
        if px >= self.rx or py >= self.ry:
            return
        j = bisect.bisect_right(self.xs, px) - 1
        if j >= 0 and self.ys[j] <= py:
            return  # dominated in 2-D: nothing new
        h = self.ys[j] if j >= 0 else self.ry  # staircase height just right of px
        i = j + 1
        x_prev = px
        gained = 0.0
        k = i
        while k < len(self.xs) and self.ys[k] >= py:  # points p now dominates
            gained += (self.xs[k] - x_prev) * (h - py)
            x_prev, h = self.xs[k], self.ys[k]
            k += 1
        x_end = self.xs[k] if k < len(self.xs) else self.rx
        gained += (x_end - x_prev) * (h - py)
        del self.xs[i:k], self.ys[i:k]
        self.xs.insert(i, px)
        self.ys.insert(i, py)
        self.area += gained


def _hv2d(pts: np.ndarray, ref: np.ndarray) -> float:
    st = _Staircase(float(ref[0]), float(ref[1]))
    for x, y in pts.tolist():
        st.add(x, y)
    return st.area


def _hv3d(pts: np.ndarray, ref: np.ndarray) -> float:
    """Sweep along objective 2, growing the 2-D staircase of objectives 0 and 1: O(n^2) worst."""
    order = np.argsort(pts[:, 2], kind="stable")
    p = pts[order].tolist()
    st = _Staircase(float(ref[0]), float(ref[1]))
    total = 0.0
    for i, (x, y, z) in enumerate(p):
        st.add(x, y)
        z_next = p[i + 1][2] if i + 1 < len(p) else float(ref[2])
        total += st.area * (z_next - z)
    return total


def _hv_min(pts: np.ndarray, ref: np.ndarray) -> float:
    m = pts.shape[1]
    inside = (pts < ref).all(axis=1)
    pts = pts[inside]
    if len(pts) == 0:
        return 0.0
    if m == 1:
        return float(ref[0] - pts[:, 0].min())
    if m == 2:
        return _hv2d(pts, ref)
    if m == 3:
        return _hv3d(pts, ref)
    # slice along objective 0: between consecutive distinct values the dominated region's
    # cross-section is the (m-1)-D hypervolume of the points already passed.
    order = np.argsort(pts[:, 0], kind="stable")
    p = pts[order]
    xs = np.append(p[:, 0], ref[0])
    total = 0.0
    for i in range(len(p)):
        width = xs[i + 1] - xs[i]
        if width <= 0:
            continue
        total += width * _hv_min(p[: i + 1, 1:], ref[1:])
    return total


def hypervolume(points: np.ndarray, reference: Sequence[float], maximize: Sequence[bool]) -> float:
    """Exact hypervolume dominated by `points` and bounded by `reference`.

    Points that do not strictly improve on the reference in every objective add nothing.
    """
    pts = _as_minimisation(points, maximize)
    ref = _as_minimisation(np.asarray(reference, dtype=np.float64)[None, :], maximize)[0]
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[non_dominated_mask(pts, [False] * pts.shape[1])]
    return _hv_min(pts, ref)


def pareto_front(points: np.ndarray, maximize: Sequence[bool], reference: Sequence[float]) -> ParetoFront:
    mask = non_dominated_mask(points, maximize)
    idx = np.flatnonzero(mask)
    if len(idx):
        idx = idx[np.argsort(np.asarray(points)[idx, 0], kind="stable")]
    return ParetoFront(indices=idx, mask=mask, hypervolume=hypervolume(np.asarray(points)[mask], reference, maximize))
