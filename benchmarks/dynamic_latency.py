"""Measured dynamic-inference latency of a run's chosen operating point, against the same network
with no early exit, beside what the run predicted from its per-exit timings.

The results table's latency columns are predictions: per-exit stage and branch times measured
once per trial, weighted by the point's exit fractions. This times the real thing in one
command: `DynamicClassifier.predict` at the point's thresholds (samples leave the batch at their
exit) and the plain network (every stage, then only the last exit's head), on the run's own test
images: at batch 1, each image's median over `repeats` calls, averaged over the images (an
expectation over the images, like the prediction: images that exit early are cheaper); batched,
the median time per image of whole batches.

    python -m benchmarks.dynamic_latency RUN_DIR [--point-id ID] [--images 500] [--batch 256]

Prints JSON lines; `measured_speedup_*` is plain time / dynamic time, `predicted_speedup_latency`
the run's own figure for the same point (test split).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def _per_image_ms(fn, batches: list[torch.Tensor], repeats: int) -> float:
    """Mean over the batches of each batch's median time (over `repeats` calls), per image."""
    per_batch = []
    for x in batches:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t)
        per_batch.append(float(np.median(times)) / len(x))
    return float(np.mean(per_batch)) * 1e3


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.dynamic_latency", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--point-id", default=None, help="an operating point of results.parquet (default: the space's rule)")
    ap.add_argument("--images", type=int, default=500, help="test images timed at batch 1")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (trials ran with --cpus-per-trial of them)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from search.load import load_operating_point
    from trainables.data import get_dataset

    spec = json.loads((args.run_dir / "spec.json").read_text())
    clf = load_operating_point(args.run_dir, args.point_id)
    ds = get_dataset(spec["data"], spec.get("data_root"), seed=spec["seed"], size=spec["budget_detail"]["data_size"])
    images = ds.test.images
    segments = clf.segments

    @torch.no_grad()
    def plain(x: torch.Tensor) -> torch.Tensor:
        h = (x.float() - clf.mean) / clf.std
        for stages, _ in segments:
            h = stages(h)
        return segments[-1][1](h)[0]

    singles = [images[i : i + 1] for i in range(min(args.images, len(images)))]
    batches = [images[i : i + args.batch] for i in range(0, len(images) - args.batch + 1, args.batch)] or [images]
    for fn in (plain, clf.predict):  # warm-up
        fn(singles[0])
        fn(batches[0])
    out = {
        "plain_ms_batch1": _per_image_ms(plain, singles, args.repeats),
        "dynamic_ms_batch1": _per_image_ms(clf.predict, singles, args.repeats),
        "plain_ms_batched": _per_image_ms(plain, batches, args.repeats),
        "dynamic_ms_batched": _per_image_ms(clf.predict, batches, args.repeats),
    }
    test = clf.point.get("test") or {}
    print(json.dumps({"run": str(args.run_dir), "point_id": test.get("point_id"), "policy": test.get("policy"),
                      "test_images": len(images), "batch": args.batch, "threads": args.threads,
                      **{k: round(v, 4) for k, v in out.items()}}))
    print(json.dumps({
        "measured_speedup_batch1": round(out["plain_ms_batch1"] / out["dynamic_ms_batch1"], 3),
        "measured_speedup_batched": round(out["plain_ms_batched"] / out["dynamic_ms_batched"], 3),
        "predicted_speedup_latency": test.get("speedup_latency"),
        "predicted_latency_ms": test.get("latency_ms"), "predicted_latency_ms_batched": test.get("latency_ms_batched"),
        "speedup_flops": test.get("speedup_flops"),
    }))


if __name__ == "__main__":
    main()
