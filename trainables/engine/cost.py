"""Cost of an early-exit network: FLOPs and measured latency to each exit, and their expectation.

FLOPs convention (stated in every report): what `torch.utils.flop_counter.FlopCounterMode`
counts for one image at batch size 1 in eval mode, i.e. 2 FLOPs per multiply-accumulate of the
matmuls and convolutions that actually run (MACs = FLOPs / 2; elementwise ops, pooling and
normalisation are not counted). The cost of reaching exit k is cumulative: every backbone
stage up to exit k plus every head of every exit evaluated on the way (exits 1..k), since a
sample that leaves at k has had each earlier exit's heads computed to decide. Only the heads a
family builds are counted (fine and coarse for Gran-HBN, one for BranchyNet).

Reference: the CIFAR ResNet-18 forward is 1.111 GFLOP by this counter (../shared/RESEARCH.md).

Latency: each segment (the stages since the previous exit, then that exit as dynamic inference
runs it: its heads, the entropies, the decision and carrying on the samples that continue) is
timed on
the trial's device, at batch 1 and at a larger batch, as the median of repeated timings after
warm-up. The time to answer at exit k is the sum of the segments up to k. At batch 1 that is the
latency of an image leaving at k; in a batch, samples leave at their exit (as
trainables/dynamic.py does), so segment k runs only for the share of the batch that reached it
and the per-image time of a segment is its batched time divided by the batch size.

Expected cost per image of a policy = sum_k (fraction exiting at k) x cost_to_exit[k], for
FLOPs and both latencies alike.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from trainables.models.early_exit import EarlyExitNet

__all__ = ["LatencyProfile", "count_flops", "exit_flops", "expected_flops", "measure_latency", "plain_cost", "segment_flops"]


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


def segment_flops(model: EarlyExitNet, in_channels: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per exit: FLOPs per image of the stages since the previous exit, and of that exit's heads."""
    device = next(model.parameters()).device
    h = torch.zeros(1, in_channels, image_size, image_size, device=device)
    stages_f, heads_f = [], []
    for stages, heads in model.segments():
        f_stage, h = count_flops(stages, h)
        f_heads, _ = count_flops(heads, h)
        stages_f.append(f_stage)
        heads_f.append(f_heads)
    return np.asarray(stages_f, dtype=np.float64), np.asarray(heads_f, dtype=np.float64)


def exit_flops(model: EarlyExitNet, in_channels: int, image_size: int) -> np.ndarray:
    """Cumulative FLOPs per image up to each exit, heads of every exit on the way included."""
    stages_f, heads_f = segment_flops(model, in_channels, image_size)
    return np.cumsum(stages_f + heads_f)


def plain_cost(stage: np.ndarray, head: np.ndarray) -> float:
    """The same network with no early exit: every stage and the last exit's heads only."""
    return float(np.sum(stage) + head[-1])


def expected_flops(exit_fraction: np.ndarray, flops_to_exit: np.ndarray) -> np.ndarray:
    """sum_k fraction[..., k] * flops[k]; broadcasts over leading dimensions of exit_fraction."""
    return np.asarray(exit_fraction, dtype=np.float64) @ np.asarray(flops_to_exit, dtype=np.float64)


class LatencyProfile(NamedTuple):
    """Measured time per image of each segment's stages and exit, in milliseconds."""

    stage_ms: np.ndarray  # (K,) batch 1: the stages since the previous exit
    head_ms: np.ndarray  # (K,) batch 1: this exit's heads and its decision, as dynamic inference runs them
    stage_ms_batched: np.ndarray  # (K,) per image at `batch_size` (time / batch size)
    head_ms_batched: np.ndarray  # (K,)
    plain_head_ms: float  # the last exit's heads alone: the network without early exits ends there
    plain_head_ms_batched: float
    batch_size: int
    repeats: int
    device: str

    @property
    def exit_ms(self) -> np.ndarray:
        """(K,) latency of an image answered at exit k (every earlier segment and decision included)."""
        return np.cumsum(self.stage_ms + self.head_ms)

    @property
    def exit_ms_batched(self) -> np.ndarray:
        return np.cumsum(self.stage_ms_batched + self.head_ms_batched)

    def fastest(self, other: LatencyProfile) -> LatencyProfile:
        """Elementwise minimum of two measurements of the same network: other work on the machine
        only ever slows a timing down, so the faster of two rounds taken apart in time is the
        better estimate of the network's own cost."""
        fields = ("stage_ms", "head_ms", "stage_ms_batched", "head_ms_batched", "plain_head_ms", "plain_head_ms_batched")
        return self._replace(**{f: np.minimum(getattr(self, f), getattr(other, f)) for f in fields},
                             repeats=self.repeats + other.repeats)

    @property
    def plain_ms(self) -> float:
        return float(np.sum(self.stage_ms) + self.plain_head_ms)

    @property
    def plain_ms_batched(self) -> float:
        return float(np.sum(self.stage_ms_batched) + self.plain_head_ms_batched)


def _median_ms(fn, device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


@torch.no_grad()
def measure_latency(model: EarlyExitNet, in_channels: int, image_size: int, *, batch_size: int = 128,
                    warmup: int = 3, repeats: int = 10, autocast=None) -> LatencyProfile:
    """Time every segment of `model` on its own device (median of `repeats` after `warmup`).

    An exit is timed as dynamic inference runs it (`trainables.dynamic.answer_at_exit`): heads,
    entropies, the decision, and carrying the samples that go on (all of them, the worst case)."""
    import contextlib

    from trainables.dynamic import Answers, answer_at_exit

    device = next(model.parameters()).device
    autocast = autocast or contextlib.nullcontext
    was_training = model.training
    model.eval()
    segments = model.segments()
    never = np.full(len(model.levels), -1.0)  # no early answer: every sample carries on
    try:
        times: dict[int, tuple[list[float], list[float], float]] = {}
        for batch in dict.fromkeys((1, batch_size)):  # once when batch_size is 1
            stage_t: list[float] = []
            head_t: list[float] = []
            h = torch.zeros(batch, in_channels, image_size, image_size, device=device)
            if device.type == "cuda":
                h = h.contiguous(memory_format=torch.channels_last)
            active = torch.arange(batch, device=device)
            out = Answers.empty(batch, device)
            for k, (stages, heads) in enumerate(segments):
                def run_stages(stages=stages, h=h):
                    with autocast():
                        return stages(h)
                stage_t.append(_median_ms(run_stages, device, warmup, repeats) / batch)
                h = run_stages()

                def run_exit(heads=heads, h=h, k=k):
                    with autocast():
                        return answer_at_exit(heads, h, never, k == len(segments) - 1, k, active, out)
                head_t.append(_median_ms(run_exit, device, warmup, repeats) / batch)

            def run_plain_head(heads=segments[-1][1], h=h):
                with autocast():
                    return heads(h)
            times[batch] = (stage_t, head_t, _median_ms(run_plain_head, device, warmup, repeats) / batch)
    finally:
        model.train(was_training)
    (s1, h1, p1), (sb, hb, pb) = times[1], times[batch_size]
    return LatencyProfile(np.asarray(s1), np.asarray(h1), np.asarray(sb), np.asarray(hb), p1, pb, int(batch_size),
                          int(repeats), str(device))
