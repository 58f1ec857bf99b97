"""The training loop of an early-exit trial: `train(config, ctx)`, an Accelerate loop.

What is searched (`config`, from a space) is kept apart from infrastructure (`ctx`: data, device,
trial directory, reporter, budget). Data lives on the device as uint8 for the whole trial:
random crop (pad by size/8) and horizontal flip are done there per batch, because loading and
augmenting uint8 on the device is faster than a per-sample PIL pipeline
(benchmarks/throughput.py measures it). On a GPU the model runs in bf16 autocast with
channels_last; on CPU in fp32.

Each epoch the loop scores every exit on the calibration split, computes a quick hypervolume
(a scalar a Tune scheduler can act on), checkpoints, and reports. After the last epoch it caches
every exit's outputs on the calibration and test splits, calibrates the thresholds
(trainables/exits.py), writes the operating points and the final network into the trial
directory, and reports the calibrated hypervolume. A retried trial resumes from its checkpoint.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from search.atomic import write_json
from trainables.cost import exit_flops
from trainables.data import Dataset, Split, get_dataset
from trainables.exits import (
    ExitCache,
    calibrate,
    evaluate_dense,
    fixed_policies,
    quick_hypervolume,
)
from trainables.losses import GranularLoss
from trainables.models import build_early_exit_net

__all__ = ["DeviceLoader", "Reporter", "TrialContext", "TrialDiverged", "train"]


class TrialDiverged(RuntimeError):
    """The loss became NaN or infinite: the trial is recorded as failed with this reason."""


class Reporter(Protocol):
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
    data_size: str = "smoke"  # "smoke" | "full": dataset subset size
    download: bool = False
    epochs: int = 2  # default when the config does not set `epochs`
    seed: int = 0  # this trial's seed: initialisation, batch order, augmentation
    data_seed: int = 0  # the run's seed: the data and its splits, the same for every trial
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    reference_flops: float = 0.0  # FLOPs of the space's largest network; 0: this network's own
    cpu_threads: int = 1
    calibration: dict[str, Any] = field(default_factory=dict)  # kwargs for exits.calibrate
    trial_id: str = "local"


_DATA_CACHE: dict[tuple, Dataset] = {}


def load_data(ctx: TrialContext) -> Dataset:
    """Datasets are read-only, so a reused worker keeps them between trials."""
    key = (ctx.data, ctx.data_root, ctx.data_size, ctx.download, ctx.data_seed)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = get_dataset(ctx.data, ctx.data_root, seed=ctx.data_seed, download=ctx.download, size=ctx.data_size)
    return _DATA_CACHE[key]


class DeviceLoader:
    """Batches from a split held on the device as uint8; augmentation done there, batched."""

    def __init__(
        self,
        split: Split,
        coarse_of: np.ndarray,
        batch_size: int,
        device: torch.device,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        self.images = split.images.to(device, non_blocking=True)
        self.fine = split.fine.to(device)
        self.coarse = torch.as_tensor(coarse_of, device=device)[self.fine]
        self.batch_size = int(batch_size)
        self.device = device
        self.train = train
        self.seed = seed
        self.channels_last = channels_last
        c = self.images.shape[1]
        self.mean = torch.tensor(mean, device=device, dtype=torch.float32).view(1, c, 1, 1) * 255
        self.std = torch.tensor(std, device=device, dtype=torch.float32).view(1, c, 1, 1) * 255
        self.pad = max(1, self.images.shape[-1] // 8)

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.train else math.ceil(n / self.batch_size)

    def _augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        B, C, H, W = x.shape
        p = self.pad
        xp = torch.nn.functional.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (B,), device=x.device, generator=gen)
        ox = torch.randint(0, 2 * p + 1, (B,), device=x.device, generator=gen)
        rows = (oy[:, None] + torch.arange(H, device=x.device))[:, None, :, None].expand(B, C, H, W + 2 * p)
        xp = xp.gather(2, rows)
        cols = (ox[:, None] + torch.arange(W, device=x.device))[:, None, None, :].expand(B, C, H, W)
        x = xp.gather(3, cols)
        flip = torch.rand(B, device=x.device, generator=gen) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(3), x)

    def epoch(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        if self.train:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(self.seed * 100_003 + epoch)  # a resumed trial replays the same epoch
            order = torch.randperm(n, device=self.device, generator=gen)
        else:
            gen = None
            order = torch.arange(n, device=self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[idx].float()
            if self.train:
                x = self._augment(x, gen)
            x = (x - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.fine[idx], self.coarse[idx]


def make_optimizer(config: dict[str, Any], params) -> torch.optim.Optimizer:
    name = config.get("optimizer", "sgd")
    lr = float(config.get("lr", 0.05))
    wd = float(config.get("weight_decay", 5e-4))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(config.get("momentum", 0.9)), nesterov=True, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}; known: sgd, adam, adamw")


def make_scheduler(config: dict[str, Any], opt: torch.optim.Optimizer, epochs: int, steps_per_epoch: int):
    """Per-step LR schedule over the whole run."""
    name = config.get("lr_schedule", "cosine")
    total = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler
    if name == "cosine":
        return sched.CosineAnnealingLR(opt, T_max=total)
    if name == "cosine_restarts":
        cycles = max(1, int(config.get("lr_cycles", 2)))
        return sched.CosineAnnealingWarmRestarts(opt, T_0=max(1, total // cycles))
    if name == "multistep":
        return sched.MultiStepLR(opt, milestones=[int(total * 0.5), int(total * 0.75)], gamma=0.1)
    if name == "onecycle":
        return sched.OneCycleLR(opt, max_lr=float(config.get("lr", 0.05)), total_steps=total)
    raise ValueError(f"unknown lr_schedule {name!r}; known: cosine, cosine_restarts, multistep, onecycle")


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
def exit_outputs(model, loader: DeviceLoader, autocast) -> tuple[np.ndarray, np.ndarray]:
    """Every exit's fine and coarse logits over a split: (K, N, n_fine), (K, N, n_coarse), fp16."""
    model.eval()
    fine_chunks: list[list[torch.Tensor]] = []
    coarse_chunks: list[list[torch.Tensor]] = []
    for x, _, _ in loader.epoch():
        with autocast():
            outs = model(x)
        fine_chunks.append([f.float() for f, _ in outs])
        coarse_chunks.append([c.float() for _, c in outs])
    K = len(fine_chunks[0])
    fine = torch.stack([torch.cat([ch[k] for ch in fine_chunks]) for k in range(K)])
    coarse = torch.stack([torch.cat([ch[k] for ch in coarse_chunks]) for k in range(K)])
    return fine.half().cpu().numpy(), coarse.half().cpu().numpy()


def _exit_cache(model, loader, autocast, flops, ref_flops) -> ExitCache:
    f, c = exit_outputs(model, loader, autocast)
    return ExitCache(
        fine_logits=f,
        coarse_logits=c,
        y_fine=loader.fine.cpu().numpy().astype(np.int64),
        y_coarse=loader.coarse.cpu().numpy().astype(np.int64),
        exit_flops=flops,
        reference_flops=ref_flops,
    )


def operating_points(calib_cache: ExitCache, test_cache: ExitCache, calibration: dict[str, Any], seed: int):
    """Calibrated front (chosen on calibration, scored on test) plus the fixed reference policies."""
    cs, ts = calib_cache.stats(), test_cache.stats()
    res = calibrate(cs, ts, seed=seed, **calibration)
    points = []

    def rows(policy: str, i: int, tf, tc, sc_c, sc_t, j: int, trial_front: bool):
        for split, sc in (("calibration", sc_c), ("test", sc_t)):
            points.append(
                {
                    "point_id": f"{policy}/{i}",
                    "policy": policy,
                    "split": split,
                    "thresholds_fine": [float(v) for v in tf],
                    "thresholds_coarse": [float(v) for v in tc],
                    "accuracy": float(sc.accuracy[j]),
                    "specificity": float(sc.specificity[j]),
                    "expected_flops": float(sc.expected_flops[j]),
                    "expected_flops_norm": float(sc.expected_flops_norm[j]),
                    "exit_fraction": [float(v) for v in sc.exit_fraction[j]],
                    "trial_front": trial_front,
                }
            )

    for i in range(len(res.thresholds_fine)):
        rows("calibrated", i, res.thresholds_fine[i], res.thresholds_coarse[i], res.calib, res.test, i, True)
    fixed = fixed_policies(cs.n_exits)
    tf = np.stack([f[1] for f in fixed])
    tc = np.stack([f[2] for f in fixed])
    fc, ft = evaluate_dense(cs, tf, tc), evaluate_dense(ts, tf, tc)
    for j, (name, a, b) in enumerate(fixed):
        rows(name, 0, a, b, fc, ft, j, False)
    per_exit = {
        "calibration": {"fine": cs.fine_acc_per_exit().tolist(), "coarse": cs.coarse_acc_per_exit().tolist()},
        "test": {"fine": ts.fine_acc_per_exit().tolist(), "coarse": ts.coarse_acc_per_exit().tolist()},
    }
    return res, points, per_exit


def run_epoch(model, opt, sched, loader: DeviceLoader, loss_fn: GranularLoss, accelerator, epoch: int,
              max_steps: int | None = None) -> torch.Tensor:
    """One training epoch; returns the summed loss as a device tensor (no sync per step)."""
    model.train()
    steps = len(loader)
    loss_sum = torch.zeros((), device=accelerator.device)
    for step, (x, yf, yc) in enumerate(loader.epoch(epoch)):
        if max_steps is not None and step >= max_steps:
            break
        with accelerator.autocast():
            outs = model(x)
        loss = loss_fn(outs, yf, yc, epoch + step / steps)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        opt.step()
        if sched is not None:
            sched.step()
        loss_sum += loss.detach()
    return loss_sum


def train(config: dict[str, Any], ctx: TrialContext) -> dict[str, Any]:
    """Train one early-exit network, calibrate its exits, and report. Returns the final metrics."""
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
    accelerator = Accelerator(cpu=not use_cuda, mixed_precision="bf16" if use_cuda else "no")
    device = accelerator.device

    ds = load_data(ctx)
    epochs = int(config.get("epochs", ctx.epochs))
    batch_size = int(config.get("batch_size", 128))
    model = build_early_exit_net(config, ds.channels, ds.n_fine, ds.n_coarse).to(device)
    if use_cuda:
        model = model.to(memory_format=torch.channels_last)
    flops = exit_flops(model, ds.channels, ds.image_size)
    ref_flops = float(ctx.reference_flops) or float(flops[-1])

    coarse_of = ds.hierarchy.coarse_of
    loader_kw = dict(coarse_of=coarse_of, device=device, mean=ds.mean, std=ds.std, channels_last=use_cuda)
    train_loader = DeviceLoader(ds.train, batch_size=batch_size, train=True, seed=seed, **loader_kw)
    calib_loader = DeviceLoader(ds.calib, batch_size=1024, train=False, **loader_kw)
    if len(train_loader) == 0:
        raise ValueError(f"batch_size {batch_size} exceeds the training split ({len(ds.train)} images)")

    opt = make_optimizer(config, model.parameters())
    sched = make_scheduler(config, opt, epochs, len(train_loader))
    model, opt = accelerator.prepare(model, opt)
    K = accelerator.unwrap_model(model).n_exits
    loss_fn = GranularLoss(
        # per-exit weights run linearly from the first exit's to the last's (Gran-HBN: 1.0 -> 0.6)
        exit_weights=np.linspace(float(config.get("exit_weight_first", 1.0)), float(config.get("exit_weight_last", 1.0)), K).tolist(),
        lambda_fine=float(config.get("lambda_fine", 1.0)),
        lambda_coarse=float(config.get("lambda_coarse", 1.0)),
        fine_start_epoch=float(config.get("fine_start_epoch", 0)),
        fine_ramp_epochs=float(config.get("fine_ramp_epochs", 0)),
        coarse_start_epoch=float(config.get("coarse_start_epoch", 0)),
        coarse_ramp_epochs=float(config.get("coarse_ramp_epochs", 0)),
        label_smoothing=float(config.get("label_smoothing", 0.0)),
    )

    curves: list[dict[str, Any]] = []
    start_epoch = 0
    ckpt = ctx.reporter.get_checkpoint()
    if ckpt is not None:
        state = torch.load(Path(ckpt) / "state.pt", map_location=device, weights_only=False)
        accelerator.unwrap_model(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        curves = list(state["curves"])

    provenance = {
        "device": _device_name(device),
        "hostname": socket.gethostname(),
        "torch": torch.__version__,
        "pid": os.getpid(),
    }
    status: dict[str, Any] = {
        "status": "running",
        "trial_id": ctx.trial_id,
        "epochs_planned": epochs,
        "epochs_done": start_epoch,
        "seed": seed,
        "config": config,
        "provenance": provenance,
        "exit_flops": flops.tolist(),
        "reference_flops": ref_flops,
        "resumed_from_epoch": start_epoch if ckpt is not None else None,
    }
    write_json(trial_dir / "status.json", status)

    metrics: dict[str, Any] = {}
    steps = len(train_loader)
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        loss_sum = run_epoch(model, opt, sched, train_loader, loss_fn, accelerator, epoch)
        mean_loss = float(loss_sum.item()) / steps  # one device sync per epoch, not per step
        if not math.isfinite(mean_loss):
            raise TrialDiverged(f"training loss became {mean_loss} in epoch {epoch + 1}/{epochs}")
        seconds = time.perf_counter() - t0

        last = epoch == epochs - 1
        calib_cache = _exit_cache(model, calib_loader, accelerator.autocast, flops, ref_flops)
        cs = calib_cache.stats()
        hv = quick_hypervolume(cs, seed=seed)
        curve = {
            "epoch": epoch + 1,
            "train_loss": mean_loss,
            "lr": float(opt.param_groups[0]["lr"]),
            "calib_fine_acc_per_exit": cs.fine_acc_per_exit().tolist(),
            "calib_coarse_acc_per_exit": cs.coarse_acc_per_exit().tolist(),
            "hypervolume": hv,
            "epoch_seconds": seconds,
            "images_per_second": steps * batch_size / seconds,
        }
        curves.append(curve)
        write_json(trial_dir / "curves.json", curves)
        metrics = {
            "epoch": epoch + 1,
            "fidelity": (epoch + 1) / epochs,
            "train_loss": mean_loss,
            "hypervolume": hv,
            "hv_kind": "quick",
            "final_fine_acc": float(cs.fine_acc_per_exit()[-1]),
            "final_coarse_acc": float(cs.coarse_acc_per_exit()[-1]),
            "final_exit_flops_norm": float(flops[-1] / ref_flops),
            "images_per_second": curve["images_per_second"],
        }
        if last:
            metrics.update(_finish(model, accelerator, ds, calib_cache, flops, ref_flops, config, ctx, seed, trial_dir, loader_kw))
        status.update(epochs_done=epoch + 1, status="complete" if last else "running", hypervolume=metrics["hypervolume"])
        write_json(trial_dir / "status.json", status)
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(
                {
                    "model": accelerator.unwrap_model(model).state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "epoch": epoch,
                    "curves": curves,
                },
                Path(tmp) / "state.pt",
            )
            ctx.reporter.report(metrics, tmp)
    return metrics


def _finish(model, accelerator, ds: Dataset, calib_cache: ExitCache, flops, ref_flops, config, ctx, seed, trial_dir, loader_kw) -> dict[str, Any]:
    """After the last epoch: cache test outputs, calibrate, save points and the final network."""
    test_loader = DeviceLoader(ds.test, batch_size=1024, train=False, **loader_kw)
    test_cache = _exit_cache(model, test_loader, accelerator.autocast, flops, ref_flops)
    calib_cache.save(trial_dir / "exit_cache_calibration.npz")
    test_cache.save(trial_dir / "exit_cache_test.npz")
    t0 = time.perf_counter()
    res, points, per_exit = operating_points(calib_cache, test_cache, ctx.calibration, seed)
    calib_seconds = time.perf_counter() - t0
    write_json(
        trial_dir / "points.json",
        {"points": points, "per_exit_accuracy": per_exit, "hypervolume": res.hypervolume,
         "front_size": res.front_size, "settings_evaluated": res.n_evaluated, "calibration_seconds": calib_seconds},
    )
    net = accelerator.unwrap_model(model)
    from search.atomic import atomic_write

    payload = {
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "in_channels": ds.channels,
        "image_size": ds.image_size,
        "n_fine": ds.n_fine,
        "n_coarse": ds.n_coarse,
        "mean": ds.mean,
        "std": ds.std,
        "exit_flops": np.asarray(flops).tolist(),
        "fine_names": list(ds.hierarchy.fine_names),
        "coarse_names": list(ds.hierarchy.coarse_names),
        "coarse_of": np.asarray(ds.hierarchy.coarse_of).tolist(),
    }
    atomic_write(trial_dir / "model.pt", lambda tmp: torch.save(payload, tmp))
    return {
        "hypervolume": res.hypervolume,
        "hv_kind": "calibrated",
        "front_size": res.front_size,
        "calibration_seconds": calib_seconds,
        "settings_evaluated": res.n_evaluated,
        "final_fine_acc": per_exit["calibration"]["fine"][-1],
        "test_final_fine_acc": per_exit["test"]["fine"][-1],
    }

