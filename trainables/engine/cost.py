"""Cost of an early-exit network: FLOPs and measured latency to each exit, and their expectation.

FLOPs convention (stated in every report): what `torch.utils.flop_counter.FlopCounterMode`
counts for one image at batch size 1 in eval mode, i.e. 2 FLOPs per multiply-accumulate of the
matmuls and convolutions that actually run (MACs = FLOPs / 2; elementwise ops, pooling and
normalisation are not counted). The cost of reaching exit k is cumulative: every backbone
stage up to exit k plus every head of every exit evaluated on the way (exits 1..k), since a
sample that leaves at k has had each earlier exit's heads computed to decide. Only the heads a
family builds are counted (fine and coarse for Gran-HBN, one for BranchyNet).

Reference: the CIFAR ResNet-18 forward is 1.111 GFLOP by this counter (../shared/RESEARCH.md).

Latency is the time of what dynamic inference runs, end to end, in sequence: the latency of exit
k is the time of `DynamicClassifier.predict` (trainables/dynamic.py) on an image that answers at
k: the input's preparation, every stage up to exit k, every exit's heads and decision on the way,
and the answer's return to the host. It is timed with the predictor itself, its thresholds set so
that every image leaves at k (nothing earlier answers, exit k always does), at batch 1, on a
sub-batch of `sub_batch(batch_size)` images and on a batch of `batch_size` images that all leave
at k (per image: the call's time / its images); the network without early exits (every stage,
then the last exit's heads only) is timed the same way. (Timing each piece on its own and adding
the pieces up, as this module did before, came out 20-60% short of the same pieces run in
sequence on 2 CPU cores: issue 16.)

Every timing is repeated in interleaved rounds after warm-up: the calls of one batch size at a
time (all batch-1 rounds, then all sub-batch rounds, then all batch rounds, each block after an
untimed call of its own), each round timing every exit and the plain network once in a rotating
order, so a busy spell of the machine touches them alike. No batch-1 call is timed right after a
batch, whose traffic leaves the caches cold: timed between batches, as version 2 did, the batch-1
calls read 2-8% slower than timed one after another as a user runs single images (issue 16). The
figure is the lower quartile over rounds (`robust_ms`), and the rounds' spread is kept. Other work
on the machine only ever slows a call down, so a busy spell is an upper outlier: the lower quartile
ignores it as long as three rounds in four are clear of it (the median needs one in two), yet it
is not the single luckiest call the minimum would be. On a quiet machine the two agree. On CUDA a
timing is the elapsed time between two events around the call, after a synchronisation (the
predictor returns its answer to the host, so the call ends when the device is done).

A point's batch-1 latency is the expectation below over its exit fractions: the mean time of its
images exactly (an image's time depends only on its exit). Its batched latency follows from the
three sizes' timings as trainables/engine/batch_latency.py says (in a batch the images split: each
segment runs once on those that reach it, at a fixed cost per call plus a cost per image);
benchmarks/dynamic_latency.py checks both predictions against the predictor timed on a run's test
images.

Expected cost per image of a policy = sum_k (fraction exiting at k) x cost_to_exit[k], for
FLOPs and batch-1 latency alike.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from trainables.contract import Convention
from trainables.data_info import DataInfo
from trainables.exits import answer_at
from trainables.models.early_exit import EarlyExitNet

__all__ = ["LATENCY", "ROBUST_QUANTILE", "LatencyCalls", "LatencyProfile", "Timer", "count_flops", "exit_flops", "expected_flops",
           "interleaved_rounds", "latency_calls", "measure_latency", "plain_cost", "robust_ms", "segment_flops", "sub_batch"]


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


#: How latency is measured, a versioned convention a family declares with the columns computed with
#: it (trainables/contract.py `Convention`): runs made under version 1 (those that state no version)
#: or version 2 are not comparable with runs made under version 3. Version 2 timed the batch-1 calls
#: between batches and predicted a point's batched latency as the fraction-weighted mean of
#: whole-batch timings (each segment's fixed cost per call shared out by the fraction reaching it).
LATENCY = Convention(
    name="latency",
    version=3,
    definition="the trial's predictor (DynamicClassifier.predict) timed end to end, in sequence, with every image "
               "answering at exit k, for each k, and without early exits; at batch 1, on a sub-batch (batch / 8) and "
               "per image of a batch; interleaved rounds after warm-up, one batch size at a time, the lower quartile "
               "over rounds; CUDA events on a GPU; a point's batch-1 latency = sum over exits of (fraction leaving "
               "there) x (time to that exit); batched: the expected time of a batch whose images split, each "
               "segment timed on the images that reach it (trainables/engine/batch_latency.py), per image",
    unversioned="version 1: each segment (stages, then an exit's heads and decision) timed alone, median of repeats, "
                "and the times added up; 13% to 77% below the time of the predictor at batch 1 on 2 CPU cores "
                "(issue 16); no network without early exits among the points. Recalibration cannot bring such a run to "
                "version 2 (its caches hold version-1 timings and no plain network): re-run it",
)


class LatencyProfile(NamedTuple):
    """Measured time per image of the predictor answering at each exit, and of the plain network.

    `rounds_ms[r, b, k]`: round r, per image of a call on `sizes[b]` images (batch 1 first, the
    batch last), answering at exit k (k < K) or the network without early exits (k = K), in ms."""

    rounds_ms: np.ndarray  # (R, len(sizes), K + 1)
    sizes: tuple[int, ...]
    device: str
    threads: int

    def _figure(self, b: int) -> np.ndarray:
        return robust_ms(self.rounds_ms[:, b, :])

    @property
    def batch_size(self) -> int:
        return int(self.sizes[-1])

    def at(self, size: int) -> tuple[np.ndarray, float]:
        """(K,) time per image of a call on `size` images all answering at exit k, and the plain network's."""
        fig = self._figure(list(self.sizes).index(size))
        return fig[:-1], float(fig[-1])

    @property
    def exit_ms(self) -> np.ndarray:
        """(K,) batch-1 latency of an image answered at exit k (every earlier exit's decision included)."""
        return self._figure(0)[:-1]

    @property
    def exit_ms_batched(self) -> np.ndarray:
        """(K,) time per image of a batch whose images all answer at exit k."""
        return self._figure(-1)[:-1]

    @property
    def plain_ms(self) -> float:
        """Batch-1 latency of the network without early exits."""
        return float(self._figure(0)[-1])

    @property
    def plain_ms_batched(self) -> float:
        return float(self._figure(-1)[-1])

    @property
    def spread(self) -> float:
        """The largest relative interquartile range over rounds of any timing: how much rounds disagree."""
        q1, q3 = np.percentile(self.rounds_ms, [25, 75], axis=0)
        med = np.median(self.rounds_ms, axis=0)
        return float(np.max((q3 - q1) / np.maximum(med, 1e-12)))

    def pooled(self, other: LatencyProfile) -> LatencyProfile:
        """Both measurements' rounds together (e.g. one before training and one after, apart in time)."""
        return self._replace(rounds_ms=np.concatenate([self.rounds_ms, other.rounds_ms]))

    def describe(self) -> dict[str, object]:
        """How the figures were measured (stored in the trial's status.json)."""
        return {"rounds": int(len(self.rounds_ms)), "batch_size": self.batch_size, "batch_sizes": list(self.sizes),
                "device": self.device,
                "threads": self.threads, "spread": round(self.spread, 4),
                "statistic": f"{ROBUST_QUANTILE}th percentile over interleaved rounds"}


ROBUST_QUANTILE = 25  # the percentile over rounds a timing is reported at (see the module's docstring)
SETTLE_S = 0.25  # seconds of a batch size's own untimed calls before its rounds are timed (interleaved_rounds)


def robust_ms(rounds_ms: np.ndarray, axis: int = 0) -> np.ndarray:
    """The reported figure of repeated timings (rounds along `axis`): their lower quartile."""
    return np.percentile(np.asarray(rounds_ms, dtype=np.float64), ROBUST_QUANTILE, axis=axis)


_COSTS = ("flops", "latency_ms", "latency_ms_batched")  # what a stored predictor carries per exit


class Timer:
    """Milliseconds of one call, end to end: CUDA events around it after a synchronisation on a GPU,
    the wall clock on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        if self.cuda:
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def __call__(self, fn, *args) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.start.record()
            fn(*args)
            self.end.record()
            self.end.synchronize()
            return float(self.start.elapsed_time(self.end))
        t0 = time.perf_counter()
        fn(*args)
        return (time.perf_counter() - t0) * 1e3


def interleaved_rounds(calls: Sequence[Callable[[], object]], timer: Timer, rounds: int, warmup: int,
                       groups: Sequence[Sequence[int]] | None = None, settle_s: float = 0.0) -> np.ndarray:
    """(rounds, len(calls)) milliseconds: `warmup` untimed calls of each, then `rounds` rounds that
    time every call once, each round starting one call further on (so no call always runs first).

    `groups` (lists of call indices, together every call once) are timed one after the other, each
    its `rounds` rounds in its own rotating order after one untimed call of its first member: a call
    at batch 1 is then never timed right after a batch of 128 images, whose traffic leaves the
    caches cold (on 2 CPU cores that made a ~0.7 ms exit read ~40% slow, and even with an untimed
    call between them 2-8% slow; issue 16). With `settle_s`, each group first runs untimed passes
    over its own calls for that many seconds: at batch 1 a group's rounds last only tens of
    milliseconds, too short to leave the previous group's working set behind. Default: one group."""
    for _ in range(max(1, warmup)):
        for fn in calls:
            fn()
    groups = [list(range(len(calls)))] if groups is None else [list(g) for g in groups if len(g)]
    if sorted(i for g in groups for i in g) != list(range(len(calls))):
        raise ValueError("groups must hold every call exactly once")
    out = np.zeros((max(1, rounds), len(calls)))
    for g in groups:
        if len(groups) > 1:
            calls[g[0]]()  # untimed: the group's calls start from its own working set
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < settle_s:
                for j in g:
                    calls[j]()
        n = len(g)
        for r in range(len(out)):
            for i in range(n):
                j = g[(r + i) % n]
                out[r, j] = timer(calls[j])
    return out


class LatencyCalls(NamedTuple):
    """What `measure_latency` times: the predictor answering at each exit, then the network without
    early exits, at batch 1, on a sub-batch and on a batch (the sizes there are images for)."""

    calls: list[Callable[[], object]]  # len(sizes) x (K + 1), batch 1 first
    sizes: list[int]  # images per call: [1, sub-batch, batch], fewer when fewer images are given
    n_exits: int
    device: torch.device

    @property
    def groups(self) -> list[list[int]]:
        """The calls' indices by batch size (batch 1, then the batch): timed as groups (`interleaved_rounds`)."""
        n = self.n_exits + 1
        return [list(range(b * n, (b + 1) * n)) for b in range(len(self.sizes))]

    def profile(self, ms: np.ndarray) -> LatencyProfile:
        """The profile of timings `ms` (rounds, len(calls)) of these calls."""
        K = self.n_exits
        ms = np.asarray(ms, dtype=np.float64).reshape(len(ms), len(self.sizes), K + 1)
        ms = ms / np.asarray(self.sizes, dtype=np.float64)[None, :, None]
        threads = int(torch.get_num_threads()) if self.device.type == "cpu" else 0
        return LatencyProfile(ms, tuple(int(s) for s in self.sizes), str(self.device), threads)


def sub_batch(batch_size: int) -> int:
    """The middle size timed besides 1 and the batch (trainables/engine/batch_latency.py reads a
    segment's time on the images that reach it off the three)."""
    return max(1, int(batch_size) // 8)


def latency_calls(model: EarlyExitNet, data: DataInfo, images: torch.Tensor, *, batch_size: int = 128, autocast=None,
                  channels_last: bool = False) -> LatencyCalls:
    """The calls that time `model`'s predictor (in eval mode: the caller restores training mode) on
    the first image, the first `sub_batch(batch_size)` and the first `batch_size` of `images` (uint8,
    as users pass them)."""
    from trainables.dynamic import DynamicClassifier

    device = next(model.parameters()).device
    names = {level: list(data.names(level)) for level in model.levels}
    L, K = len(model.levels), model.n_exits

    def predictor(k: int | None) -> DynamicClassifier:
        t = answer_at(L, K, K - 1 if k is None else k)  # every image answers at k (the plain network: at the last)
        return DynamicClassifier(model, t, data.mean, data.std, names, device, exit_costs=dict.fromkeys(_COSTS, np.zeros(K)),
                                 without_exits=k is None, autocast=autocast, channels_last=channels_last)

    predictors = [predictor(k) for k in range(K)] + [predictor(None)]
    n_batch = len(images[: max(1, batch_size)])
    sizes = sorted(set((1, sub_batch(n_batch), n_batch)))  # each size once (a batch of one image is batch 1)
    calls = [functools.partial(p.predict, images[:n]) for n in sizes for p in predictors]
    return LatencyCalls(calls, sizes, K, device)


@torch.no_grad()
def measure_latency(model: EarlyExitNet, data: DataInfo, images: torch.Tensor, *, batch_size: int = 128,
                    warmup: int = 3, repeats: int = 10, settle_s: float | None = None, autocast=None,
                    channels_last: bool = False) -> LatencyProfile:
    """Time the predictor of `model` answering at each exit, and without early exits, on its device:
    `repeats` interleaved rounds after `warmup` calls, at batch 1, on a sub-batch and on a batch of
    `batch_size` of `images` (uint8, as users pass them; fewer when fewer are given); each batch size
    after `settle_s` seconds of its own untimed calls (default SETTLE_S)."""
    was_training = model.training
    try:
        timed = latency_calls(model, data, images, batch_size=batch_size, autocast=autocast, channels_last=channels_last)
        settle = SETTLE_S if settle_s is None else float(settle_s)
        return timed.profile(interleaved_rounds(timed.calls, Timer(timed.device), repeats, warmup, timed.groups, settle))
    finally:
        model.train(was_training)
