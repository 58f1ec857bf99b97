"""A data-parallel trial: Ray Train's `TorchTrainer` launched from inside the Tune trial.

`--workers-per-trial N` (or a whole `--gpus-per-trial N` above 1) makes each trial N Ray Train
workers (Ray's Train V2 pattern: the Tune trial is a thin driver that calls `TorchTrainer.fit`).
Each worker runs the space's ordinary trial (`Space.train`, the shared loop of
trainables/engine/loop.py) under Accelerate, which picks up the process group Ray Train made (NCCL on
GPUs, gloo on CPUs) and wraps the network in DDP; the loop shards every global batch over the
workers. So every family gets multi-worker trials without a line of its own.

- Metrics reach Tune through Ray's `TuneReportCallback` (the main worker's), so the live display,
  schedulers and the searcher see one trial as usual.
- Checkpoints are Ray Train's: kept under RUN/train/TRIAL_ID. A worker that dies restarts the
  worker group from the last checkpoint (Ray Train's FailureConfig, `--retries` times); a Tune
  retry or a `--resume` builds a trainer with the same name and storage, which Ray Train restores
  from that same place.
- Resources: the Tune trial itself reserves a sliver of a CPU (it only waits on the trainer); the
  workers take the rest of the trial's CPUs (split evenly) and one GPU each, so a trial never
  holds more than `--cpus-per-trial`. A driver that reserved its own full share on top is what
  lets trials deadlock over shared resources (Ray issue #54305: every driver placed, no room left
  for their workers); here the search starts no more trials at once than there are resources
  for all of their workers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from search.spec import DRIVER_CPU, RunSpec  # DRIVER_CPU: the Tune trial's own share of the trial's CPUs

__all__ = ["DRIVER_CPU", "TrainReporter", "run_data_parallel", "worker_resources"]




def worker_resources(spec: RunSpec) -> dict[str, float]:
    """What one of a trial's workers asks Ray for: the trial's CPUs less the driver's sliver, split
    evenly (rounded down to Ray's 1e-4 granularity, so a trial never asks for more than it has)."""
    n = spec.workers
    out = {"CPU": math.floor((spec.cpus_per_trial - DRIVER_CPU) / n * 1e4) / 1e4}
    if spec.gpus_per_trial:
        out["GPU"] = spec.gpus_per_trial / n
    return out


class TrainReporter:
    """trainables.engine.loop.Reporter on top of ray.train.report / ray.train.get_checkpoint."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)

    def get_checkpoint(self) -> str | None:
        import ray.train

        from trainables.storage import checkpoint_directory

        ckpt = ray.train.get_checkpoint()
        return None if ckpt is None else checkpoint_directory(ckpt)  # its keys checked before it is fetched


def _worker(args: dict[str, Any]) -> None:
    """One Ray Train worker: the space's ordinary trial, its failure written down by the main one."""
    import ray.train

    from search.prepare import record_failure, trial_context
    from trainables.storage import trial_sync
    from spaces import get_space

    spec = RunSpec.from_dict(args["spec"])
    space = get_space(spec.space)
    ctx = trial_context(space, spec, args["trial_id"], TrainReporter(), args["references"])
    ctx.cpu_threads = max(1, int(spec.cpus_per_trial / spec.workers))
    main = ray.train.get_context().get_world_rank() == 0
    sync = trial_sync(spec, args["trial_id"]) if main else None  # a bucket run: the main worker's files go up
    if sync is not None:
        sync.pull()
        ctx.reporter = sync.reporter(ctx.reporter)
    try:
        space.train(args["config"], ctx, space.budget(spec.budget), spec.options)
    except BaseException as exc:
        if main:
            record_failure(Path(ctx.trial_dir), args["config"], exc)
        if sync is not None:
            sync.push()
            sync.done()
        raise
    if sync is not None:  # its last report pushed the trial's files
        sync.done()


def run_data_parallel(config: dict[str, Any], spec: RunSpec, trial_id: str, references: dict[str, float],
                      in_tune: bool = True):
    """Train one trial on `spec.workers` Ray Train workers; called inside the Tune trial (`in_tune`:
    its metrics are reported to Tune). Returns Ray Train's Result."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if in_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

    gpu = spec.gpus_per_trial > 0
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"config": config, "spec": spec.to_dict(), "trial_id": trial_id, "references": references},
        scaling_config=ScalingConfig(num_workers=spec.workers, use_gpu=gpu, resources_per_worker=worker_resources(spec)),
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        run_config=RunConfig(
            name=trial_id,
            storage_path=spec.location("train"),
            failure_config=FailureConfig(max_failures=spec.retries),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()] if in_tune else [],
        ),
    )
    return trainer.fit()
