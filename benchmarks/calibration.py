"""Threshold settings evaluated per second, 10,000 samples x 4 exits: the bitset evaluator the
calibration uses vs the plain broadcast over settings x samples, measured in the same process.
Also the wall time of one whole calibration (inner Optuna search + test re-scoring) at the
smoke and full budgets of gran_hbn, to set against a trial's training time.

    python -m benchmarks.calibration [--samples 10000] [--exits 4] [--settings 20000]

Prints JSON lines; the ratio line is the figure to quote. CPU only (numpy).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from trainables.exits import BitsetEvaluator, ExitCache, evaluate_dense
from trainables.engine.family import TrialInputs


def synthetic_cache(samples: int, exits: int, seed: int = 0) -> ExitCache:
    """Exit outputs whose confidence and accuracy grow with depth, like a trained network's."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 100, samples)
    yc = y // 5
    scale = np.arange(1, exits + 1)[:, None, None]
    fl = (rng.normal(size=(exits, samples, 100)) * 2).astype(np.float32)
    fl[np.arange(exits)[:, None], np.arange(samples)[None], y[None]] += 1.5 * scale[:, :, 0]
    cl = (rng.normal(size=(exits, samples, 20)) * 2).astype(np.float32)
    cl[np.arange(exits)[:, None], np.arange(samples)[None], yc[None]] += 2.5 * scale[:, :, 0]
    return ExitCache(("fine", "coarse"), {"fine": fl, "coarse": cl}, {"fine": y, "coarse": yc},
                     {"flops": np.cumsum(np.full(exits, 3e8))}, {"flops": 1.2e9})


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--exits", type=int, default=4)
    ap.add_argument("--settings", type=int, default=20_000)
    ap.add_argument("--dense-settings", type=int, default=1_000)
    args = ap.parse_args()
    cache = synthetic_cache(args.samples, args.exits)
    stats = cache.stats()
    rng = np.random.default_rng(1)
    ev = BitsetEvaluator(stats, levels=64)
    idx = ev.random_settings(args.settings, rng)
    t = ev.thresholds(idx)
    n_dense = min(args.dense_settings, args.settings)
    t_fast = timed(lambda: ev.evaluate(idx))
    t_dense = timed(lambda: evaluate_dense(stats, t[:n_dense]))
    fast, dense = args.settings / t_fast, n_dense / t_dense
    same = np.allclose(ev.evaluate(idx[:n_dense]).accuracy, evaluate_dense(stats, t[:n_dense]).accuracy)
    print(json.dumps({"what": "settings_per_second", "samples": args.samples, "exits": args.exits,
                      "bitset": round(fast), "dense_broadcast": round(dense), "ratio": round(fast / dense, 1),
                      "identical_scores": bool(same)}))
    from spaces.gran_hbn import BUDGETS, DECLARATION, GranHBN

    for name, budget in BUDGETS.items():
        start = time.perf_counter()
        ev_ = GranHBN(DECLARATION, budget.calibration).evaluate(cache, TrialInputs({}, 0, None))
        res = ev_.state
        print(json.dumps({"what": "calibration_seconds", "budget": name, "seconds": round(time.perf_counter() - start, 3),
                          "settings_evaluated": res.n_evaluated, "front_size": len(res.front),
                          "points_kept": len(res.thresholds), "hypervolume": round(res.hypervolume, 4)}))


if __name__ == "__main__":
    main()
