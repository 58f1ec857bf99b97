"""A point's batched latency from its trial's per-exit timings: the time of a batch whose images split.

In a batch, dynamic inference runs each segment (exit k's stages, then its heads and decision) once,
on the images still running there (trainables/dynamic.py): segment k's call costs a fixed part that
does not shrink with the sub-batch (dispatch, thread wake-ups, small kernels) plus a part per
image, and does not run at all when no image reaches it. Weighting the times of whole batches that
all leave at exit k by the fraction leaving there (the batch-1 rule) charges a segment reached by
few images only their share of its fixed part; on 2 CPU cores that came out 10-18% short of the
predictor's measured batched time (issue 16).

So the trial times the predictor with every image answering at exit k at several batch sizes
(1, a sub-batch, the batch: trainables/engine/cost.py), and a segment's time on n images is read
off those timings: the difference of consecutive exits' call times at each size, linear in n
between the sizes timed (0 images: 0 ms). A batch's time is the sum over segments of the time on
the images that reach each; a point's batched latency per image is its expectation over batches
of B calibration images drawn at random (the images reaching segment k are binomial in B and the
fraction of the point's images that reach k), divided by B. At batch 1 this is the batch-1 rule
exactly.

Pure: numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["BATCH_COSTS", "batch_call_ms", "expected_batch_ms", "segment_call_ms", "timed_sizes"]

#: The latency costs (per image, cumulative per exit) timed at a batch size each, smallest first.
BATCH_COSTS = ("latency_ms", "latency_ms_subbatch", "latency_ms_batched")


def timed_sizes(costs: Mapping[str, np.ndarray], batch_of: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """(Z,) batch sizes and (Z, K) per-image times of the latency costs timed at a known batch size
    (sorted by size, one per size); None when none is (a cache without batch sizes)."""
    named = sorted({int(batch_of[n]): n for n in BATCH_COSTS if n in costs and n in batch_of}.items())
    if not named:
        return None
    return (np.asarray([s for s, _ in named], dtype=np.float64),
            np.stack([np.asarray(costs[n], dtype=np.float64) for _, n in named]))


def segment_call_ms(sizes: np.ndarray, per_image: np.ndarray) -> np.ndarray:
    """(Z, K) ms of one call of segment k on sizes[z] images: exit k's call minus exit k-1's."""
    calls = np.asarray(per_image, dtype=np.float64) * np.asarray(sizes, dtype=np.float64)[:, None]
    return np.diff(calls, axis=1, prepend=0.0)


def _segment_at(sizes: np.ndarray, segments: np.ndarray, n: np.ndarray, k: int) -> np.ndarray:
    """Segment k's call time on n images (0 on none), linear between the timed sizes and beyond the last."""
    xs, ys = np.concatenate([[0.0], sizes]), np.concatenate([[0.0], segments[:, k]])
    n = np.asarray(n, dtype=np.float64)
    out = np.interp(n, xs, ys)
    if len(xs) > 1:  # past the largest size timed: on along the last piece
        slope = (ys[-1] - ys[-2]) / max(xs[-1] - xs[-2], 1e-12)
        out = np.where(n > xs[-1], ys[-1] + slope * (n - xs[-1]), out)
    return out


def batch_call_ms(reach: np.ndarray, sizes: np.ndarray, per_image: np.ndarray) -> np.ndarray:
    """ms of one predictor call on a batch whose (..., K) images reach each segment (`reach[..., k]`:
    how many images run exit k's segment: those leaving at k or later)."""
    segments = segment_call_ms(sizes, per_image)
    reach = np.asarray(reach, dtype=np.float64)
    return sum(_segment_at(sizes, segments, reach[..., k], k) for k in range(segments.shape[1]))


def _binomial_pmf(batch: int, p: np.ndarray) -> np.ndarray:
    """(..., batch + 1) P(n of `batch` draws succeed) for success probabilities p (...)."""
    n = np.arange(batch + 1, dtype=np.float64)
    log_choose = np.asarray([math.lgamma(batch + 1) - math.lgamma(i + 1) - math.lgamma(batch - i + 1) for i in range(batch + 1)])
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pmf = log_choose + np.where(n > 0, n * np.log(p), 0.0) + np.where(n < batch, (batch - n) * np.log1p(-p), 0.0)
    return np.exp(log_pmf)


def expected_batch_ms(exit_fraction: np.ndarray, sizes: np.ndarray, per_image: np.ndarray, batch: int | None = None) -> np.ndarray:
    """(...,) expected ms per image of a batch of `batch` images (default: the largest size timed)
    drawn from images leaving at each exit with `exit_fraction` (..., K)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    b = int(batch or sizes[-1])
    f = np.asarray(exit_fraction, dtype=np.float64)
    reach = np.flip(np.cumsum(np.flip(f, axis=-1), axis=-1), axis=-1)  # fraction of images that run segment k
    segments = segment_call_ms(sizes, per_image)
    n = np.arange(b + 1, dtype=np.float64)
    total = np.zeros(f.shape[:-1])
    for k in range(f.shape[-1]):
        total = total + _binomial_pmf(b, reach[..., k]) @ _segment_at(sizes, segments, n, k)
    return total / b
