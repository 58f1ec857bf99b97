"""The same trial on 1 worker and on N data-parallel workers, in one command.

Runs one trial of a space (its configuration drawn once from the space's define-by-run function
with a fixed seed, so both arms train the very same network) through Ray Train's TorchTrainer
(search/distributed.py) with 1 worker and with N workers, at the same global batch size and
seed, and prints each arm's final metrics (training loss per epoch, the space's signal, the
final exit's calibration accuracy), its wall time and the ratios.

    python -m benchmarks.data_parallel [--space gran_hbn] [--workers 2] [--data-size smoke] [--epochs 2] [--draw 0]

On CPUs the workers talk over gloo and share the machine's cores (each arm gets --cpus in all),
so the wall-time ratio there is a cost measure, not a speed-up; on GPUs give --gpus.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["fixed_config", "run_arm"]


def fixed_config(space_name: str, budget: str, draw: int, **override: Any) -> dict[str, Any]:
    """One configuration of the space, drawn by its define-by-run function with a seeded sampler."""
    import optuna

    from spaces import get_space

    space = get_space(space_name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=draw))
    trial = study.ask()
    constants = space.search_space(space.budget(budget))(trial) or {}
    return {**trial.params, **constants, **override}


def run_arm(space: str, config: dict[str, Any], storage: Path, workers: int, *, data: str = "synthetic",
            data_size: str = "tiny", budget: str = "smoke", cpus: float = 2, gpus: float = 0, seed: int = 0) -> dict[str, Any]:
    """Train `config` once on `workers` Ray Train workers (Ray must be initialised); returns the
    trial's metrics as it wrote them, and the wall time of the whole trainer."""
    from search.distributed import run_data_parallel
    from search.prepare import reference_costs
    from search.spec import RunSpec
    from spaces import get_space

    spec = RunSpec(space=space, data=data, name=f"w{workers}", storage=str(storage), budget=budget, data_size=data_size,
                   trials=1, seed=seed, cpus_per_trial=cpus, gpus_per_trial=gpus, workers_per_trial=workers, retries=0,
                   device="cuda" if gpus else "cpu")
    refs = reference_costs(get_space(space), spec)
    t = time.perf_counter()
    run_data_parallel(config, spec, "t0", refs, in_tune=False)
    wall = time.perf_counter() - t
    trial = spec.run_dir / "trials" / "t0"
    status = json.loads((trial / "status.json").read_text())
    curves = json.loads((trial / "curves.json").read_text())
    return {"workers": workers, "wall_s": round(wall, 2), "status": status["status"],
            "provenance_workers": status["provenance"].get("workers"), "signal": status.get("signal", {}),
            "train_loss": [round(c["train_loss"], 5) for c in curves],
            "epoch_seconds": [round(c["epoch_seconds"], 2) for c in curves],
            "final_exit_calib_accuracy": _final_exit_accuracy(trial)}


def _final_exit_accuracy(trial: Path) -> float:
    from trainables.exits import ExitCache

    cache = ExitCache.load(trial / "exit_cache_calibration.npz")
    level = cache.levels[0]  # the finest level the family answers at
    return float((cache.logits[level][-1].argmax(-1) == cache.labels[level]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="gran_hbn")
    ap.add_argument("--budget", default="smoke")
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--data-size", default="smoke", choices=["tiny", "smoke", "full"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128, help="the global batch, the same in both arms")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cpus", type=float, default=float(os.cpu_count() or 2), help="CPUs for each arm in all")
    ap.add_argument("--gpus", type=float, default=0, help="GPUs for the N-worker arm (one per worker); the 1-worker arm gets 1")
    ap.add_argument("--seed", type=int, default=0, help="the trial's seed (initialisation, batch order, augmentation)")
    ap.add_argument("--draw", type=int, default=0, help="which configuration of the space: the seed of the sampler that draws it")
    args = ap.parse_args()

    import ray

    config = fixed_config(args.space, args.budget, args.draw, epochs=args.epochs, batch_size=args.batch_size,
                          seed=args.seed)
    ray.init(num_cpus=int(max(args.cpus, 1)), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    arms = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, args.workers):
            arms.append(run_arm(args.space, config, Path(tmp), n, data=args.data, data_size=args.data_size,
                                budget=args.budget, cpus=args.cpus, gpus=(n if args.gpus else 0), seed=args.seed))
            print(json.dumps(arms[-1]))
    one, many = arms
    common = sorted(set(one["signal"]) & set(many["signal"]))
    print(json.dumps({
        "config": {k: config[k] for k in sorted(config) if not isinstance(config[k], (dict, list))},
        "wall_ratio_n_over_1": round(many["wall_s"] / one["wall_s"], 2),
        "final_train_loss_rel_diff": round(abs(many["train_loss"][-1] - one["train_loss"][-1]) / abs(one["train_loss"][-1]), 4),
        "final_exit_calib_accuracy_diff": round(many["final_exit_calib_accuracy"] - one["final_exit_calib_accuracy"], 4),
        "signal_diff": {k: round(many["signal"][k] - one["signal"][k], 4) for k in common},
    }))


if __name__ == "__main__":
    main()
