"""Optimisers and learning-rate schedules from a searched config (shared by every family).

`optimizer`: sgd (Nesterov, momentum 0.9), adam, adamw, adadelta; `lr`, `weight_decay`. `lr_schedule`,
stepped per batch over the whole run: cosine, cosine_restarts (`lr_cycles`), multistep (x0.1 at
50% and 75%), onecycle (peak `lr`), cyclic (triangular between lr/10 and `lr`, `lr_cycles`
cycles); or once an epoch on the calibration loss: plateau (x`plateau_factor`, default 0.1, after
`plateau_patience`, default 2, epochs without improvement, as in the transfer-learning recipe of
../shared/RESEARCH.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["make_optimizer", "make_scheduler", "per_epoch_schedule"]

SCHEDULES = ("cosine", "cosine_restarts", "multistep", "onecycle", "cyclic", "plateau")


def per_epoch_schedule(sched) -> bool:
    """Stepped once an epoch with the calibration loss (plateau), not after every batch."""
    return isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)


def make_optimizer(config: Mapping[str, Any], params) -> torch.optim.Optimizer:
    name = config.get("optimizer", "sgd")
    lr = float(config.get("lr", 0.05))
    wd = float(config.get("weight_decay", 5e-4))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(config.get("momentum", 0.9)), nesterov=True, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}; known: sgd, adam, adamw, adadelta")


def make_scheduler(config: Mapping[str, Any], opt: torch.optim.Optimizer, epochs: int, steps_per_epoch: int):
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
    if name == "cyclic":
        cycles = max(1, int(config.get("lr_cycles", 2)))
        lr = float(config.get("lr", 0.05))
        # momentum cycling needs a momentum parameter: SGD has one, Adam's betas are left alone
        return sched.CyclicLR(opt, base_lr=lr / 10, max_lr=lr, step_size_up=max(1, total // (2 * cycles)),
                              cycle_momentum=config.get("optimizer", "sgd") == "sgd")
    if name == "plateau":
        return sched.ReduceLROnPlateau(opt, mode="min", factor=float(config.get("plateau_factor", 0.1)),
                                       patience=int(config.get("plateau_patience", 2)))
    raise ValueError(f"unknown lr_schedule {name!r}; known: {', '.join(SCHEDULES)}")
