"""Cost of an early-exit network: FLOPs to each exit, and the expected FLOPs of a policy.

Convention (stated in every report): FLOPs are what `torch.utils.flop_counter.FlopCounterMode`
counts for one image at batch size 1 in eval mode, i.e. 2 FLOPs per multiply-accumulate of the
matmuls and convolutions that actually run (MACs = FLOPs / 2; elementwise ops, pooling and
normalisation are not counted). The cost of reaching exit k is cumulative: every backbone
stage up to exit k plus the fine AND coarse heads of every exit evaluated on the way (exits
1..k), since a sample that leaves at k has had each earlier exit's heads computed to decide.

Reference: the CIFAR ResNet-18 forward is 1.111 GFLOP by this counter (../shared/RESEARCH.md).

Expected FLOPs per image of a policy = sum_k (fraction exiting at k) x exit_flops[k].
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from trainables.models.early_exit import EarlyExitNet

__all__ = ["count_flops", "exit_flops", "expected_flops"]


def count_flops(module: torch.nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """FLOPs of module(x) and its output, with the module in eval mode and no grad."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = module(x)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops()), out


def exit_flops(model: EarlyExitNet, in_channels: int, image_size: int) -> np.ndarray:
    """Cumulative FLOPs per image up to each exit, heads of every exit on the way included."""
    device = next(model.parameters()).device
    h = torch.zeros(1, in_channels, image_size, image_size, device=device)
    total = 0
    out = []
    for stages, heads in model.segments():
        f_stage, h = count_flops(stages, h)
        f_heads, _ = count_flops(heads, h)
        total += f_stage + f_heads
        out.append(total)
    return np.asarray(out, dtype=np.float64)


def expected_flops(exit_fraction: np.ndarray, flops_to_exit: np.ndarray) -> np.ndarray:
    """sum_k fraction[..., k] * flops[k]; broadcasts over leading dimensions of exit_fraction."""
    return np.asarray(exit_fraction, dtype=np.float64) @ np.asarray(flops_to_exit, dtype=np.float64)
