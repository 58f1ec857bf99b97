"""Training data resident on the device as uint8, augmented there, batch by batch.

Loading and augmenting uint8 on the device is faster than a per-sample PIL pipeline
(benchmarks/throughput.py measures it): a split is copied to the device once, then each batch is
gathered, randomly cropped (pad by size/8) and flipped there, normalised and (on a GPU) laid out
channels_last. Datasets are read-only, so a reused worker keeps the last one between trials, and
every worker on a node maps the same decoded copy (trainables/data/node_cache.py; EXITSEARCH_NODE_CACHE=off
decodes in every process instead).

A data-parallel trial's workers (`shard=(rank, world)`) each hold the split and draw the same
global batch order and augmentation; each trains on its contiguous slice of every global batch,
so the global batch (and its draws) is what one worker would have used.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from trainables.data import Dataset, Split, get_dataset, multi_hot_coarse, node_cache

__all__ = ["DeviceLoader", "load_data"]


_DATA_CACHE: dict[tuple, Dataset] = {}


def load_data(name: str, root: str | None, *, size: str, download: bool, seed: int) -> Dataset:
    """The dataset, kept in memory for the next trial of a reused worker.

    A worker's first trial maps the node's decoded copy (written by whichever process on the node
    asked first, see trainables/data/node_cache.py) rather than reading and decoding the files itself.
    """
    key = (name, root, size, download, seed, node_cache.cache_dir())
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = node_cache.load(
            name, root, size=size, seed=seed, download=download,
            build=lambda: get_dataset(name, root, seed=seed, download=download, size=size),
        )
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
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.images = split.images.to(device, non_blocking=True)
        self.fine = split.fine.to(device)  # (N,) classes, or (N, C) multi-hot targets
        coarse_of = torch.as_tensor(coarse_of, device=device)
        self.coarse = (multi_hot_coarse(self.fine, coarse_of, int(coarse_of.max()) + 1) if split.multi_label
                       else coarse_of[self.fine])
        self.batch_size = int(batch_size)
        self.device = device
        self.train = train
        self.seed = seed
        self.channels_last = channels_last
        c = self.images.shape[1]
        self.mean = torch.tensor(mean, device=device, dtype=torch.float32).view(1, c, 1, 1) * 255
        self.std = torch.tensor(std, device=device, dtype=torch.float32).view(1, c, 1, 1) * 255
        self.pad = max(1, self.images.shape[-1] // 8)
        self.rank, self.world = int(shard[0]), int(shard[1])
        if not 0 <= self.rank < self.world:
            raise ValueError(f"shard {shard}: want (rank, world) with 0 <= rank < world")

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.train else math.ceil(n / self.batch_size)

    def _draws(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A global batch's augmentation draws: crop offsets (y, x) and flips."""
        span = 2 * self.pad + 1
        oy = torch.randint(0, span, (n,), device=self.device, generator=gen)
        ox = torch.randint(0, span, (n,), device=self.device, generator=gen)
        flip = torch.rand(n, device=self.device, generator=gen) < 0.5
        return oy, ox, flip

    def _augment(self, x: torch.Tensor, draws: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, C, H, W = x.shape
        p = self.pad
        oy, ox, flip = draws
        xp = torch.nn.functional.pad(x, (p, p, p, p))
        rows = (oy[:, None] + torch.arange(H, device=x.device))[:, None, :, None].expand(B, C, H, W + 2 * p)
        xp = xp.gather(2, rows)
        cols = (ox[:, None] + torch.arange(W, device=x.device))[:, None, None, :].expand(B, C, H, W)
        x = xp.gather(3, cols)
        return torch.where(flip[:, None, None, None], x.flip(3), x)

    def _slice(self, n: int) -> tuple[int, int]:
        """This worker's part of a global batch of n: contiguous, sizes differing by at most one."""
        base, extra = divmod(n, self.world)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (self.rank < extra)

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
            if self.train:
                # the global batch's order and draws are the same on every worker; each takes its slice
                draws = self._draws(len(idx), gen)
                if self.world > 1:
                    lo, hi = self._slice(len(idx))
                    idx, draws = idx[lo:hi], tuple(d[lo:hi] for d in draws)
                x = self._augment(self.images[idx].float(), draws)
            else:
                x = self.images[idx].float()
            x = (x - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.fine[idx], self.coarse[idx]
