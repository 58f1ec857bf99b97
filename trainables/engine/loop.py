"""The shared trial loop: `run_trial(family, config, ctx)`, an Accelerate loop for every family.

What is searched (`config`, from a space) is kept apart from infrastructure (`ctx`: data, device,
trial directory, reporter, budget). The loop holds the data on the device as uint8
(trainables/engine/device_data.py), runs at the config's precision (`precision`: auto = bf16 autocast
with channels_last on a GPU, fp32 on CPU; or fp32, bf16, fp16 with a gradient scaler), counts
every exit's FLOPs (and, when the family asks, times its predictor answering at each exit and
without early exits: trainables/engine/cost.py), and runs the family's
training plan stage by stage (each stage: what trains, the rest frozen with its BatchNorm
statistics; its optimiser and schedule; its stop rule), each epoch:

1. trains (the family's model and loss);
2. caches every exit's outputs on the calibration split and asks the family for its signal,
   the same measure every epoch and at the end (so a scheduler compares like with like);
3. checkpoints and reports the signal to the outer search.

Every cache also carries the seconds of training spent so far (`extras["train_seconds"]`, summed
over the epochs' training passes, resumed ones included), so a family may judge a network by what
it cost to train, and a recalibration reads the same figure. After the last epoch it caches the
test split too, hands both caches to the family's
`finish` (points chosen on calibration, scored on test), and writes the trial directory:
`status.json`, `curves.json`, `points.json`, `calibration_front.npz` (the whole calibration front,
from which the stored hypervolume can be recomputed), `exit_cache_{calibration,test}.npz` and
`model.pt`. A retried trial resumes from its checkpoint. A family supplies only what is its own
(trainables/engine/family.py).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from trainables.atomic import atomic_write, write_json
from trainables.engine.batch_latency import BATCH_COSTS
from trainables.engine.cost import measure_latency, plain_cost, segment_flops
from trainables.engine.device_data import DeviceLoader, load_data
from trainables.exits import ExitCache
from trainables.engine.family import DataInfo, Family, TrialInputs
from trainables.engine.optim import make_optimizer, make_scheduler, per_epoch_schedule
from trainables.engine.plan import Stage, StopTracker, metric_of
from trainables.engine.precision import Precision
from trainables.safe_load import load_torch, plain_values

__all__ = ["LocalReporter", "Reporter", "TrialContext", "TrialDiverged", "run_trial"]


class TrialDiverged(RuntimeError):
    """The loss became NaN or infinite: the trial is recorded as failed with this reason."""


class Reporter(Protocol):
    """How a trial reports to its runner. A reporter may also have `files_written()`, called when
    the trial has written its first status (a bucket run publishes it: trainables/storage.py)."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None: ...

    def get_checkpoint(self) -> str | None: ...


class LocalReporter:
    """Reporter for runs without Ray: keeps metrics in memory and the last checkpoint on disk."""

    def __init__(self, checkpoint_root: str | Path) -> None:
        self.history: list[dict[str, Any]] = []
        self.root = Path(checkpoint_root)

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.history.append(dict(metrics))
        if checkpoint_dir is not None:
            dest = self.root / "checkpoint"
            tmp = self.root / ".checkpoint.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(checkpoint_dir, tmp)
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)

    def get_checkpoint(self) -> str | None:
        d = self.root / "checkpoint"
        return str(d) if (d / "state.pt").exists() else None


@dataclass
class TrialContext:
    """Infrastructure of one trial: nothing here is searched."""

    trial_dir: str
    reporter: Reporter
    data: str = "synthetic"
    data_root: str | None = None
    data_size: str = "smoke"  # "full" | "smoke" | "tiny": dataset subset size
    download: bool = False
    epochs: int = 2  # default when the config does not set `epochs`
    seed: int = 0  # this trial's seed: initialisation, batch order, augmentation, calibration
    data_seed: int = 0  # the run's seed: the data and its splits, the same for every trial
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    references: dict[str, float] = field(default_factory=dict)  # cost name -> the space's largest network's
    cpu_threads: int = 1
    trial_id: str = "local"


def _reset_accelerate() -> None:
    """Accelerate keeps process-wide singletons: clear them so a reused worker starts clean."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()
    GradientState._reset_state()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@torch.no_grad()
def exit_outputs(model, loader: DeviceLoader, autocast, loss_fn=None, epoch: float = 0.0) -> tuple[list[np.ndarray], float | None]:
    """Every exit's logits over a split, per answer level: [(K, N, n_classes)] in float16; and the
    family's loss on that split (mean over batches, weighted by size) when `loss_fn` is given."""
    model.eval()
    chunks: list[list[tuple[torch.Tensor, ...]]] = []
    loss_sum, n = 0.0, 0
    for x, yf, yc in loader.epoch():
        with autocast():
            outs = model(x)
        chunks.append([tuple(t.float() for t in out) for out in outs])
        if loss_fn is not None:
            loss_sum += float(loss_fn(chunks[-1], yf, yc, epoch)) * len(x)
            n += len(x)
    K, L = len(chunks[0]), len(chunks[0][0])
    logits = [torch.stack([torch.cat([c[k][j] for c in chunks]) for k in range(K)]).half().cpu().numpy() for j in range(L)]
    return logits, (loss_sum / n if n else None)


def set_trainable(net: torch.nn.Module, stage: Stage) -> list[torch.nn.Parameter]:
    """Freeze what `stage` does not train (no gradient) and return the parameters it trains."""
    params = []
    for name, p in net.named_parameters():
        p.requires_grad_(stage.trainable(name))
        if p.requires_grad:
            params.append(p)
    if not params:
        raise ValueError(f"stage {stage.name!r} trains no parameter of the network (prefixes {stage.trains})")
    return params


def train_mode(net: torch.nn.Module, stage: Stage | None) -> None:
    """net.train(), with every module the stage freezes in eval mode: a frozen BatchNorm keeps its
    running statistics (and a frozen dropout is off), so frozen means bitwise unchanged."""
    net.train()
    if stage is None or stage.trains is None:
        return
    for name, m in net.named_modules():
        if not name or stage.trainable(name):
            continue
        # frozen unless it is an ancestor of something that trains (a container of trained parts)
        if not any(stage.trainable(f"{name}.{child}") for child, _ in m.named_modules() if child):
            m.eval()


def train_step(model, opt, x, yf, yc, loss_fn, precision: Precision, progress: float, backward=None) -> torch.Tensor:
    """One optimiser step of the engine (also what trainables/engine/memory.py measures): forward under
    the trial's precision, the family's loss, backward (scaled for fp16), step. Returns the loss."""
    with precision.autocast():
        outs = model(x)
    loss = loss_fn(outs, yf, yc, progress)
    opt.zero_grad(set_to_none=True)
    precision.backward(loss, backward)
    precision.step(opt)
    return loss


def run_epoch(model, opt, sched, loader: DeviceLoader, loss_fn, accelerator, epoch: int,
              max_steps: int | None = None, precision: Precision | None = None, stage: Stage | None = None) -> torch.Tensor:
    """One training epoch; returns the summed loss as a device tensor (no sync per step)."""
    precision = precision or Precision.of({}, accelerator.device)
    train_mode(accelerator.unwrap_model(model), stage)
    steps = len(loader)
    loss_sum = torch.zeros((), device=accelerator.device)
    per_step = sched is not None and not per_epoch_schedule(sched)
    for step, (x, yf, yc) in enumerate(loader.epoch(epoch)):
        if max_steps is not None and step >= max_steps:
            break
        loss = train_step(model, opt, x, yf, yc, loss_fn, precision, epoch + step / steps, accelerator.backward)
        if per_step:
            sched.step()
        loss_sum += loss.detach()
    return loss_sum


_REFERENCE_LATENCY: dict[tuple, float] = {}


def reference_latency(family: Family, data: DataInfo, device: torch.device, autocast) -> float:
    """Batch-1 latency (ms) of the space's largest network on this device: the latency normaliser.
    Measured once per worker process and kept, like the data."""
    key = (json.dumps(family.reference_configs, sort_keys=True, default=str), str(device), data.channels,
           data.image_size, tuple(family.outputs(data).items()))
    if key not in _REFERENCE_LATENCY:
        best = 0.0
        image = torch.zeros(1, data.channels, data.image_size, data.image_size, dtype=torch.uint8)
        for cfg in family.reference_configs:
            net = family.build_model(cfg, data).to(device)
            if device.type == "cuda":
                net = net.to(memory_format=torch.channels_last)
            best = max(best, float(measure_latency(net, data, image, batch_size=1, warmup=2, repeats=5,
                                                   autocast=autocast, channels_last=device.type == "cuda").exit_ms[-1]))
        _REFERENCE_LATENCY[key] = best
    return _REFERENCE_LATENCY[key]


def run_trial(family: Family, config: dict[str, Any], ctx: TrialContext) -> dict[str, Any]:
    """Train one network of a family through its plan, calibrate it, and report. Returns the last
    metrics reported."""
    from accelerate import Accelerator

    _reset_accelerate()
    seed = int(config.get("seed", ctx.seed))
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    trial_dir = Path(ctx.trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)

    use_cuda = ctx.device == "cuda" or (ctx.device == "auto" and torch.cuda.is_available())
    if not use_cuda:
        torch.set_num_threads(max(1, int(ctx.cpu_threads)))
    # precision is the engine's (trainables/engine/precision.py); Accelerate only places and wraps (DDP)
    accelerator = Accelerator(cpu=not use_cuda, mixed_precision="no")
    device = accelerator.device
    precision = Precision.of(config, device)
    # a data-parallel trial (Ray Train workers, Accelerate DDP): every worker trains on its slice of
    # each global batch; the main one measures, evaluates, writes and checkpoints
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process

    ds = load_data(ctx.data, ctx.data_root, size=ctx.data_size, download=ctx.download, seed=ctx.data_seed)
    data = DataInfo.of(ds)
    family.fetch(ctx.download)  # what the options name beyond the dataset (e.g. pretrained weights), on this node
    searched = {"epochs": ctx.epochs, **config}  # the config as the family reads it (epochs from the budget if unset)
    inputs = TrialInputs(searched, seed, data)
    plan = family.plan(inputs)
    planned = plan.epochs
    batch_size = int(config.get("batch_size", 128))
    net = family.build_model(config, data).to(device)
    if use_cuda:
        net = net.to(memory_format=torch.channels_last)
    size = family.input_size(searched, data)  # the side the network sees: batches are resized to it
    stage_f, head_f = segment_flops(net, data.channels, size)
    costs: dict[str, np.ndarray] = {"flops": np.cumsum(stage_f + head_f)}
    references = {"flops": float(ctx.references.get("flops") or costs["flops"][-1])}
    plain = {"flops": plain_cost(stage_f, head_f)}
    prof = None

    def timed():  # the trial's predictor, timed answering at each exit (trainables/engine/cost.py)
        return measure_latency(net, data, ds.calib.images, autocast=precision.autocast, channels_last=use_cuda,
                               **family.calibration.get("latency", {}))

    if family.latency and main:
        prof = timed()
        references["latency_ms"] = reference_latency(family, data, device, precision.autocast)

    batch_of: dict[str, int] = {}  # latency cost -> images per call it was timed at (trainables/engine/batch_latency.py)

    def set_latency(p) -> None:
        # batch 1, sub-batch, batch (fewer sizes when the calibration split has fewer images: the nearest)
        for name, size in zip(BATCH_COSTS, (p.sizes[0], p.sizes[len(p.sizes) // 2], p.sizes[-1])):
            costs[name], plain[name] = p.at(size)
            batch_of[name] = int(size)

    if prof is not None:
        set_latency(prof)

    loader_kw = dict(coarse_of=np.asarray(data.coarse_of), device=device, mean=data.mean, std=data.std,
                     channels_last=use_cuda, size=size)
    augment = family.augmentation(inputs)
    train_loader = DeviceLoader(ds.train, batch_size=batch_size, train=True, seed=seed, shard=(rank, world),
                                augment=augment, **loader_kw)
    calib_loader = DeviceLoader(ds.calib, batch_size=1024, train=False, **loader_kw)
    if len(train_loader) == 0:
        raise ValueError(f"batch_size {batch_size} exceeds the training split ({len(ds.train)} images)")
    if batch_size < world:
        raise ValueError(f"batch_size {batch_size} is smaller than the trial's {world} workers")
    steps = len(train_loader)

    # where the plan resumes: a checkpoint records the stage, the epochs done in it and its stop
    # rule's state (a checkpoint of the one-stage loop before plans existed holds only "epoch")
    curves: list[dict[str, Any]] = []
    start_stage, start_epoch, state = 0, 0, None
    ckpt = ctx.reporter.get_checkpoint()
    if ckpt is None:
        family.initialise(net, inputs)  # e.g. pretrained weights (a resumed trial has its checkpoint's)
    else:
        state = load_torch(Path(ckpt) / "state.pt", map_location=device)
        net.load_state_dict(state["model"])
        curves = list(state["curves"])
        start_stage = int(state.get("stage", 0))
        start_epoch = int(state.get("stage_epoch", int(state["epoch"]) + 1))
        if state.get("stage_stopped") or start_epoch >= plan.stages[start_stage].epochs:
            start_stage, start_epoch, state = start_stage + 1, 0, None  # the next stage starts afresh
    resumed_at = plan.offset(start_stage) + start_epoch if start_stage < len(plan.stages) else planned
    if ckpt is not None and start_stage >= len(plan.stages) and (trial_dir / "points.json").is_file():
        # the last epoch's checkpoint: the trial finished (its outcome is written before that checkpoint), and the run
        # stopped before the search heard of it. A resume or retry that finds it ends it as it was: complete
        return _already_complete(trial_dir, planned) if main else {}
    trained = [float(sum(c.get("epoch_seconds", 0.0) for c in curves))]  # training seconds so far, resumes included

    def cache(loader: DeviceLoader, loss_fn, epoch: float = 0.0) -> tuple[ExitCache, float | None]:
        logits, loss = exit_outputs(net, loader, precision.autocast, loss_fn, epoch)
        # class indices as int64; multi-hot targets (a multi-label dataset) as uint8 (N, n_classes)
        labels = {k: t.cpu().numpy() if t.ndim == 2 else t.cpu().numpy().astype(np.int64)
                  for k, t in (("fine", loader.fine), ("coarse", loader.coarse))}
        # the family's levels are what it calibrates on (a network may have more heads, e.g. for its loss)
        extras = {**family.cache_extras(net, data), "train_seconds": np.asarray([trained[0]], dtype=np.float64)}
        return ExitCache(family.levels, dict(zip(family.levels, logits)), {k: labels[k] for k in family.levels},
                         costs, references, plain, extras, dict(batch_of)), loss

    status: dict[str, Any] = {
        "status": "running", "trial_id": ctx.trial_id, "epochs_planned": planned, "epochs_done": resumed_at,
        "seed": seed, "config": config, "plan": plan.describe(), "precision": precision.name,
        "input_size": size, "augment": augment.describe(), "data_resident": train_loader.resident,
        "provenance": {"device": _device_name(device), "hostname": socket.gethostname(), "torch": torch.__version__,
                       "pid": os.getpid(), "workers": world,
                       "code": str(Path(__file__).resolve().parents[2]),  # where this trial's code was imported from
                       **({"backend": torch.distributed.get_backend()} if world > 1 else {})},
        "costs": {k: v.tolist() for k, v in costs.items()}, "references": references, "plain": plain,
        "resumed_from_epoch": resumed_at if ckpt is not None else None,
        # every start of this trial (a retry after a crash or a lost node, a resumed run): from which epoch, where
        "starts": _previous_starts(trial_dir) + [{"from_epoch": resumed_at, "pid": os.getpid(),
                                                  "at": datetime.now(timezone.utc).isoformat(),
                                                  **({"stage": plan.stages[start_stage].name}
                                                     if start_stage < len(plan.stages) else {})}],
    }
    if prof is not None:
        status["latency"] = prof.describe()  # how the latencies were measured
    if main:
        _write_status(trial_dir, status)
        if callable(getattr(ctx.reporter, "files_written", None)):
            ctx.reporter.files_written()  # the trial is seen running before its first epoch ends

    metrics: dict[str, Any] = {}
    for s in range(start_stage, len(plan.stages)):
        stage = plan.stages[s]
        cfg = stage.config(searched)
        stage_inputs = TrialInputs(cfg, seed, data, stage)
        params = set_trainable(net, stage)
        opt = make_optimizer(cfg, params)
        sched = make_scheduler(cfg, opt, stage.epochs, steps)
        model, opt = accelerator.prepare(net, opt)  # a new DDP wrapper per stage: it reduces this stage's gradients
        loss_fn = family.make_loss(stage_inputs, net.n_exits)
        tracker = StopTracker.restore(stage.stop, (state or {}).get("stop")) if stage.stop else None
        best_state = (state or {}).get("best_model")
        if state is not None:  # resuming inside this stage
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            precision.load_state_dict(state.get("precision"))
        state = None
        for e in range(start_epoch if s == start_stage else 0, stage.epochs):
            position = plan.position(s, e)  # epochs over the whole plan, this one included
            t0 = time.perf_counter()
            loss_sum = run_epoch(model, opt, sched, train_loader, loss_fn, accelerator, position - 1,
                                 precision=precision, stage=stage)
            if world > 1:  # every worker sees the same mean, so all of them stop on a divergence
                loss_sum = accelerator.reduce(loss_sum, reduction="mean")
            mean_loss = float(loss_sum.item()) / steps  # one device sync per epoch, not per step
            if not math.isfinite(mean_loss):
                raise TrialDiverged(f"training loss became {mean_loss} in epoch {position}/{planned}"
                                    + (f" (stage {stage.name})" if len(plan.stages) > 1 else ""))
            seconds = time.perf_counter() - t0
            trained[0] += seconds
            lr = float(opt.param_groups[0]["lr"])
            last_of_stage = e == stage.epochs - 1
            stop = False
            if not main:  # the other workers only need the calibration loss a plateau schedule steps on
                if per_epoch_schedule(sched):
                    sched.step(cache(calib_loader, loss_fn, position)[1])
                if tracker is not None:
                    stop = _broadcast_flag(False, accelerator)
                if (last_of_stage or stop) and s < len(plan.stages) - 1:
                    # the stage ends on every worker alike: the main worker's weights (its best epoch's,
                    # when restored), then the family's hook (no calibration outputs here)
                    _broadcast_state(net, accelerator)
                    family.stage_done(stage, net, None, stage_inputs)
                metrics = {"epoch": position, "fidelity": position / planned, "train_loss": mean_loss}
                ctx.reporter.report(metrics, None)
                if stop:
                    break
                continue
            last = s == len(plan.stages) - 1 and last_of_stage
            if last and prof is not None:
                # a second measurement, apart in time from the first: their rounds pooled
                prof = prof.pooled(timed())
                set_latency(prof)
                status["latency"] = prof.describe()
                status["costs"] = {k: np.asarray(v).tolist() for k, v in costs.items()}
            calib_cache, calib_loss = cache(calib_loader, loss_fn, position)
            if per_epoch_schedule(sched):
                sched.step(calib_loss)  # ReduceLROnPlateau: on the calibration loss, once an epoch
            t1 = time.perf_counter()
            evaluation = family.evaluate(calib_cache, stage_inputs)
            row = {"epoch": position, "train_loss": mean_loss, "calib_loss": calib_loss, "lr": lr,
                   "epoch_seconds": seconds, "images_per_second": steps * batch_size / seconds,
                   "evaluation_seconds": time.perf_counter() - t1, "ended_at": datetime.now(timezone.utc).isoformat(),
                   **evaluation.curve}
            if len(plan.stages) > 1 or tracker is not None:
                row["stage"] = stage.name
            if tracker is not None:
                improved, stop = tracker.update(metric_of(stage.stop.metric, evaluation.signal, evaluation.curve), e)
                if improved and stage.stop.restore_best:
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                stop = _broadcast_flag(stop and not last_of_stage, accelerator) if world > 1 else stop and not last_of_stage
                if (stop or last_of_stage) and stage.stop.restore_best and best_state is not None \
                        and tracker.best_epoch != e:
                    # the stage ends: its best epoch's weights, and the calibration outputs of those weights
                    net.load_state_dict(best_state)
                    calib_cache, _ = cache(calib_loader, loss_fn, position)
                    evaluation = family.evaluate(calib_cache, stage_inputs)
                    row["restored_epoch"] = plan.position(s, tracker.best_epoch)
            curves.append(row)
            write_json(trial_dir / "curves.json", curves)
            ends = last_of_stage or stop
            done = s == len(plan.stages) - 1 and ends
            fidelity = 1.0 if done else position / planned
            metrics = {"epoch": position, "fidelity": fidelity, "train_loss": mean_loss,
                       "images_per_second": row["images_per_second"], **evaluation.signal}
            if ends and not done:
                if world > 1:
                    _broadcast_state(net, accelerator)
                family.stage_done(stage, net, calib_cache, stage_inputs)
            if done:
                test_cache, _ = cache(DeviceLoader(ds.test, batch_size=1024, train=False, **loader_kw), loss_fn)
                _finish(family, evaluation, calib_cache, test_cache, stage_inputs, trial_dir, net, data, status)
            status.update(epochs_done=planned if done else (plan.offset(s + 1) if ends else position),
                          status="complete" if done else "running", signal=evaluation.signal)
            _write_status(trial_dir, status)
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(plain_values({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                         "precision": precision.state_dict(), "epoch": position - 1, "curves": curves,
                                         "stage": s, "stage_epoch": e + 1, "stage_stopped": bool(stop),
                                         **({"stop": tracker.state()} if tracker is not None else {}),
                                         **({"best_model": best_state} if best_state is not None and not ends else {})}),
                           Path(tmp) / "state.pt")
                ctx.reporter.report(metrics, tmp)
            if stop:
                break
    return metrics


def _already_complete(trial_dir: Path, planned: int) -> dict[str, Any]:
    """A finished trial started again from its last checkpoint: its status says complete again,
    and its last metrics are returned (Tune still holds its last report)."""
    try:
        status = json.loads((trial_dir / "status.json").read_text())
    except (OSError, ValueError):
        status = {}
    status.update(status="complete", epochs_done=planned)
    status.pop("cut_short_by", None)
    _write_status(trial_dir, status)
    return {"epoch": planned, "fidelity": 1.0, **(status.get("signal") or {})}


def _broadcast_flag(flag: bool, accelerator) -> bool:
    """The main worker's decision, on every worker of a data-parallel trial."""
    from accelerate.utils import broadcast

    t = torch.tensor([1 if flag else 0], device=accelerator.device)
    return bool(broadcast(t, from_process=0).item())


def _broadcast_state(net: torch.nn.Module, accelerator) -> None:
    """Every worker of a data-parallel trial takes the main worker's weights and buffers."""
    from accelerate.utils import broadcast

    for t in net.state_dict().values():
        x = t.detach().to(torch.uint8) if t.dtype == torch.bool else t.detach().clone()  # gloo has no bool
        t.copy_(broadcast(x, from_process=0).to(t.dtype))


def _previous_starts(trial_dir: Path) -> list[dict[str, Any]]:
    try:
        starts = json.loads((trial_dir / "status.json").read_text()).get("starts")
    except (OSError, ValueError, AttributeError):
        return []
    return list(starts) if isinstance(starts, list) else []


def _write_status(trial_dir: Path, status: dict[str, Any]) -> None:
    status["updated_at"] = datetime.now(timezone.utc).isoformat()
    write_json(trial_dir / "status.json", status)


def _finish(family: Family, evaluation, calib_cache: ExitCache, test_cache: ExitCache, inputs: TrialInputs,
            trial_dir: Path, net, data: DataInfo, status: dict[str, Any]) -> None:
    """After the last epoch: save both caches, make the operating points, save the network."""
    calib_cache.save(trial_dir / "exit_cache_calibration.npz")
    test_cache.save(trial_dir / "exit_cache_test.npz")
    t0 = time.perf_counter()
    outcome = family.finish(evaluation, calib_cache, test_cache, inputs)
    seconds = time.perf_counter() - t0
    write_outcome(trial_dir, family, outcome, {"finish_seconds": seconds})
    status["trial"] = outcome.trial
    payload = {"config": status["config"], "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
               "data": data.to_plain(), "outputs": family.outputs(data),
               "costs": {k: np.asarray(v).tolist() for k, v in calib_cache.costs.items()},
               "plain": {k: float(v) for k, v in calib_cache.plain.items()}}
    atomic_write(trial_dir / "model.pt", lambda tmp: torch.save(plain_values(payload), tmp))


def write_outcome(trial_dir: Path, family: Family, outcome, extra: dict[str, Any]) -> None:
    """points.json and calibration_front.npz of a trial (also used by search.recalibrate)."""
    write_json(trial_dir / "points.json", {"points": outcome.points, "trial": outcome.trial, **extra})
    if outcome.front is not None:
        decl = family.declaration
        front = np.asarray(outcome.front, dtype=np.float64)

        def _w(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, front=front, objectives=np.array(decl.hv_objectives),
                         maximize=np.array(decl.maximize(decl.hv_objectives)),
                         reference=np.asarray(decl.hv_reference, dtype=np.float64))

        atomic_write(trial_dir / "calibration_front.npz", _w)
