"""How many trials share one GPU when `--gpus-per-trial` is not given.

`choose_packing` is the rule (pure arithmetic, no torch): from one trial's peak memory, the
GPU's memory and the machine's CPUs it picks k trials per GPU, so `--gpus-per-trial 1/k`, and
says why in one line. `measured_default` is what `search.run` calls on a GPU machine: it measures
one training step of the space's largest network(s) at the budget's largest batch size
(trainables/engine/memory.py) in a short-lived child process, so that the driver holds no CUDA context
of its own during the search, and applies the rule.

The numbers of the rule:

* `CONTEXT_BYTES` = 1 GiB per trial. Every trial is its own process with its own CUDA context:
  the context and the kernel images of torch, cuBLAS and cuDNN loaded lazily take about
  0.3-0.6 GiB on current GPUs, and cuBLAS / cuDNN workspaces for bf16 convolutions and matmuls
  take up to a few hundred MiB more; none of it shows in `torch.cuda.max_memory_allocated`.
* `SLACK` = 15 % of the measured peak. The caching allocator reserves more than it hands out
  (blocks rounded up, split blocks that cannot be reused for a larger request): with the
  fixed shapes of a training loop reserved / allocated stays about 1.05-1.3; the measured step
  is also the largest network at the largest batch, so most trials need less.
* `MAX_TRIALS_PER_GPU` = 8. Beyond that small trials fight for the GPU's streaming
  multiprocessors and each runs slower than alone, with little gain in total throughput.
* CPUs: every packed trial gets its `--cpus-per-trial` (Ray would not start more), so k is also
  at most CPUs / cpus-per-trial / GPUs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["CONTEXT_BYTES", "MAX_TRIALS_PER_GPU", "SLACK", "Packing", "choose_packing", "measured_default"]

GIB = 1024**3
CONTEXT_BYTES = 1 * GIB
SLACK = 0.15
MAX_TRIALS_PER_GPU = 8
FALLBACK_GPUS_PER_TRIAL = 0.25  # when the measurement itself fails: the old fixed default


@dataclass(frozen=True)
class Packing:
    trials_per_gpu: int
    gpus_per_trial: float  # 1 / trials_per_gpu, rounded down to Ray's 1e-4 resource granularity
    peak_bytes: int  # one trial's peak on the GPU (network, optimiser, activations, resident data)
    gpu_bytes: int  # the GPU's total memory
    limit: str  # what bound k: "memory", "cap", "cpu", or "exceeds" (one trial needs more than the GPU)
    reason: str  # one line for people

    def record(self, measured: bool) -> dict[str, Any]:
        """What the run's spec.json keeps (`packing`)."""
        return {"trials_per_gpu": self.trials_per_gpu, "gpus_per_trial": self.gpus_per_trial,
                "peak_bytes": int(self.peak_bytes), "gpu_bytes": int(self.gpu_bytes), "limit": self.limit,
                "reason": self.reason, "measured": bool(measured)}


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def choose_packing(peak_bytes: int, gpu_bytes: int, *, gpus: int = 1, cpus: int | None = None,
                   cpus_per_trial: float = 1.0, context_bytes: int = CONTEXT_BYTES, slack: float = SLACK,
                   cap: int = MAX_TRIALS_PER_GPU) -> Packing:
    """Trials per GPU: as many as fit in its memory (each needing peak * (1 + slack) + context),
    at most `cap`, and at most the CPUs can feed; never fewer than 1."""
    if gpu_bytes <= 0:
        raise ValueError(f"gpu_bytes must be > 0, got {gpu_bytes}")
    if cpus_per_trial <= 0:
        raise ValueError(f"cpus_per_trial must be > 0, got {cpus_per_trial}")
    need = peak_bytes * (1.0 + slack) + context_bytes
    by_memory = int(gpu_bytes // need)
    by_cpu = None if cpus is None else max(1, int(cpus // cpus_per_trial) // max(1, int(gpus)))
    k, limit = by_memory, "memory"
    if k > cap:
        k, limit = cap, "cap"
    if by_cpu is not None and by_cpu < k:
        k, limit = by_cpu, "cpu"
    if k < 1:
        k, limit = 1, "exceeds"
    gpus_per_trial = math.floor(10_000 / k) / 10_000  # k * this never exceeds 1 GPU in Ray's accounting
    head = f"{k} trial{'s' if k > 1 else ''} per GPU (--gpus-per-trial {gpus_per_trial:g})"
    fits = (f"a trial peaks at {_gib(peak_bytes)} (+{slack:.0%} slack, +{_gib(context_bytes)} CUDA context "
            f"= {_gib(need)}) of the GPU's {_gib(gpu_bytes)}")
    if limit == "exceeds":
        reason = f"{head}: {fits}, more than it holds: the largest trials may run out of memory"
    elif limit == "memory":
        reason = f"{head}: {fits}"
    elif limit == "cap":
        reason = f"{head}: {fits}; capped at {cap} per GPU"
    else:
        reason = (f"{head}: {fits}; capped by {cpus} CPU / {cpus_per_trial:g} per trial"
                  + (f" over {gpus} GPUs" if gpus > 1 else ""))
    return Packing(k, gpus_per_trial, int(peak_bytes), int(gpu_bytes), limit, reason)


DEFAULT_BATCH = 128  # trainables/engine/loop.py's batch size when a config has none


class _Probe:
    """Stands in for an Optuna trial to read a define-by-run function's choices: every suggest
    answers its first (or last) choice and the categorical choices are kept."""

    number = 0

    def __init__(self, last: bool) -> None:
        self.last = last
        self.choices: dict[str, list[Any]] = {}

    def suggest_categorical(self, name: str, choices):
        self.choices.setdefault(name, []).extend(choices)
        return list(choices)[-1 if self.last else 0]

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        return high if self.last else low

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        return high if self.last else low


def largest_batch_size(space, budget) -> int:
    """The largest batch size a trial of this space and budget may train with: the largest
    choice of a searched `batch_size` (read by running the define-by-run function on its first
    and on its last choices), a constant one, one in the largest configs, or the loop's 128."""
    sizes: list[int] = []
    for last in (False, True):
        probe = _Probe(last)
        constants = space.define(probe, budget=budget) or {}
        sizes += [int(b) for b in probe.choices.get("batch_size", [])]
        if "batch_size" in constants:
            sizes.append(int(constants["batch_size"]))
    sizes += [int(c["batch_size"]) for c in space.largest_configs(budget) if "batch_size" in c]
    return max(sizes) if sizes else DEFAULT_BATCH


def _measure_child(space_name: str, budget_name: str, options: dict[str, str], data, resident: int,
                   device: str) -> tuple[int, bool, int]:
    """In a child process: one training step of each of the space's largest networks."""
    from spaces import get_space
    from trainables.engine.memory import training_peak

    space = get_space(space_name)
    budget = space.budget(budget_name)
    family = space.family(budget, space.resolve_options(options))
    batch = largest_batch_size(space, budget)
    est = training_peak(family, data, batch, device=device, dataset_bytes=resident)
    return est.peak_bytes, est.measured, batch


def _measure(space_name: str, budget_name: str, options: dict[str, str], data, resident: int) -> tuple[int, bool, int]:
    """`_measure_child` on CUDA in a spawned child process: its CUDA context and cached blocks
    are gone when it ends, instead of being held by the driver for the whole search."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measure_child, space_name, budget_name, options, data, resident, "cuda").result()


def measured_default(space, data: str, options: dict[str, str], args: Any,
                     console: Any = None) -> tuple[float, dict[str, Any] | None]:
    """`--gpus-per-trial` when it is not given, and the record of how it was chosen: 0 and None
    without a GPU or with `--device cpu`; on a GPU, measured as the module docstring says.
    `args` is search.run's parsed arguments (budget, data_root, data_size, seed, download,
    device, cpus_per_trial); `console`, when given, prints the reason.

    The dataset is loaded through search.prepare.load_reference_data, so `reference_costs`
    does not read it again. When measuring fails the old fixed 0.25 is used and the record
    says why (a missing dataset is then reported by the run itself, as without a GPU)."""
    import torch

    if args.device == "cpu" or not torch.cuda.is_available():
        return 0.0, None
    gpu_bytes = int(torch.cuda.get_device_properties(0).total_memory)
    try:
        from pathlib import Path
        from types import SimpleNamespace

        from search.prepare import load_reference_data
        from trainables.engine.family import DataInfo
        from trainables.engine.memory import dataset_bytes

        budget = space.budget(args.budget)
        ds = load_reference_data(space, SimpleNamespace(
            data=data, data_root=str(Path(args.data_root).resolve()) if args.data_root else None, seed=args.seed,
            download=args.download, data_size=args.data_size, budget=args.budget))
        info = DataInfo.of(ds)
        space.family(budget, options).check(info)
        peak, measured, _ = _measure(space.name, budget.name, dict(options), info, dataset_bytes(ds))
        packing = choose_packing(peak, gpu_bytes, gpus=torch.cuda.device_count(), cpus=os.cpu_count() or 1,
                                 cpus_per_trial=args.cpus_per_trial)
        gpus, record = packing.gpus_per_trial, packing.record(measured)
    except Exception as exc:  # noqa: BLE001 - a default must not stop the run; the record says why
        gpus = FALLBACK_GPUS_PER_TRIAL
        reason = (f"{round(1 / gpus)} trials per GPU (--gpus-per-trial {gpus:g}, the fixed fallback): "
                  f"measuring a trial's memory failed: {type(exc).__name__}: {exc}")
        record = {"trials_per_gpu": round(1 / gpus), "gpus_per_trial": gpus, "peak_bytes": None,
                  "gpu_bytes": gpu_bytes, "limit": "fallback", "reason": reason, "measured": False}
    if console is not None:
        from search.say import say

        say(console, ("packing", "bold"), f" {record['reason']}")
    return gpus, record
