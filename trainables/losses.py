"""The granular early-exit loss, with per-term start epochs and linear ramps.

    L = sum_k w_exit[k] * ( lambda_fine(e)   * CE(fine_logits_k,   y_fine)
                          + lambda_coarse(e) * CE(coarse_logits_k, y_coarse) )

Exits with a single head (BranchyNet: flat labels) have no coarse term: the loss is then
BranchyNet's weighted sum of the exits' cross-entropies.

where e is the (fractional) epoch and each lambda follows a start/ramp schedule:

    lambda(e) = lambda_max * clip((e - start) / ramp, 0, 1)   (ramp > 0)
    lambda(e) = lambda_max * [e >= start]                     (ramp = 0)

This is the precedent of B-CNN's coarse-to-fine loss-weight schedule (../shared/RESEARCH.md):
starting the fine term late lets the coarse heads shape the features first. Gran-HBN's own
setting is w_exit = [1.0, 0.8, 0.6], lambda_fine = 1.5, lambda_coarse = 1, both from epoch 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["GranularLoss", "config_exit_weights", "exit_weights", "ramp"]


def exit_weights(first: float, last: float, n_exits: int) -> list[float]:
    """Per-exit loss weights running linearly from the first exit's to the last's
    (Gran-HBN: 1.0 -> 0.6; BranchyNet found weighting early branches more helps).
    A single exit is the last one: it gets `last`."""
    if n_exits < 1:
        raise ValueError("at least one exit")
    if n_exits == 1:
        return [float(last)]
    return [float(first + (last - first) * k / (n_exits - 1)) for k in range(n_exits)]


def config_exit_weights(config, n_exits: int) -> list[float]:
    """The per-exit weights a config names (`exit_weight_first`, `exit_weight_last`): the one place
    they are read, so a key missing from a config means the same in every family (1.0: equal weights)."""
    return exit_weights(float(config.get("exit_weight_first", 1.0)), float(config.get("exit_weight_last", 1.0)), n_exits)


def ramp(epoch: float, weight: float, start: float, ramp_epochs: float) -> float:
    """Weight of a loss term at (fractional) epoch `epoch`."""
    if epoch < start:
        return 0.0
    if ramp_epochs <= 0:
        return float(weight)
    return float(weight) * min(1.0, (epoch - start) / ramp_epochs)


@dataclass(frozen=True)
class GranularLoss:
    exit_weights: Sequence[float]
    lambda_fine: float = 1.0
    lambda_coarse: float = 1.0
    fine_start_epoch: float = 0.0
    fine_ramp_epochs: float = 0.0
    coarse_start_epoch: float = 0.0
    coarse_ramp_epochs: float = 0.0
    label_smoothing: float = 0.0

    def weights(self, epoch: float) -> tuple[float, float]:
        return (
            ramp(epoch, self.lambda_fine, self.fine_start_epoch, self.fine_ramp_epochs),
            ramp(epoch, self.lambda_coarse, self.coarse_start_epoch, self.coarse_ramp_epochs),
        )

    def __call__(
        self,
        outputs: Sequence[tuple[torch.Tensor, ...]],
        y_fine: torch.Tensor,
        y_coarse: torch.Tensor | None,
        epoch: float,
    ) -> torch.Tensor:
        """outputs: per exit, (fine_logits,) or (fine_logits, coarse_logits)."""
        if len(outputs) != len(self.exit_weights):
            raise ValueError(f"{len(outputs)} exits but {len(self.exit_weights)} exit weights")
        lf, lc = self.weights(epoch)
        # a zero-weighted graph keeps backward() valid while both terms are still ramped off
        total = 0.0 * sum(t.float().sum() for out in outputs for t in out)
        for w, out in zip(self.exit_weights, outputs):
            if lf:
                total = total + w * lf * F.cross_entropy(out[0].float(), y_fine, label_smoothing=self.label_smoothing)
            if lc and len(out) > 1:
                total = total + w * lc * F.cross_entropy(out[1].float(), y_coarse, label_smoothing=self.label_smoothing)
        return total
