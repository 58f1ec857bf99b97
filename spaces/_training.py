"""Searched training settings every family shares: optimiser, learning rate, schedule, batch size.

Called from a space's define-by-run function (it only calls `trial.suggest_*`); the values are
read by trainables/engine/optim.py. Returns the learning rate as a derived constant `lr` (the searched
name depends on the optimiser, since SGD and Adam want ranges of different scale).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["suggest_training"]


def suggest_training(trial, batch_sizes: Sequence[int],
                     schedules: Sequence[str] = ("cosine", "cosine_restarts", "multistep", "onecycle"),
                     label_smoothing: bool = True) -> float:
    """`label_smoothing=False` when the space searches it as part of its loss."""
    optimizer = trial.suggest_categorical("optimizer", ["sgd", "adam", "adamw"])
    if optimizer == "sgd":
        lr = trial.suggest_float("lr_sgd", 0.01, 0.2, log=True)
    else:
        lr = trial.suggest_float("lr_adam", 1e-4, 3e-3, log=True)
    trial.suggest_float("weight_decay", 1e-5, 1e-3, log=True)
    schedule = trial.suggest_categorical("lr_schedule", list(schedules))
    if schedule in ("cosine_restarts", "cyclic"):
        trial.suggest_int("lr_cycles", 2, 3)
    if label_smoothing:
        trial.suggest_categorical("label_smoothing", [0.0, 0.1])
    trial.suggest_categorical("batch_size", list(batch_sizes))
    return lr
