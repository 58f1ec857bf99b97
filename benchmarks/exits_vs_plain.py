"""Do exits cost the final answer? The same backbone trained twice at the same budget:

- gran_hbn: exits after every stage, fine and coarse heads at each, the granular loss;
- plain: one exit after the last stage, fine loss only (coarse weight 0): an ordinary classifier.

Both go through the platform's own trial loop with the gran_hbn family (same data, seed,
optimiser, schedule, epochs) and
the final exit's fine accuracy on the calibration (validation) split is compared; the target is
a gap within 1 point. Default: CIFAR-10 from ../shared/data when present, else synthetic.

    python -m benchmarks.exits_vs_plain [--data cifar10 --data-root ../shared/data/cifar10]
        [--epochs 15] [--width 64] [--blocks 2] [--size full|smoke] [--seeds 1]

Prints one JSON line per network and seed, then the mean gap. `compare` is the same
measurement for other benchmarks (benchmarks/suite.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from spaces.gran_hbn import DECLARATION, GranHBN
from trainables.engine.loop import LocalReporter, TrialContext, run_trial

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def defaults(cuda: bool) -> dict:
    """The benchmark's default setting: ResNet-18 for 15 epochs on a GPU, a small network on a CPU."""
    if cuda:
        return {"size": "full", "epochs": 15, "width": 64, "blocks": 2, "batch": 512}
    return {"size": "smoke", "epochs": 3, "width": 16, "blocks": 1, "batch": 128}


def compare(data: str, data_root: str | None, size: str, epochs: int, width: int, blocks: int, batch: int,
            seeds: int = 1, first_seed: int = 0, threads: int = 2, exit_weights: str = "1.0,1.0",
            lambda_coarse: float = 0.5, exit_grad_scale: float = 1.0, emit=None) -> dict:
    """Train both networks at one setting for each seed; returns the rows (one per network and
    seed, each also given to `emit` as it is made) and the mean gap (plain - gran_hbn, points)."""
    cuda = torch.cuda.is_available()
    common = {
        "backbone": "resnet", "resnet.width": width, "resnet.blocks": blocks, "resnet.n_stages": 4,
        "head": "linear", "optimizer": "sgd", "lr": 0.2 if cuda else 0.05, "weight_decay": 5e-4,
        "lr_schedule": "onecycle", "batch_size": batch, "epochs": epochs, "label_smoothing": 0.1,
    }
    nets = {
        "gran_hbn": {**common, "exit_after": [0, 1, 2, 3], "lambda_fine": 1.0, "lambda_coarse": lambda_coarse,
                     "exit_weight_first": float(exit_weights.split(",")[0]),
                     "exit_weight_last": float(exit_weights.split(",")[1]),
                     "exit_grad_scale": exit_grad_scale},
        "plain": {**common, "exit_after": [3], "lambda_fine": 1.0, "lambda_coarse": 0.0},
    }
    gaps, rows = [], []
    for seed in range(first_seed, first_seed + seeds):
        acc = {}
        for name, cfg in nets.items():
            with tempfile.TemporaryDirectory() as tmp:
                ctx = TrialContext(trial_dir=tmp, reporter=LocalReporter(tmp), data=data, data_root=data_root,
                                   data_size=size, epochs=epochs, seed=seed, data_seed=0, cpu_threads=threads)
                family = GranHBN(DECLARATION, {"n_trials": 32, "neighbours": 8, "population": 16, "levels": 16})
                t = time.perf_counter()
                run_trial(family, cfg, ctx)
                final = {p["split"]: p["fine_acc_per_exit"][-1] for p in json.loads((Path(tmp) / "points.json").read_text())["points"]}
                acc[name] = final["calibration"]
                row = {"net": name, "seed": seed, "data": data, "epochs": epochs,
                       "final_exit_calib_fine_acc": round(final["calibration"], 4),
                       "final_exit_test_fine_acc": round(final["test"], 4),
                       "seconds": round(time.perf_counter() - t, 1),
                       "device": "cuda" if cuda else "cpu"}
                rows.append(row)
                if emit is not None:
                    emit(row)
        gaps.append(acc["plain"] - acc["gran_hbn"])
    gap = 100 * sum(gaps) / len(gaps)
    return {"rows": rows, "summary": {"gran_hbn_exit_weights": exit_weights, "lambda_coarse": lambda_coarse,
                                      "exit_grad_scale": exit_grad_scale,
                                      "mean_gap_points_plain_minus_gran_hbn": round(gap, 2), "seeds": seeds,
                                      "within_1_point": abs(gap) <= 1.0}}


def main() -> None:
    cuda = torch.cuda.is_available()
    d = defaults(cuda)
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="cifar10" if (_SHARED / "cifar10-train.npz").exists() else "synthetic")
    ap.add_argument("--data-root", default=str(_SHARED) if _SHARED.exists() else None)
    ap.add_argument("--size", default=d["size"])
    ap.add_argument("--epochs", type=int, default=d["epochs"])
    ap.add_argument("--width", type=int, default=d["width"])
    ap.add_argument("--blocks", type=int, default=d["blocks"])
    ap.add_argument("--batch", type=int, default=d["batch"])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--exit-weights", default="1.0,1.0", help="first,last exit loss weights of the gran_hbn network")
    ap.add_argument("--lambda-coarse", type=float, default=0.5)
    ap.add_argument("--exit-grad-scale", type=float, default=1.0,
                    help="share of the early exits' gradient that reaches the backbone (1: classic multi-exit loss)")
    args = ap.parse_args()
    res = compare(args.data, args.data_root, args.size, args.epochs, args.width, args.blocks, args.batch, args.seeds,
                  args.first_seed, args.threads, args.exit_weights, args.lambda_coarse, args.exit_grad_scale,
                  emit=lambda row: print(json.dumps(row), flush=True))
    print(json.dumps(res["summary"]))


if __name__ == "__main__":
    main()
