"""A generated, CIFAR-100-shaped dataset whose superclasses are easier than its fine classes.

Offline stand-in for CIFAR-100 in tests, smoke runs and demos: 32x32 RGB uint8, 100 fine classes
in 20 superclasses of 5 (fine class c belongs to superclass c // 5), made in-process from a seed
(no files, `root` is ignored). Sizes: "full" 20000 train / 4000 calib / 4000 test, "smoke"
4000 / 1000 / 1000, "tiny" 1000 / 500 / 500, all class-balanced. As with real data, calib is a
stratified slice of a generated training pool; test comes from a separate random stream.

What makes the hierarchy matter. Every image is

    background colour of the superclass
  + a large, soft blob of the superclass's colour at a random place
  + a low-frequency grating whose orientation belongs to the superclass   (coarse: strong, large)
  + inside the blob, a higher-frequency grating in the superclass's colour
    whose exact orientation and frequency belong to the fine class        (fine: weak, small)
  + per-image colour shift, orientation/frequency jitter and pixel noise.

Coarse evidence is strong and spread over the whole image, so a small CNN (or an early exit)
picks the superclass up within the first epochs; the fine pattern is faint and local, and sibling
fine classes differ only by small steps of orientation and frequency that the per-image jitter
blurs, so fine accuracy is lower, keeps improving with training, and has a ceiling below 100%.
Mistakes are therefore mostly between siblings, as with real hierarchies. Random phases and blob
positions stand in for translation, so memorising pixels does not work.

Measured with a 3-layer CNN (width 32, BatchNorm, Adam 2e-3, batch 64, joint coarse + fine
heads, CPU, seed 0), test accuracy: smoke, epochs 1/2/3/5/8: coarse 0.50/0.74/0.89/0.98/0.98,
fine 0.07/0.15/0.18/0.27/0.44; full, epochs 1/3/8: coarse 0.98/0.996/0.99, fine 0.26/0.76/0.80
(plateau about 0.8). Chance is 0.05 (coarse) and 0.01 (fine).

Determinism: everything comes from torch.Generators seeded from `seed` through numpy's
SeedSequence, with separate streams for the class prototypes, the training pool and the test set.
The prototypes depend only on `seed`, so every size with the same seed is the same task.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from trainables.data import Dataset, as_split, channel_stats, check_size, register_dataset, stratified_split
from trainables.hierarchy import Hierarchy

__all__ = ["FINE_PER_COARSE", "N_COARSE", "N_FINE", "SYNTHETIC_SIZES", "generate", "synthetic", "synthetic_hierarchy"]

N_COARSE = 20
FINE_PER_COARSE = 5
N_FINE = N_COARSE * FINE_PER_COARSE
IMAGE_SIZE = 32
#: (train, calib, test) per size.
SYNTHETIC_SIZES = {"full": (20000, 4000, 4000), "smoke": (4000, 1000, 1000), "tiny": (1000, 500, 500)}

# Signal strengths, in [0, 1] pixel units, chosen so that coarse is learnt clearly before fine by
# a small CNN (see the module docstring); the balance is what the dataset is for.
_BLOB_AMPLITUDE = 0.30
_BLOB_SIGMA = 7.0  # pixels
_COARSE_GRATING_AMPLITUDE = 0.12
_COARSE_CYCLES = (1.0, 2.0)  # cycles per image width
_COARSE_THETA_JITTER = 0.10  # radians, per image
_FINE_AMPLITUDE = (0.08, 0.18)  # per image, uniform: some images show their fine class faintly
_FINE_CYCLES = (4.5, 7.5)  # base frequency of a superclass's fine gratings
_FINE_THETA_STEP = 0.35  # radians between the orientations of sibling fine classes
_FINE_FREQ_RATIOS = (0.85, 0.93, 1.0, 1.08, 1.17)  # sibling frequencies relative to the base
_FINE_THETA_JITTER = 0.15  # radians, per image
_FINE_FREQ_JITTER = 0.06  # relative, per image
_COLOUR_JITTER = 0.14
_NOISE = 0.12
_CHUNK = 4096  # images rendered at once: bounds memory; fixed, so the random stream is too

_STREAM_PROTOTYPES, _STREAM_POOL, _STREAM_TEST = 0, 1, 2


def _generator(seed: int, stream: int) -> torch.Generator:
    # SeedSequence mixes (seed, stream) well, so nearby seeds and streams do not give correlated data.
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, stream]).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed((int(state[0]) << 31) ^ int(state[1]))
    return g


def _uniform(g: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def _prototypes(seed: int) -> dict[str, torch.Tensor]:
    """Per-class parameters: everything that defines the task (not the individual images)."""
    g = _generator(seed, _STREAM_PROTOTYPES)
    # Superclass grating orientations spread evenly over [0, pi), in shuffled order, so no two
    # superclasses share one; colours are random.
    slots = torch.randperm(N_COARSE, generator=g).float() + _uniform(g, (N_COARSE,), 0.2, 0.8)
    coarse_theta = slots * (math.pi / N_COARSE)
    # Sibling fine classes share their grating's colour and differ only by small steps in
    # orientation and frequency around a superclass base: like cat vs dog, they are confused with
    # each other far more than with classes of other superclasses.
    base_theta = _uniform(g, (N_COARSE,), 0.0, math.pi)
    base_freq = _uniform(g, (N_COARSE,), *_FINE_CYCLES) * (2 * math.pi / IMAGE_SIZE)
    def sibling_order() -> torch.Tensor:  # (N_COARSE, FINE_PER_COARSE), a permutation per superclass
        return torch.stack([torch.randperm(FINE_PER_COARSE, generator=g) for _ in range(N_COARSE)])

    step = sibling_order().float() - (FINE_PER_COARSE - 1) / 2
    ratio = torch.tensor(_FINE_FREQ_RATIOS)[sibling_order()]
    fine_dir = torch.randn((N_COARSE, 3), generator=g)
    fine_colour = fine_dir / fine_dir.norm(dim=1, keepdim=True) * math.sqrt(3.0)
    return {
        "background": _uniform(g, (N_COARSE, 3), 0.2, 0.6),
        "blob_colour": torch.sign(torch.randn((N_COARSE, 3), generator=g)) * _uniform(g, (N_COARSE, 3), 0.4, 1.0),
        "coarse_theta": coarse_theta,
        "coarse_freq": _uniform(g, (N_COARSE,), *_COARSE_CYCLES) * (2 * math.pi / IMAGE_SIZE),
        "coarse_colour": torch.sign(torch.randn((N_COARSE, 3), generator=g)),
        "fine_theta": (base_theta[:, None] + _FINE_THETA_STEP * step).reshape(N_FINE),
        "fine_freq": (base_freq[:, None] * ratio).reshape(N_FINE),
        "fine_colour": fine_colour.repeat_interleave(FINE_PER_COARSE, 0),
    }


def _render(fine: torch.Tensor, proto: dict[str, torch.Tensor], g: torch.Generator) -> torch.Tensor:
    """uint8 (n, 3, 32, 32) images of the given fine classes."""
    n = len(fine)
    coarse = fine // FINE_PER_COARSE
    axis = torch.arange(IMAGE_SIZE, dtype=torch.float32)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    xs, ys = xs.view(1, 1, IMAGE_SIZE, IMAGE_SIZE), ys.view(1, 1, IMAGE_SIZE, IMAGE_SIZE)

    def col(v: torch.Tensor) -> torch.Tensor:  # (n,) or (n, 3) -> broadcastable over (n, 3, H, W)
        return v.view(n, -1, 1, 1)

    def grating(freq: torch.Tensor, theta: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        return torch.cos(col(freq) * (xs * col(theta.cos()) + ys * col(theta.sin())) + col(phase))

    # Per-image nuisances, drawn in a fixed order so the stream is reproducible. The jitters make
    # neighbouring classes overlap, so accuracy has a ceiling below 100% even with plenty of data.
    centre = _uniform(g, (n, 2), 8.0, IMAGE_SIZE - 8.0)
    coarse_phase = _uniform(g, (n,), 0.0, 2 * math.pi)
    coarse_theta = proto["coarse_theta"][coarse] + _COARSE_THETA_JITTER * torch.randn((n,), generator=g)
    fine_phase = _uniform(g, (n,), 0.0, 2 * math.pi)
    fine_theta = proto["fine_theta"][fine] + _FINE_THETA_JITTER * torch.randn((n,), generator=g)
    fine_freq = proto["fine_freq"][fine] * (1.0 + _FINE_FREQ_JITTER * torch.randn((n,), generator=g))
    fine_amplitude = _uniform(g, (n, 1), *_FINE_AMPLITUDE)
    shift = _uniform(g, (n, 3), -_COLOUR_JITTER, _COLOUR_JITTER)
    noise = torch.randn((n, 3, IMAGE_SIZE, IMAGE_SIZE), generator=g).mul_(_NOISE)

    blob = torch.exp(-((xs - col(centre[:, 0])) ** 2 + (ys - col(centre[:, 1])) ** 2) / (2 * _BLOB_SIGMA**2))
    coarse_wave = grating(proto["coarse_freq"][coarse], coarse_theta, coarse_phase)
    fine_wave = grating(fine_freq, fine_theta, fine_phase)

    # Accumulate in place into the noise tensor: (n, 3, H, W) temporaries dominate the cost.
    img = noise.add_(col(proto["background"][coarse] + shift))
    img.addcmul_(col(_BLOB_AMPLITUDE * proto["blob_colour"][coarse]), blob)
    img.addcmul_(col(_COARSE_GRATING_AMPLITUDE * proto["coarse_colour"][coarse]), coarse_wave)
    img.addcmul_(col(fine_amplitude * proto["fine_colour"][fine]), fine_wave.mul_(blob))
    return (img.clamp_(0.0, 1.0) * 255.0).round_().to(torch.uint8)


def generate(n_per_class: int, seed: int, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n_per_class` images of every fine class, shuffled: (uint8 (N, 3, 32, 32), int64 (N,))."""
    proto = _prototypes(seed)
    g = _generator(seed, stream)
    labels = torch.arange(N_FINE).repeat_interleave(n_per_class)
    labels = labels[torch.randperm(len(labels), generator=g)].contiguous()
    images = torch.empty((len(labels), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    for start in range(0, len(labels), _CHUNK):
        images[start:start + _CHUNK] = _render(labels[start:start + _CHUNK], proto, g)
    return images, labels


def synthetic_hierarchy() -> Hierarchy:
    """Fine class c -> superclass c // 5; names "s07_f3" (superclass 7, sibling 3) and "s07"."""
    fine_to_coarse = [c // FINE_PER_COARSE for c in range(N_FINE)]
    fine_names = [f"s{c // FINE_PER_COARSE:02d}_f{c % FINE_PER_COARSE}" for c in range(N_FINE)]
    coarse_names = [f"s{k:02d}" for k in range(N_COARSE)]
    return Hierarchy.from_fine_to_coarse(fine_to_coarse, fine_names, coarse_names)


@register_dataset
def synthetic(
    root: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    download: bool = False,
    size: str = "full",
    verify: bool = True,
) -> Dataset:
    """Generated 100 -> 20 class data (see module docstring).

    `root`, `download` and `verify` are accepted for a uniform builder signature and ignored.
    """
    check_size(size)
    n_train, n_calib, n_test = SYNTHETIC_SIZES[size]
    pool_images, pool_labels = generate((n_train + n_calib) // N_FINE, seed, _STREAM_POOL)
    test_images, test_labels = generate(n_test // N_FINE, seed, _STREAM_TEST)
    keep, held = stratified_split(pool_labels.numpy(), n_calib / (n_train + n_calib), seed)
    pool = as_split(pool_images, pool_labels)
    train, calib = pool.subset(keep), pool.subset(held)
    mean, std = channel_stats(train.images)
    return Dataset(
        name="synthetic", train=train, calib=calib, test=as_split(test_images, test_labels),
        hierarchy=synthetic_hierarchy(), tree=None, mean=mean, std=std,
        source=f"generated in-process (trainables.data.synthetic), seed {seed}, size {size!r}",
    )
