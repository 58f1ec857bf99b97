"""Start-up time of a trial with the node data cache (trainables/data/node_cache.py) vs without, in one command.

A trial's start-up here is a fresh Python process that imports the trainables, loads the dataset
(`load_data`, as trainables/engine/loop.py does) and builds its first training batch (`DeviceLoader` on
the CPU). Three arms, run interleaved, `--repeats` times each, medians reported:

- off:  EXITSEARCH_NODE_CACHE=off, every process reads and decodes the dataset (the old behaviour);
- cold: an empty cache, so the process decodes and also writes the node's entry (the first trial on a node);
- warm: the entry is there, so the process maps it (every later trial on the node).

    python -m benchmarks.trial_startup [--data cifar10] [--data-root ../shared/data/cifar10] [--size full] [--repeats 5]

Defaults to the real CIFAR-10 under ../shared/data/cifar10 when present, else synthetic data.
Prints one JSON line per arm and a line with the ratios with / without (warm / off): `data_s`
is load + first batch inside the process, `process_s` the whole process as the parent saw it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"


def child(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    import numpy as np
    import torch

    from trainables.engine.device_data import DeviceLoader, load_data

    t1 = time.perf_counter()
    ds = load_data(args.data, args.data_root, size=args.size, download=False, seed=0)
    t2 = time.perf_counter()
    loader = DeviceLoader(ds.train, np.asarray(ds.hierarchy.coarse_of), args.batch, torch.device("cpu"),
                          ds.mean, ds.std, train=True, seed=0)
    x, _, _ = next(loader.epoch(0))
    t3 = time.perf_counter()
    assert x.shape[0] == args.batch
    print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_batch_s": t3 - t2, "data_s": t3 - t1,
                      "train_images": len(ds.train)}))


def one(args: argparse.Namespace, cache: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.trial_startup", "--child", "--data", args.data, "--size", args.size,
           "--batch", str(args.batch)] + (["--data-root", args.data_root] if args.data_root else [])
    env = {**os.environ, "EXITSEARCH_NODE_CACHE": cache, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return {**out, "process_s": time.perf_counter() - t}


def summary(arm: str, runs: list[dict]) -> dict:
    keys = ("process_s", "import_s", "load_s", "first_batch_s", "data_s")
    return {"arm": arm, "repeats": len(runs), "train_images": runs[0]["train_images"],
            **{f"median_{k}": round(statistics.median(r[k] for r in runs), 4) for k in keys}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None, help="dataset name (default: cifar10 if ../shared/data/cifar10 exists, else synthetic)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--size", default="full", choices=("full", "smoke", "tiny"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.data is None:
        args.data = "cifar10" if SHARED_CIFAR10.is_dir() else "synthetic"
        if args.data == "cifar10" and args.data_root is None:
            args.data_root = str(SHARED_CIFAR10)
    if args.child:
        return child(args)

    runs: dict[str, list[dict]] = {"off": [], "cold": [], "warm": []}
    with tempfile.TemporaryDirectory(prefix="trial-startup-") as tmp:
        warm = str(Path(tmp) / "cold-0")  # the entry the first cold run writes serves every warm run
        for r in range(args.repeats):  # interleaved, so drift in the machine's load hits every arm alike
            runs["off"].append(one(args, "off"))
            runs["cold"].append(one(args, str(Path(tmp) / f"cold-{r}")))
            runs["warm"].append(one(args, warm))
    rows = {arm: summary(arm, rs) for arm, rs in runs.items()}
    for row in rows.values():
        print(json.dumps({"data": args.data, "size": args.size, **row}))
    off, warm_row, cold = rows["off"], rows["warm"], rows["cold"]
    print(json.dumps({
        "data_s_ratio_with_over_without": round(warm_row["median_data_s"] / off["median_data_s"], 4),
        "process_s_ratio_with_over_without": round(warm_row["median_process_s"] / off["median_process_s"], 4),
        "cold_data_s_over_off": round(cold["median_data_s"] / off["median_data_s"], 4),
        "data_s_saved_per_trial": round(off["median_data_s"] - warm_row["median_data_s"], 4),
    }))


if __name__ == "__main__":
    main()
