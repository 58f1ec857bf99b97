"""The suite's dynamic-inference figure: measured latency of a run's operating point against the
same network without exits, beside its FLOPs speed-up.

Three predictors answer the run's own test images, all through `DynamicClassifier.predict`
(trainables/dynamic.py), which is what a user runs (`search.load.load_operating_point`):

- dynamic: the operating point as loaded (samples leave the batch at their exit);
- plain: the same trained network without its early exits: every stage, then only the last
  exit's heads (the weights are shared; the early heads are dropped), the final exit answering
  every image at the first level: the network `speedup_flops` is measured against;
- exits_off: the same network with its exits, every early threshold NEVER (trainables/exits/policy.py):
  the early heads run and nobody leaves, which shows what an exit costs when it is not taken.

Timing: warm-up calls of each, then `rounds` rounds, the predictors interleaved in a rotating
order within each round; batch 1 is the time per image over `images` single-image calls, batched
the time per image over the whole test split in batches of `batch`; the median over rounds.
`predict` returns numpy arrays, so every call ends with the device synchronised. The FLOPs
speed-up is the plain network's FLOPs over the mean FLOPs of what executed for the timed images
(`Prediction.cost["flops"]`), so measured / FLOPs speed-up compares like with like.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["dynamic_inference", "plain_network"]


def plain_network(model: torch.nn.Module) -> torch.nn.Module:
    """The early-exit network without its early exits: its stages and the last exit's heads only
    (a copy; the caller's network is left as it is)."""
    plain = copy.deepcopy(model)
    plain.heads = torch.nn.ModuleList([plain.heads[-1]])
    plain.exit_after = [plain.exit_after[-1]]
    return plain


def _final_exit_thresholds(n_levels: int, n_exits: int) -> np.ndarray:
    from trainables.exits import ALWAYS, NEVER

    t = np.full((n_levels, n_exits), NEVER)
    t[0, -1] = ALWAYS  # the last exit answers every image at the first level
    return t


def _timed_rounds(arms: dict[str, Any], singles: list[torch.Tensor], batches: list[torch.Tensor], rounds: int,
                  warmup: int) -> dict[str, dict[str, list[float]]]:
    for _ in range(warmup):
        for fn in arms.values():
            for x in singles[: max(1, min(len(singles), 8))]:
                fn(x)
            fn(batches[0])
    n_batched = sum(len(b) for b in batches)
    out = {name: {"batch1": [], "batched": []} for name in arms}
    names = list(arms)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            fn = arms[name]
            t = time.perf_counter()
            for x in singles:
                fn(x)
            out[name]["batch1"].append((time.perf_counter() - t) / len(singles) * 1e3)
        for name in order:
            fn = arms[name]
            t = time.perf_counter()
            for x in batches:
                fn(x)
            out[name]["batched"].append((time.perf_counter() - t) / n_batched * 1e3)
    return out


def dynamic_inference(run_dir: Path, images: int, batch: int, rounds: int, warmup: int, threads: int) -> dict[str, Any]:
    """The figure, from a finished run's default operating point."""
    from search.load import load_operating_point
    from trainables.data import get_dataset
    from trainables.data_info import DataInfo
    from trainables.dynamic import DynamicClassifier

    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(threads)
    device = "cuda" if cuda else "cpu"
    spec = json.loads((run_dir / "spec.json").read_text())
    clf = load_operating_point(run_dir, device=device)
    if not isinstance(clf, DynamicClassifier):
        raise TypeError(f"the run's point is answered by {type(clf).__name__}, not an early-exit cascade")
    ds = get_dataset(spec["data"], spec.get("data_root"), seed=spec["seed"], size=spec["budget_detail"]["data_size"])
    info = DataInfo.of(ds)
    model = clf.model
    names = {level: list(info.names(level)) for level in model.levels}
    n_levels = len(model.levels)
    plain = DynamicClassifier(plain_network(model), _final_exit_thresholds(n_levels, 1), info.mean, info.std, names, device)
    exits_off = DynamicClassifier(model, _final_exit_thresholds(n_levels, model.n_exits), info.mean, info.std, names, device)
    arms = {"dynamic": clf.predict, "plain": plain.predict, "exits_off": exits_off.predict}

    test = ds.test.images
    fine = ds.test.fine.numpy() if isinstance(ds.test.fine, torch.Tensor) else np.asarray(ds.test.fine)
    singles = [test[i: i + 1] for i in range(min(images, len(test)))]
    batches = [test[i: i + batch] for i in range(0, len(test), batch)]
    times = _timed_rounds(arms, singles, batches, rounds, warmup)
    med = {name: {k: float(np.median(v)) for k, v in t.items()} for name, t in times.items()}

    row = clf.point.get("test") or {}
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
    spread = {name: {k: [round(min(v), 4), round(max(v), 4)] for k, v in t.items()} for name, t in times.items()}
    return {
        "value": {"dynamic_ms_batch1": round(med["dynamic"]["batch1"], 4), "dynamic_ms_batched": round(med["dynamic"]["batched"], 5),
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
                  "exits_off_over_plain_batch1": round(med["exits_off"]["batch1"] / med["plain"]["batch1"], 3)},
        "setting": {"point_id": row.get("point_id"), "policy": row.get("policy"), "test_images": len(test),
                    "batch1_images": len(singles), "batch": batch, "rounds": rounds, "warmup": warmup, "device": device,
                    **({"threads": threads} if not cuda else {}),
                    "run_reported": {k: row.get(k) for k in ("latency_ms", "latency_ms_batched", "speedup_latency",
                                                             "speedup_flops", "accuracy")}},
        "spread_ms": spread,
    }
