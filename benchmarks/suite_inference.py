"""The suite's dynamic-inference figure: measured latency of a run's operating point against the
same network without exits, beside its FLOPs speed-up and the latency the run predicted for it.

Three predictors answer the run's own test images, all through `DynamicClassifier.predict`
(trainables/dynamic.py), which is what a user runs (`search.load.load_operating_point`):

- dynamic: the operating point as loaded (samples leave the batch at their exit);
- plain: the same trial's network without early exits, loaded as its `plain` operating point
  (trainables/exits/plain.py: every stage, then only the last exit's heads, at the trial's
  precision): the network `speedup_flops` and `speedup_latency` are measured against;
- exits_off: the same network with its exits, every early threshold NEVER (trainables/exits/policy.py),
  at the point's precision: the early heads run and nobody leaves, which shows what an exit costs
  when it is not taken.

Timing is the platform's latency measurement (issue 16), as `benchmarks.dynamic_latency` does it:
warm-up, then `rounds` interleaved rounds in which, for every image (batch 1) and every batch of
`batch` test images, the three predictors take turns (the one that goes first rotates); each call
is timed end to end (trainables/engine/cost.py `Timer`: CUDA events after a synchronisation on a
GPU) and an input's figure is the lower quartile over rounds (`robust_ms`). `predict` returns numpy
arrays, so every call ends with the device synchronised. The predicted latency is what the trial's
own measurement predicts for the timed images (each image's time to its exit,
`Prediction.cost["latency_ms"]`, and batched `latency_ms_batched`); predicted / measured is printed.
The FLOPs speed-up is the plain network's FLOPs over the mean FLOPs of what executed for the timed
images (`Prediction.cost["flops"]`), so measured / FLOPs speed-up compares like with like.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["dynamic_inference"]


def _final_exit_thresholds(n_levels: int, n_exits: int) -> np.ndarray:
    from trainables.exits import ALWAYS, NEVER

    t = np.full((n_levels, n_exits), NEVER)
    t[0, -1] = ALWAYS  # the last exit answers every image at the first level
    return t


def dynamic_inference(run_dir: Path, images: int, batch: int, rounds: int, warmup: int, threads: int) -> dict[str, Any]:
    """The figure, from a finished run's default operating point."""
    from benchmarks.dynamic_latency import measure_arms, spread, warm_up
    from reports.schema import read_results
    from search.load import load_operating_point
    from trainables.data import get_dataset
    from trainables.dynamic import DynamicClassifier
    from trainables.engine.cost import Timer
    from trainables.exits import PLAIN

    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(threads)
    device = "cuda" if cuda else "cpu"
    spec = json.loads((run_dir / "spec.json").read_text())
    clf = load_operating_point(run_dir, device=device)
    if not isinstance(clf, DynamicClassifier):
        raise TypeError(f"the run's point is answered by {type(clf).__name__}, not an early-exit cascade")
    row = clf.point.get("test") or {}
    trial = row.get("trial_id") or (clf.point.get("calibration") or {}).get("trial_id")
    plain_id = next((r["point_id"] for r in read_results(run_dir).to_pylist()
                     if r.get(PLAIN) and r.get("trial_id") == trial and r.get("split") == "calibration"), None)
    if plain_id is None:
        raise KeyError(f"trial {trial} of {run_dir} has no plain point (a run made before plain points existed): re-run it")
    plain = load_operating_point(run_dir, plain_id, device=device)
    ds = get_dataset(spec["data"], spec.get("data_root"), seed=spec["seed"], size=spec["budget_detail"]["data_size"])
    model = clf.model
    exits_off = copy.copy(clf)  # the same predictor (network, precision, costs), no early exit ever taken
    exits_off.thresholds = _final_exit_thresholds(len(model.levels), model.n_exits)
    exits_off.without_exits = False  # its early heads run even when the default point is the plain network
    arms = {"dynamic": clf.predict, "plain": plain.predict, "exits_off": exits_off.predict}

    test = ds.test.images
    fine = ds.test.fine.numpy() if isinstance(ds.test.fine, torch.Tensor) else np.asarray(ds.test.fine)
    singles = [test[i: i + 1] for i in range(min(images, len(test)))]
    batches = [test[i: i + batch] for i in range(0, len(test), batch)]
    fns = list(arms.values())
    warm_up([lambda f=f, x=x: f(x) for f in fns for x in (singles[0], batches[0])], seconds=0.0, min_calls=max(1, warmup))
    timer = Timer(torch.device(device))
    m1, r1 = measure_arms(fns, singles, rounds, timer)
    mb, rb = measure_arms(fns, batches, rounds, timer)
    med = {name: {"batch1": float(m1[j]), "batched": float(mb[j])} for j, name in enumerate(arms)}
    # what the trial's measurement predicts for these very images: each one's time to its exit
    predicted = {"batch1": float(np.mean([clf.predict(x).cost["latency_ms"].mean() for x in singles])),
                 "batched": float(np.mean([clf.predict(x).cost["latency_ms_batched"].mean() for x in batches]))}

    pred_all = clf.predict(test)
    pred_plain = plain.predict(test)
    flops_dyn = np.asarray(pred_all.cost["flops"], dtype=np.float64)
    plain_flops = row.get("plain_flops")
    if plain_flops is None and row.get("speedup_flops") and row.get("expected_flops"):
        plain_flops = float(row["speedup_flops"]) * float(row["expected_flops"])
    if plain_flops is None:
        raise KeyError("the point's test row has neither plain_flops nor speedup_flops and expected_flops")
    flops_speedup = {"batch1": float(plain_flops) / float(flops_dyn[: len(singles)].mean()),
                     "batched": float(plain_flops) / float(flops_dyn.mean())}
    measured = {k: med["plain"][k] / med["dynamic"][k] for k in ("batch1", "batched")}
    rounds_spread = {"batch1": round(spread(r1), 4), "batched": round(spread(rb), 4)}
    return {
        "value": {"dynamic_ms_batch1": round(med["dynamic"]["batch1"], 4), "dynamic_ms_batched": round(med["dynamic"]["batched"], 5),
                  "predicted_ms_batch1": round(predicted["batch1"], 4), "predicted_ms_batched": round(predicted["batched"], 5),
                  "flops_speedup_batch1": round(flops_speedup["batch1"], 3),
                  "flops_speedup_batched": round(flops_speedup["batched"], 3),
                  "test_accuracy": round(float((pred_all.label == fine).mean()), 4),
                  "exit_fraction": np.bincount(pred_all.exit, minlength=model.n_exits).tolist()},
        "reference": {"plain_ms_batch1": round(med["plain"]["batch1"], 4), "plain_ms_batched": round(med["plain"]["batched"], 5),
                      "exits_off_ms_batch1": round(med["exits_off"]["batch1"], 4),
                      "exits_off_ms_batched": round(med["exits_off"]["batched"], 5),
                      "plain_test_accuracy": round(float((pred_plain.label == fine).mean()), 4)},
        "ratio": {"measured_speedup_batch1": round(measured["batch1"], 3),
                  "measured_speedup_batched": round(measured["batched"], 3),
                  "measured_over_flops_speedup_batch1": round(measured["batch1"] / flops_speedup["batch1"], 3),
                  "measured_over_flops_speedup_batched": round(measured["batched"] / flops_speedup["batched"], 3),
                  "predicted_over_measured_batch1": round(predicted["batch1"] / med["dynamic"]["batch1"], 3),
                  "predicted_over_measured_batched": round(predicted["batched"] / med["dynamic"]["batched"], 3),
                  "exits_off_over_plain_batch1": round(med["exits_off"]["batch1"] / med["plain"]["batch1"], 3)},
        "setting": {"point_id": row.get("point_id"), "policy": row.get("policy"), "plain_point_id": plain_id,
                    "test_images": len(test), "batch1_images": len(singles), "batch": batch, "rounds": rounds, "warmup": warmup,
                    "device": device, "statistic": "lower quartile over interleaved rounds, per input (trainables/engine/cost.py)",
                    **({"threads": threads} if not cuda else {}),
                    "run_reported": {k: row.get(k) for k in ("latency_ms", "latency_ms_batched", "speedup_latency",
                                                             "speedup_latency_batched", "speedup_flops", "accuracy")}},
        "spread": rounds_spread,
    }
