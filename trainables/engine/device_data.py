"""Training data on the device as uint8, augmented there, batch by batch.

Loading and augmenting uint8 on the device is faster than a per-sample PIL pipeline
(benchmarks/throughput.py measures it): a split is copied to the device once, then each batch is
gathered, augmented there as the family asks (trainables/engine/augment.py; by default randomly
cropped, pad by size/8, and flipped), resized to the network's input side when that differs from
the stored one, normalised and (on a GPU) laid out channels_last. Datasets are read-only, so a
reused worker keeps the last one between trials, and every worker on a node maps the same decoded
copy (trainables/data/node_cache.py; EXITSEARCH_NODE_CACHE=off decodes in every process instead).

A split too large for the device is streamed instead: its images stay in host memory (the node
cache's memory map) and each batch is gathered there and copied over, then augmented on the device
exactly as a resident batch (the same order, draws and arithmetic, so the same batches). A split is
resident when its images take at most a quarter of the device's free memory (always on a CPU);
EXITSEARCH_DEVICE_DATA=resident|stream forces either.

A data-parallel trial's workers (`shard=(rank, world)`) each hold the split and draw the same
global batch order and augmentation; each trains on its contiguous slice of every global batch,
so the global batch (and its draws) is what one worker would have used.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from trainables.data import Dataset, Split, get_dataset, multi_hot_coarse, node_cache
from trainables.engine.augment import Augment

__all__ = ["RESIDENT_SHARE", "DeviceLoader", "fits_on_device", "load_data"]

RESIDENT_SHARE = 0.25  # of the device's free memory a split's images may take and stay resident
DATA_ENV = "EXITSEARCH_DEVICE_DATA"  # "resident" | "stream" | "auto" (default)


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


def fits_on_device(images: torch.Tensor, device: torch.device) -> bool:
    """Whether a split's images stay resident on `device` (see the module docstring)."""
    mode = os.environ.get(DATA_ENV, "auto").strip().lower()
    if mode in ("resident", "stream"):
        return mode == "resident"
    if device.type != "cuda":
        return True  # host memory is where the split already is
    free, _ = torch.cuda.mem_get_info(device)
    return images.nelement() * images.element_size() <= RESIDENT_SHARE * free


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) grey of (B, 3, H, W) RGB (ITU-R 601, as torchvision's rgb_to_grayscale)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


class DeviceLoader:
    """Batches from a split on the device as uint8 (resident, or streamed batch by batch);
    augmentation and resizing done there, batched."""

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
        size: int | None = None,
        augment: Augment | None = None,
        resident: bool | None = None,
    ) -> None:
        self.resident = fits_on_device(split.images, device) if resident is None else bool(resident)
        self.images = split.images.to(device, non_blocking=True) if self.resident else split.images
        self.fine = split.fine.to(device)  # (N,) classes, or (N, C) multi-hot targets
        coarse_of = torch.as_tensor(coarse_of, device=device)
        self.coarse = (multi_hot_coarse(self.fine, coarse_of, int(coarse_of.max()) + 1) if split.multi_label
                       else coarse_of[self.fine])
        self.batch_size = int(batch_size)
        self.device = device
        self.train = train
        self.seed = seed
        self.channels_last = channels_last
        self.augment = augment or Augment()
        self.stored = int(self.images.shape[-1])
        self.size = int(size or self.stored)  # the network's input side
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

    def _draws(self, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """A global batch's augmentation draws. The default augmentation draws crop offsets (y, x)
        and flips, in that order, as the engine always did; what else is asked for draws after them."""
        a, dev = self.augment, self.device
        d: dict[str, torch.Tensor] = {}

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, device=dev, generator=gen)

        if a.crop == "pad":
            span = 2 * self.pad + 1
            d["oy"] = torch.randint(0, span, (n,), device=dev, generator=gen)
            d["ox"] = torch.randint(0, span, (n,), device=dev, generator=gen)
        if a.flip:
            d["flip"] = torch.rand(n, device=dev, generator=gen) < 0.5
        if a.crop == "resized":
            d["area"] = uniform(*a.scale)
            d["log_ratio"] = uniform(math.log(3 / 4), math.log(4 / 3))
            d["cx"], d["cy"] = uniform(-1.0, 1.0), uniform(-1.0, 1.0)
        if a.rotation:
            d["angle"] = uniform(-a.rotation, a.rotation)
        if a.jitter:
            d["brightness"], d["contrast"], d["saturation"] = (uniform(1 - a.jitter, 1 + a.jitter) for _ in range(3))
        if a.grey:
            d["grey"] = torch.rand(n, device=dev, generator=gen) < a.grey
        return d

    def _pad_crop(self, x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        p = self.pad
        xp = torch.nn.functional.pad(x, (p, p, p, p))
        rows = (oy[:, None] + torch.arange(H, device=x.device))[:, None, :, None].expand(B, C, H, W + 2 * p)
        xp = xp.gather(2, rows)
        cols = (ox[:, None] + torch.arange(W, device=x.device))[:, None, None, :].expand(B, C, H, W)
        return xp.gather(3, cols)

    def _affine(self, x: torch.Tensor, d: dict[str, torch.Tensor]) -> torch.Tensor:
        """A resized crop and/or a rotation, resampled (bilinear) to the input side in one pass."""
        B = len(x)
        w = h = torch.ones(B, device=x.device)
        cx = cy = torch.zeros(B, device=x.device)
        if "area" in d:  # half-extents of the box in normalised coordinates (the image spans -1..1)
            ratio = d["log_ratio"].exp()
            w, h = (d["area"] * ratio).sqrt().clamp(max=1.0), (d["area"] / ratio).sqrt().clamp(max=1.0)
            cx, cy = d["cx"] * (1 - w), d["cy"] * (1 - h)
        angle = d["angle"] * (math.pi / 180) if "angle" in d else torch.zeros(B, device=x.device)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([w * cos, -h * sin, cx], 1), torch.stack([w * sin, h * cos, cy], 1)], 1)
        grid = F.affine_grid(theta, [B, x.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.size and x.shape[-2] == self.size:
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)

    def _augment(self, x: torch.Tensor, d: dict[str, torch.Tensor]) -> torch.Tensor:
        if "oy" in d:
            x = self._pad_crop(x, d["oy"], d["ox"])
        if "flip" in d:
            x = torch.where(d["flip"][:, None, None, None], x.flip(3), x)
        x = self._affine(x, d) if ("area" in d or "angle" in d) else self._resize(x)
        rgb = x.shape[1] == 3
        if "brightness" in d:  # torchvision's ColorJitter order: brightness, contrast, saturation
            x = (x * d["brightness"][:, None, None, None]).clamp(0, 255)
            grey = _luma(x).mean((1, 2, 3), keepdim=True) if rgb else x.mean((1, 2, 3), keepdim=True)
            x = ((x - grey) * d["contrast"][:, None, None, None] + grey).clamp(0, 255)
            if rgb:
                g = _luma(x)
                x = ((x - g) * d["saturation"][:, None, None, None] + g).clamp(0, 255)
        if "grey" in d and rgb:
            x = torch.where(d["grey"][:, None, None, None], _luma(x).expand_as(x), x)
        return x

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        """uint8 images at `idx` on the device: indexed there (resident), or gathered in host memory
        and copied over (streamed)."""
        if self.resident:
            return self.images[idx]
        rows = self.images[idx.cpu()]
        if self.device.type == "cuda":
            rows = rows.pin_memory()
        return rows.to(self.device, non_blocking=True)

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
                    idx, draws = idx[lo:hi], {k: v[lo:hi] for k, v in draws.items()}
                x = self._augment(self._gather(idx).float(), draws)
            else:
                x = self._resize(self._gather(idx).float())
            x = (x - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.fine[idx], self.coarse[idx]
