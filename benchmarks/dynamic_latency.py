"""Predicted against measured latency of a run's front points: the predictor a user loads, timed end
to end on the run's test images, beside the network without early exits.

A point's predicted latency is what its trial measured (trainables/engine/cost.py: the predictor
timed answering at each exit, at batch 1, a sub-batch and a batch) applied to where the timed images
leave: at batch 1 the mean over the images of the time to each one's exit; batched, for each batch,
the time of each segment on the images of the batch that reach it (trainables/engine/batch_latency.py).
This times the real thing: `load_operating_point(run, point_id).predict` and the plain network
(`DynamicClassifier(..., without_exits=True)`, the trial's `plain` point) at batch 1 on each of
`--images` test images, and on `--batches` batches of `--batch` test images (samples leave the
batch at their exits), in the trial's thread count.

Robust to a busy machine: after warm-up (at least `--warmup-seconds` of calls), `--rounds` rounds
each time every image and batch once with both predictors, interleaved (the order alternates), so
a busy spell touches both alike; an image's (a batch's) time is the same robust statistic over
rounds as the trial's own measurement (trainables/engine/cost.py `robust_ms`: the lower quartile). The spread
(max - min over rounds of the round means, relative to their median) is printed, with a warning
when it exceeds `--spread-warning`. So is the spread of the trial's own measurement, the one the
prediction comes from (status.json `latency.spread`: the largest interquartile range over its rounds
of any timing, relative to the median), with a warning when it exceeds the same bound: a trial
timed on a busy machine predicts from busy timings, and re-measuring it is the remedy.

`--retime` also separates the model from the machine's mood: the trial's own calls (the predictor
answering at each exit, `trainables.engine.cost.latency_calls`, as the trial timed them) are timed
again, in the same interleaved rounds as the point's calls (one batch size at a time), and the
prediction made from those timings is compared with the point's measured time
(`retimed_ratio_batch1`, `retimed_ratio_batched`).
A trial measured on a busy machine (or a quiet one, timed now on a busy one) moves `ratio_*`, not
`retimed_ratio_*`, which is off only where predicting a point from its per-exit times is.

    python -m benchmarks.dynamic_latency RUN_DIR [--point-id ID ...] [--images 200] [--batches 4]
        [--batch B] [--rounds 5] [--threads N] [--tolerance 0.1] [--retime]

Prints one JSON line per point (predicted and measured ms, their ratio predicted / measured at
batch 1 and batched, the measured speed-up over the plain network, the FLOPs speed-up), a summary
line (how many points are within `--tolerance`, the default point's measured speed-up, how many
points beat the plain network in measured time), then the same as a table.

The machine's pace: a stored time is what the trial measured then; a machine whose speed drifts
(a shared VM: ~20% from one minute to the next) moves every `ratio_*` alike. So each point also
gets `pace_*` (the plain network measured now over the trial's own time of it: 1.2 = 20% slower
now) and the speed-up the trial predicted over its plain network against the one measured now
(`speedup_ratio_*` = 1 / (ratio * pace): the prediction at the machine's pace now; above 1 it is
optimistic), counted within
`--tolerance` in the summary beside the raw ratios.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["measure_arms", "measure_pair", "predicted_batch_ms", "retimed_prediction", "spread", "warm_up"]


def warm_up(fns, seconds: float, min_calls: int = 3) -> None:
    """Call every fn at least `min_calls` times, and on until `seconds` have passed."""
    t0, n = time.perf_counter(), 0
    while n < min_calls or time.perf_counter() - t0 < seconds:
        for fn in fns:
            fn()
        n += 1


def measure_arms(fns, inputs: list[Any], rounds: int, timer) -> tuple[np.ndarray, np.ndarray]:
    """Time fn(x) for every fn of `fns` and every x of `inputs` in `rounds` interleaved rounds (for
    each input the predictors take turns, the one that goes first rotating with the round and the
    input). Returns, per predictor, the mean over inputs of each input's time per image (ms;
    `robust_ms` over rounds), shape (n,), and the round means per image, shape (rounds, n)."""
    from trainables.engine.cost import robust_ms

    n = len(fns)
    ms = np.zeros((max(1, rounds), n, len(inputs)))
    for r in range(len(ms)):
        for i, x in enumerate(inputs):
            for step in range(n):
                j = (r + i + step) % n
                ms[r, j, i] = timer(fns[j], x) / len(x)
    return robust_ms(ms).mean(axis=1), ms.mean(axis=2)


def measure_pair(a, b, inputs: list[Any], rounds: int, timer) -> tuple[np.ndarray, np.ndarray]:
    """`measure_arms` of two predictors (the one that goes first alternates)."""
    return measure_arms((a, b), inputs, rounds, timer)


def reach_counts(exits: np.ndarray, n_exits: int) -> np.ndarray:
    """(K,) images of a batch that run each exit's segment: those leaving there or later."""
    exits = np.asarray(exits)
    return np.asarray([(exits >= k).sum() for k in range(n_exits)], dtype=np.float64)


def predicted_batch_ms(clf, x, status: dict[str, Any]) -> float:
    """The trial's prediction of the time per image of `clf.predict(x)`: each segment's time (its
    stored per-exit timings at the sizes it timed) on the images of x that reach it. A trial that
    stored no sizes (latency version 2): the mean of its images' per-exit batched times."""
    from trainables.engine.batch_latency import BATCH_COSTS, batch_call_ms, timed_sizes

    pred = clf.predict(x)
    sizes = (status.get("latency") or {}).get("batch_sizes")
    if not sizes:
        return float(np.mean(pred.cost["latency_ms_batched"]))
    batch_of = dict(zip(BATCH_COSTS, (sizes[0], sizes[len(sizes) // 2], sizes[-1])))  # as the engine stores them
    timed = timed_sizes(clf.exit_costs, batch_of)
    K = clf.model.n_exits
    return float(batch_call_ms(reach_counts(pred.exit, K), *timed)) / len(x)


def retimed_prediction(clf, data, singles: list[Any], batches: list[Any], rounds: int, timer) -> dict[str, float]:
    """The point's calls and the trial's own per-exit calls (`latency_calls` on the point's network, at
    its precision: batch 1, a sub-batch, the batch), all timed in the same interleaved rounds
    (`interleaved_rounds`, one batch size at a time, lower quartile per call). Returns, at batch 1
    and batched, the point's measured time per image (mean over inputs) and the prediction made from
    the per-exit calls' times (each input: each segment's time on its images that reach it,
    trainables/engine/batch_latency.py; the plain network: its own call)."""
    from trainables.engine.batch_latency import batch_call_ms
    from trainables.engine.cost import SETTLE_S, interleaved_rounds, latency_calls, robust_ms

    batch = len(batches[0])
    engine = latency_calls(clf.model, data, batches[0], batch_size=batch, autocast=clf.autocast,
                           channels_last=clf.channels_last)
    K, Z = engine.n_exits, len(engine.sizes)
    calls = list(engine.calls)  # sizes x [exits, plain]
    inputs = []  # (size index, images in the input, the point's call column, images reaching each segment)
    for b, xs in ((0, singles), (Z - 1, batches)):
        if b == 0 and xs is batches:
            continue  # a batch of one image is batch 1
        for x in xs:
            inputs.append((b, len(x), len(calls), reach_counts(clf.predict(x).exit, K)))
            calls.append(functools.partial(clf.predict, x))
    groups = [[*engine.groups[b], *(c for bb, _, c, _ in inputs if bb == b)] for b in range(Z)]
    ms = robust_ms(interleaved_rounds(calls, timer, rounds, warmup=1, groups=groups, settle_s=SETTLE_S))  # one size at a time
    sizes = np.asarray(engine.sizes, dtype=np.float64)
    per_call = ms[: Z * (K + 1)].reshape(Z, K + 1)
    per_image = per_call[:, :K] / sizes[:, None]

    def predicted(b: int, reach: np.ndarray) -> float:
        return float(per_call[b, K]) if clf.without_exits else float(batch_call_ms(reach, sizes, per_image))

    out = {}
    for b, name in ((0, "batch1"), (Z - 1, "batched")):
        mine = [(ms[c] / n, predicted(b, reach) / n) for bb, n, c, reach in inputs if bb == b]
        if mine and (b > 0 or name == "batch1"):
            measured, pred = np.mean(mine, axis=0)
            out[f"measured_{name}"], out[f"predicted_{name}"] = float(measured), float(pred)
    return out


def spread(per_round: np.ndarray) -> float:
    """(max - min) / median of the round means, the larger of the two predictors'."""
    med = np.median(per_round, axis=0)
    return float(np.max((per_round.max(axis=0) - per_round.min(axis=0)) / np.maximum(med, 1e-12)))


def _ratio(a: float, b: float) -> float:
    return round(float(a) / float(b), 4) if b > 0 else math.nan


def pace_and_speedups(line: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """Beside predicted / measured time: the machine's pace now against when the trial timed (the plain
    network measured now over the trial's own time of it, `plain_latency_ms*` of the point's row), and
    the speed-up over the plain network the trial predicted (its plain time over the point's predicted
    time, on the same images) against the one measured now (`speedup_ratio_*`, predicted / measured).
    A speed-up holds across the machine's pace: the point and the plain network are timed in the same
    rounds both times. speedup_ratio = 1 / (ratio * pace): the inverse of predicted / measured time once
    the trial's times are scaled to the machine's pace now (above 1: the prediction is optimistic)."""
    out: dict[str, Any] = {}
    for name, suffix in (("batch1", ""), ("batched", "_batched")):
        stored = row.get(f"plain_latency_ms{suffix}")
        if stored is None or not stored > 0:
            continue
        predicted = float(stored) / line[f"predicted_ms_{name}"]
        out[f"stored_plain_ms_{name}"] = round(float(stored), 5)
        out[f"pace_{name}"] = _ratio(line[f"plain_ms_{name}"], stored)
        out[f"predicted_speedup_{name}"] = round(predicted, 4)
        out[f"speedup_ratio_{name}"] = _ratio(predicted, line[f"measured_speedup_{name}"])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.dynamic_latency", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--point-id", action="append", default=None,
                    help="an operating point of results.parquet (repeatable; default: every global-front point)")
    ap.add_argument("--images", type=int, default=200, help="test images timed one by one (batch 1)")
    ap.add_argument("--batches", type=int, default=4, help="batches of test images timed")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the trial's measurement batch)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds over every image and batch")
    ap.add_argument("--warmup-seconds", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the trial's, as it measured)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tolerance", type=float, default=0.10, help="|predicted / measured - 1| counted as agreeing")
    ap.add_argument("--retime", action="store_true",
                    help="also time the trial's per-exit calls again beside the point's, and compare that prediction")
    ap.add_argument("--spread-warning", type=float, default=0.10, help="warn when rounds disagree by more than this")
    args = ap.parse_args(argv)

    from reports.schema import read_results
    from search.load import choose_point, load_operating_point
    from trainables.contract import Declaration
    from trainables.data import get_dataset
    from trainables.engine.cost import Timer
    from trainables.exits import PLAIN

    run = args.run_dir
    spec = json.loads((run / "spec.json").read_text())
    decl = Declaration.from_dict(spec["declaration"])
    rows = read_results(run).to_pylist()
    calib = {r["point_id"]: r for r in rows if r.get("split") == "calibration" and r.get("status") == "complete"}
    front = [r for r in calib.values() if r.get("on_front") and not r.get("reference")]
    wanted = args.point_id or [r["point_id"] for r in sorted(front, key=lambda r: (r.get("latency_ms") or 0.0, r["point_id"]))]
    unknown = [p for p in wanted if p not in calib]
    if unknown:
        print(f"error: no complete point {unknown[0]!r} in {run}/results.parquet", file=sys.stderr)
        raise SystemExit(2)
    plain_of = {r["trial_id"]: r["point_id"] for r in calib.values() if r.get(PLAIN)}
    missing = sorted({calib[p]["trial_id"] for p in wanted} - set(plain_of))
    if missing:
        print(f"error: trial {missing[0]} has no plain point (a run made before plain points existed): re-run it",
              file=sys.stderr)
        raise SystemExit(2)
    try:
        default_id = choose_point(rows, decl)["point_id"]
    except ValueError:
        default_id = None

    ds = get_dataset(spec["data"], spec.get("data_root"), seed=spec["seed"], size=spec["budget_detail"]["data_size"])
    images = ds.test.images
    device = torch.device(args.device)
    timer = Timer(device)
    out = []
    for pid in wanted:
        row = calib[pid]
        status = json.loads((run / "trials" / row["trial_id"] / "status.json").read_text())
        measured_with = status.get("latency") or {}
        torch.set_num_threads(args.threads or int(measured_with.get("threads") or 1))
        batch = args.batch or int(measured_with.get("batch_size") or 128)
        clf = load_operating_point(run, pid, device=args.device)
        plain = load_operating_point(run, plain_of[row["trial_id"]], device=args.device)
        singles = [images[i: i + 1] for i in range(min(args.images, len(images)))]
        batches = [images[i: i + batch] for i in range(0, len(images) - batch + 1, batch)][: args.batches] or [images[:batch]]
        warm_up([lambda: clf.predict(singles[0]), lambda: plain.predict(singles[0]),
                 lambda: clf.predict(batches[0]), lambda: plain.predict(batches[0])], args.warmup_seconds)
        m1, r1 = measure_pair(clf.predict, plain.predict, singles, args.rounds, timer)
        mb, rb = measure_pair(clf.predict, plain.predict, batches, args.rounds, timer)
        # what the trial's measurement predicts for these very images: each one's time to its exit
        p1 = float(np.mean([clf.predict(x).cost["latency_ms"].mean() for x in singles]))
        pb = float(np.mean([predicted_batch_ms(clf, x, status) for x in batches]))
        test = clf.point.get("test") or {}
        s1, sb = spread(r1), spread(rb)
        line = {
            "point_id": pid, "policy": row.get("policy"), "default": pid == default_id,
            "accuracy_test": test.get("accuracy"), "threads": torch.get_num_threads(), "batch": batch,
            "predicted_ms_batch1": round(p1, 4), "measured_ms_batch1": round(float(m1[0]), 4), "ratio_batch1": _ratio(p1, m1[0]),
            "predicted_ms_batched": round(pb, 5), "measured_ms_batched": round(float(mb[0]), 5), "ratio_batched": _ratio(pb, mb[0]),
            "plain_ms_batch1": round(float(m1[1]), 4), "plain_ms_batched": round(float(mb[1]), 5),
            "measured_speedup_batch1": _ratio(m1[1], m1[0]), "measured_speedup_batched": _ratio(mb[1], mb[0]),
            "speedup_flops": test.get("speedup_flops"), "spread_batch1": round(s1, 4), "spread_batched": round(sb, 4),
        }
        line |= pace_and_speedups(line, row)
        if args.retime:
            from trainables.data_info import DataInfo

            again = retimed_prediction(clf, DataInfo.of(ds), singles, batches, args.rounds, timer)
            for name in ("batch1", "batched"):
                if f"measured_{name}" in again:
                    line[f"retimed_predicted_ms_{name}"] = round(again[f"predicted_{name}"], 5)
                    line[f"retimed_measured_ms_{name}"] = round(again[f"measured_{name}"], 5)
                    line[f"retimed_ratio_{name}"] = _ratio(again[f"predicted_{name}"], again[f"measured_{name}"])
        trial_spread = measured_with.get("spread")
        line["trial_spread"] = trial_spread
        warnings = []
        if max(s1, sb) > args.spread_warning:
            warnings.append(f"rounds disagree by up to {max(s1, sb):.0%}: the machine was busy")
        if trial_spread is not None and float(trial_spread) > args.spread_warning:
            warnings.append(f"the trial's own latency rounds disagreed by up to {float(trial_spread):.0%} (interquartile "
                            "range / median): its prediction was measured on a busy machine")
        if warnings:
            line["warning"] = "; ".join(warnings)
            print(f"warning: {pid}: {line['warning']}", file=sys.stderr)
        out.append(line)
        print(json.dumps(line), flush=True)

    def within(key: str) -> int:
        return int(sum(abs(o[key] - 1.0) <= args.tolerance for o in out if key in o and math.isfinite(o[key])))

    default = next((o for o in out if o["default"]), None)
    print(json.dumps({
        "run": str(run), "points": len(out), "tolerance": args.tolerance,
        "within_tolerance_batch1": within("ratio_batch1"), "within_tolerance_batched": within("ratio_batched"),
        "ratio_batch1_range": [min(o["ratio_batch1"] for o in out), max(o["ratio_batch1"] for o in out)] if out else None,
        "ratio_batched_range": [min(o["ratio_batched"] for o in out), max(o["ratio_batched"] for o in out)] if out else None,
        **{f"{k}_range": [min(o[k] for o in out), max(o[k] for o in out)] if out and all(k in o for o in out) else None
           for k in ("pace_batch1", "pace_batched")},
        "speedup_within_tolerance_batch1": within("speedup_ratio_batch1"),
        "speedup_within_tolerance_batched": within("speedup_ratio_batched"),
        **{f"{k}_range": [min(o[k] for o in out), max(o[k] for o in out)] if out and all(k in o for o in out) else None
           for k in ("speedup_ratio_batch1", "speedup_ratio_batched")},
        "default_point": default_id,
        "default_measured_speedup_batch1": default["measured_speedup_batch1"] if default else None,
        "default_measured_speedup_batched": default["measured_speedup_batched"] if default else None,
        "beat_plain_batch1": int(sum(o["measured_speedup_batch1"] > 1.0 for o in out)),
        "beat_plain_batched": int(sum(o["measured_speedup_batched"] > 1.0 for o in out)),
        "warnings": sum("warning" in o for o in out),
    }))
    head = ("point", "acc", "pred b1", "meas b1", "ratio", "pred bat", "meas bat", "ratio", "pace b1 / bat",
            "speedup b1 pred / meas", "speedup bat pred / meas", "flops x")
    print(" | ".join(head))
    for o in out:
        print(" | ".join(str(v) for v in (
            o["point_id"] + (" (default)" if o["default"] else ""), f"{o['accuracy_test']:.4f}",
            o["predicted_ms_batch1"], o["measured_ms_batch1"], o["ratio_batch1"], o["predicted_ms_batched"],
            o["measured_ms_batched"], o["ratio_batched"], f"{o.get('pace_batch1')} / {o.get('pace_batched')}",
            f"{o.get('predicted_speedup_batch1')} / {o['measured_speedup_batch1']}",
            f"{o.get('predicted_speedup_batched')} / {o['measured_speedup_batched']}",
            round(o["speedup_flops"], 3) if o["speedup_flops"] is not None else None)))


if __name__ == "__main__":
    main()
