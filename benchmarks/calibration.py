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

from trainables.exits import BitsetEvaluator, ExitCache, calibrate, evaluate_dense


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
    return ExitCache(fl, cl, y, yc, np.cumsum(np.full(exits, 3e8)), 1.2e9)


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
    stats = synthetic_cache(args.samples, args.exits).stats()
    rng = np.random.default_rng(1)
    ev = BitsetEvaluator(stats, levels=64)
    fi, ci = ev.random_settings(args.settings, rng)
    tf, tc = ev.thresholds(fi, ci)
    n_dense = min(args.dense_settings, args.settings)
    t_fast = timed(lambda: ev.evaluate(fi, ci))
    t_dense = timed(lambda: evaluate_dense(stats, tf[:n_dense], tc[:n_dense]))
    fast, dense = args.settings / t_fast, n_dense / t_dense
    same = np.allclose(ev.evaluate(fi[:n_dense], ci[:n_dense]).accuracy, evaluate_dense(stats, tf[:n_dense], tc[:n_dense]).accuracy)
    print(json.dumps({"what": "settings_per_second", "samples": args.samples, "exits": args.exits,
                      "bitset": round(fast), "dense_broadcast": round(dense), "ratio": round(fast / dense, 1),
                      "identical_scores": bool(same)}))
    from spaces.gran_hbn import BUDGETS

    for name, budget in BUDGETS.items():
        t = time.perf_counter()
        res = calibrate(stats, stats, seed=0, **budget.calibration)
        print(json.dumps({"what": "calibration_seconds", "budget": name, "seconds": round(time.perf_counter() - t, 3),
                          "settings_evaluated": res.n_evaluated, "front_size": res.front_size,
                          "points_kept": len(res.thresholds_fine), "hypervolume": round(res.hypervolume, 4)}))


if __name__ == "__main__":
    main()
