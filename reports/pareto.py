"""Pareto sorting and hypervolume: pure functions over arrays, no drawing.

Convention: every function takes a points array of shape (n, m) and a `maximize` sequence of m
booleans (True: larger is better). Internally everything is turned into minimisation.
The hypervolume is exact (slicing over the first objective, 2-D sweep inside), O(n^2 log n) for
three objectives, which is ample for fronts of a few thousand points.
"""

from __future__ import annotations

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


def non_dominated_mask(points: np.ndarray, maximize: Sequence[bool], chunk: int = 1024) -> np.ndarray:
    """Boolean mask of the points no other point dominates.

    A dominates B when A is at least as good in every objective and strictly better in one.
    Duplicates do not dominate each other, so every copy of a front point is kept.
    Rows with a NaN are never on the front.
    """
    pts = _as_minimisation(points, maximize)
    n = pts.shape[0]
    finite = np.isfinite(pts).all(axis=1)
    mask = finite.copy()
    cand = pts[finite]
    idx = np.flatnonzero(finite)
    for start in range(0, len(idx), chunk):
        block = cand[start:start + chunk]  # (b, m)
        le = (cand[None, :, :] <= block[:, None, :]).all(axis=2)  # other <= me everywhere
        lt = (cand[None, :, :] < block[:, None, :]).any(axis=2)  # and better somewhere
        dominated = (le & lt).any(axis=1)
        mask[idx[start:start + chunk]] = ~dominated
    return mask if n else np.zeros(0, dtype=bool)


class ParetoFront(NamedTuple):
    """What a front is made of, for tests and for the drawing code alike."""

    indices: np.ndarray  # indices into the input of the non-dominated points, sorted by objective 0
    mask: np.ndarray  # boolean mask over the input
    hypervolume: float


def _hv2d(pts: np.ndarray, ref: np.ndarray) -> float:
    """2-D hypervolume for minimisation; points assumed to be strictly better than ref."""
    if len(pts) == 0:
        return 0.0
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    p = pts[order]
    # keep the staircase: running minimum of objective 1 along increasing objective 0
    best1 = np.minimum.accumulate(p[:, 1])
    keep = np.ones(len(p), dtype=bool)
    keep[1:] = best1[1:] < best1[:-1]
    p = p[keep]
    x_next = np.append(p[1:, 0], ref[0])
    return float(np.sum((x_next - p[:, 0]) * (ref[1] - p[:, 1])))


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
