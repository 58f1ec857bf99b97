"""What does mixed precision save? The same transfer trial trained in fp32 and in bf16 autocast.

The research reported mixed precision cutting training time by about 60% for -0.03 macro F1 (on a
GPU, torch.cuda.amp). Here both arms go through the platform's own trial loop with the transfer
family (same data, seed, backbone, weights, optimiser, schedule, epochs), on whatever device this
machine has (bf16 autocast runs on a CPU too: Intel AMX / AVX512-BF16 execute it natively, older
CPUs emulate it). The arms alternate fp32, bf16, fp32, bf16, ... for `--repeats` rounds so that a
change in the machine's load hits both.

    python -m benchmarks.mixed_precision [--data csv:PATH | synthetic] [--data-size tiny|smoke|full]
        [--backbone regnet_y_400mf] [--input-size 64] [--epochs 2] [--batch 64] [--weights none|PATH]
        [--repeats 1] [--threads 2]

Prints one JSON line per arm and round (training seconds, images per second, the test point's
macro F1 and accuracy), then the ratio line: bf16 training time / fp32's (medians) and the change
in macro F1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from spaces import get_space
from trainables.engine.loop import LocalReporter, TrialContext, run_trial


def one(space, budget, options, config: dict, args, precision: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "trial"
        ctx = TrialContext(trial_dir=str(d), reporter=LocalReporter(d), data=args.data, data_root=args.data_root,
                           data_size=args.data_size, epochs=args.epochs, seed=args.seed, cpu_threads=args.threads,
                           device=args.device)
        family = space.family(budget, space.resolve_options(options))
        run_trial(family, {**config, "precision": precision}, ctx)
        curves = json.loads((d / "curves.json").read_text())
        points = json.loads((d / "points.json").read_text())["points"]
    test = next(p for p in points if p["split"] == "test" and not p["reference"])
    return {"precision": precision, "train_seconds": sum(c["epoch_seconds"] for c in curves),
            "images_per_second": statistics.median(c["images_per_second"] for c in curves),
            "test_macro_f1": test["macro_f1"], "test_accuracy": test["accuracy"], "policy": test["policy"]}


def main(argv: list[str] | None = None) -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--data-size", default="smoke")
    ap.add_argument("--backbone", default="regnet_y_400mf")
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--weights", default="none")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    args = ap.parse_args(argv)

    space = get_space("transfer")
    budget = space.budget("smoke")
    options = {"weights": args.weights, "backbone": args.backbone}
    config = {"backbone": args.backbone, "input_size": args.input_size, "epochs": args.epochs, "optimizer": args.optimizer,
              "lr": args.lr, "weight_decay": 1e-5, "lr_schedule": "cosine", "batch_size": args.batch, "augment": "flip_crop",
              "training": "finetune"}
    arms: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    for r in range(args.repeats):
        for precision in ("fp32", "bf16"):
            row = one(space, budget, options, config, args, precision)
            arms[precision].append(row)
            print(json.dumps({"round": r, "device": args.device, **row}), flush=True)
    t32 = statistics.median(a["train_seconds"] for a in arms["fp32"])
    t16 = statistics.median(a["train_seconds"] for a in arms["bf16"])
    f32 = statistics.median(a["test_macro_f1"] for a in arms["fp32"])
    f16 = statistics.median(a["test_macro_f1"] for a in arms["bf16"])
    print(json.dumps({"bf16_over_fp32_train_time": t16 / t32, "time_saved": 1 - t16 / t32,
                      "macro_f1_change": f16 - f32, "fp32_train_seconds": t32, "bf16_train_seconds": t16,
                      "research": "mixed precision ~60% less training time for -0.03 macro F1 (GPU)"}), flush=True)


if __name__ == "__main__":
    main()
