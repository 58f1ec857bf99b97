"""Gran-HBN / AG-HBN: early-exit networks with a fine and a coarse head at every exit.

Per input, entropy decides whether to answer fine, answer coarse, or go deeper
(trainables/exits.py). The space searches the backbone (CIFAR ResNet, width and depth; or the
Gran-HBN paper's AlexNet-style network), where the exits sit, the head shape, the granular
loss (fine/coarse weights with start epochs and ramps, per-exit weights) and the optimiser and
LR schedule. Each trial is trained once and its thresholds calibrated afterwards; its signal to
the outer search is the hypervolume of its calibration front of (accuracy, specificity,
expected FLOPs / FLOPs of this space's largest network).

Paper defaults, for reference (../shared/RESEARCH.md): Adam, lr 1.5e-4, weight decay 5e-4,
batch 64, 120 epochs, branch weights [1.0, 0.8, 0.6], fine weight 1.5 (Gran-HBN) or 1.02
(AG-HBN); `paper_config()` returns that setting in this space's terms.
"""

from __future__ import annotations

import math
from typing import Any

from spaces import register_space
from spaces._base import Budget, Space
from trainables.exits import POINT_OBJECTIVES
from trainables.loop import train

BUDGETS = {
    # smoke: 2 CPU cores, a few minutes for the whole search (README quick start)
    "smoke": Budget(
        "smoke", epochs=4, data_size="smoke", trials=4,
        calibration={"n_trials": 128, "neighbours": 16, "population": 32, "levels": 32, "max_points": 48},
    ),
    "full": Budget(
        "full", epochs=30, data_size="full", trials=32,
        calibration={"n_trials": 512, "neighbours": 32, "population": 64, "levels": 64, "max_points": 128},
    ),
}

RESNET_WIDTHS = {"smoke": [8], "full": [16, 32, 64]}
RESNET_BLOCKS = {"smoke": (1, 1), "full": (1, 2)}
ALEXNET_WIDTHS = {"smoke": [0.125, 0.25], "full": [0.5, 1.0]}
HEAD_HIDDEN = {"smoke": [16, 32], "full": [128, 256]}
BATCH_SIZES = {"smoke": [64, 128], "full": [128, 256, 512]}


def define(trial, budget: Budget) -> dict[str, Any]:
    """Define-by-run: only suggest_* calls; returns the derived constants."""
    b = budget.name
    backbone = trial.suggest_categorical("backbone", ["resnet", "alexnet"])
    if backbone == "resnet":
        trial.suggest_categorical("resnet.width", RESNET_WIDTHS[b])
        trial.suggest_int("resnet.blocks", *RESNET_BLOCKS[b])
        n_stages = trial.suggest_int("resnet.n_stages", 3, 4)
    else:
        trial.suggest_categorical("alexnet.width", ALEXNET_WIDTHS[b])
        n_stages = 3
    # an exit after each earlier stage is optional; the last stage always has one
    exit_after = [s for s in range(n_stages - 1) if trial.suggest_categorical(f"exit_after_stage{s}", [True, False])]
    exit_after.append(n_stages - 1)

    head = trial.suggest_categorical("head", ["linear", "mlp", "conv"])
    if head != "linear":
        trial.suggest_categorical("head_hidden", HEAD_HIDDEN[b])

    epochs = trial.suggest_int("epochs", max(1, math.ceil(budget.epochs / 2)), budget.epochs)
    ramp_max = max(0, epochs // 3)
    trial.suggest_float("lambda_fine", 0.5, 2.0)
    trial.suggest_float("lambda_coarse", 0.25, 2.0)
    trial.suggest_int("fine_start_epoch", 0, ramp_max)
    trial.suggest_int("fine_ramp_epochs", 0, ramp_max)
    trial.suggest_int("coarse_start_epoch", 0, 0)  # coarse first, as in B-CNN's schedule
    trial.suggest_int("coarse_ramp_epochs", 0, ramp_max)
    trial.suggest_categorical("exit_grad_scale", [0.0, 0.25, 1.0])
    trial.suggest_float("exit_weight_first", 0.3, 1.0)
    trial.suggest_float("exit_weight_last", 0.3, 1.0)

    optimizer = trial.suggest_categorical("optimizer", ["sgd", "adam", "adamw"])
    if optimizer == "sgd":
        lr = trial.suggest_float("lr_sgd", 0.01, 0.2, log=True)
    else:
        lr = trial.suggest_float("lr_adam", 1e-4, 3e-3, log=True)
    trial.suggest_float("weight_decay", 1e-5, 1e-3, log=True)
    schedule = trial.suggest_categorical("lr_schedule", ["cosine", "cosine_restarts", "multistep", "onecycle"])
    if schedule == "cosine_restarts":
        trial.suggest_int("lr_cycles", 2, 3)
    trial.suggest_categorical("label_smoothing", [0.0, 0.1])
    trial.suggest_categorical("batch_size", BATCH_SIZES[b])
    return {"exit_after": exit_after, "lr": lr}


def largest_configs(budget: Budget) -> list[dict[str, Any]]:
    """The most expensive network of each backbone in this space: every exit, widest heads."""
    b = budget.name
    head = {"head": "conv", "head_hidden": max(HEAD_HIDDEN[b])}
    return [
        {"backbone": "resnet", "resnet.width": max(RESNET_WIDTHS[b]), "resnet.blocks": RESNET_BLOCKS[b][1],
         "resnet.n_stages": 4, "exit_after": [0, 1, 2, 3], **head},
        {"backbone": "alexnet", "alexnet.width": max(ALEXNET_WIDTHS[b]), "exit_after": [0, 1, 2], **head},
    ]


def paper_config(ag_hbn: bool = False) -> dict[str, Any]:
    """The Gran-HBN (or AG-HBN) paper's training setting, in this space's parameters."""
    return {
        "backbone": "alexnet", "alexnet.width": 1.0, "exit_after": [0, 1, 2], "head": "mlp", "head_hidden": 1024,
        "optimizer": "adam", "lr": 1.5e-4, "weight_decay": 5e-4, "batch_size": 64,
        "epochs": 100 if ag_hbn else 120, "lr_schedule": "cosine",
        "lambda_fine": 1.02 if ag_hbn else 1.5, "lambda_coarse": 1.0, "exit_weight_first": 1.0, "exit_weight_last": 0.6,
        "fine_start_epoch": 0, "fine_ramp_epochs": 0, "coarse_start_epoch": 0, "coarse_ramp_epochs": 0,
        "label_smoothing": 0.0,
    }


@register_space
def gran_hbn() -> Space:
    return Space(
        name="gran_hbn",
        description="Gran-HBN / AG-HBN early-exit network, fine+coarse heads per exit, entropy exits",
        define=define,
        trainable=train,
        objectives={"hypervolume": "max"},
        point_objectives=dict(POINT_OBJECTIVES),
        largest_configs=largest_configs,
        default_data="cifar100",
        budgets=BUDGETS,
    )
