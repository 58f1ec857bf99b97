"""Data on the device: the default augmentation is the engine's from before (same draws, same
arithmetic), the streaming path gives the same batches as the resident one, the research's
augmentations (resized crop, rotation, colour jitter, grey) and the resize to the input side, and
the optimiser and plateau schedule the transfer recipe needs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.data import Split
from trainables.engine.augment import Augment
from trainables.engine.device_data import DeviceLoader, fits_on_device
from trainables.engine.optim import make_optimizer, make_scheduler

CPU = torch.device("cpu")


def split(n=23, side=8, multi=False, seed=0) -> Split:
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)
    y = (torch.rand(n, 4, generator=g) < 0.4).to(torch.uint8) if multi else torch.arange(n) % 4
    return Split(imgs, y)


def kw(**extra):
    return dict(coarse_of=np.array([0, 0, 1, 1]), batch_size=7, device=CPU, mean=(0.5, 0.4, 0.3),
                std=(0.2, 0.25, 0.3), **extra)


def old_engine_batches(s: Split, seed: int, epoch: int, batch_size: int, mean, std):
    """The engine's training batches before augmentation became a choice (its code, verbatim)."""
    images, fine = s.images, s.fine
    pad = max(1, images.shape[-1] // 8)
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255
    sd = torch.tensor(std).view(1, 3, 1, 1) * 255
    gen = torch.Generator(device=CPU)
    gen.manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(images), generator=gen)
    out = []
    for b in range(len(images) // batch_size):
        idx = order[b * batch_size:(b + 1) * batch_size]
        span = 2 * pad + 1
        oy = torch.randint(0, span, (len(idx),), generator=gen)
        ox = torch.randint(0, span, (len(idx),), generator=gen)
        flip = torch.rand(len(idx), generator=gen) < 0.5
        x = images[idx].float()
        B, C, H, W = x.shape
        xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        rows = (oy[:, None] + torch.arange(H))[:, None, :, None].expand(B, C, H, W + 2 * pad)
        xp = xp.gather(2, rows)
        cols = (ox[:, None] + torch.arange(W))[:, None, None, :].expand(B, C, H, W)
        x = torch.where(flip[:, None, None, None], xp.gather(3, cols).flip(3), xp.gather(3, cols))
        out.append(((x - m) / sd, fine[idx]))
    return out


def test_the_default_augmentation_is_the_engines_from_before():
    s = split()
    new = list(DeviceLoader(s, train=True, seed=5, **kw()).epoch(3))
    old = old_engine_batches(s, 5, 3, 7, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    assert len(new) == len(old) == 3
    for (x, yf, _), (xo, yo) in zip(new, old):
        assert torch.equal(x, xo) and torch.equal(yf, yo)


@pytest.mark.parametrize("augment", [Augment(), Augment(crop="resized", rotation=15, jitter=0.3, grey=0.2)])
@pytest.mark.parametrize("multi", [False, True])
def test_streaming_gives_the_same_batches_as_resident(augment, multi):
    s = split(multi=multi)
    for train in (True, False):
        for world in (1, 2):
            for rank in range(world):
                args = kw(train=train, seed=2, size=12, shard=(rank, world))
                if train:
                    args["augment"] = augment
                resident = DeviceLoader(s, resident=True, **args)
                streamed = DeviceLoader(s, resident=False, **args)
                assert resident.resident and not streamed.resident
                assert streamed.images.data_ptr() == s.images.data_ptr()  # left where it is, gathered per batch
                for (a, ya, ca), (b, yb, cb) in zip(resident.epoch(1), streamed.epoch(1)):
                    assert torch.equal(a, b) and torch.equal(ya, yb) and torch.equal(ca, cb)


def test_residency_rule(monkeypatch):
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    assert fits_on_device(images, CPU)
    monkeypatch.setenv("EXITSEARCH_DEVICE_DATA", "stream")
    assert not fits_on_device(images, CPU) and not DeviceLoader(split(), train=False, **kw()).resident
    monkeypatch.setenv("EXITSEARCH_DEVICE_DATA", "resident")
    assert fits_on_device(images, CPU)


def test_resize_to_the_input_side():
    s = split(side=8)
    x, _, _ = next(iter(DeviceLoader(s, train=False, size=16, **kw()).epoch()))
    assert x.shape == (7, 3, 16, 16)
    x, _, _ = next(iter(DeviceLoader(s, train=True, size=4, **kw()).epoch()))
    assert x.shape == (7, 3, 4, 4)
    flat = torch.full((1, 3, 8, 8), 100, dtype=torch.uint8)  # a flat image stays flat through the resize
    up, _, _ = next(iter(DeviceLoader(Split(flat, torch.zeros(1, dtype=torch.int64)), train=False, size=20,
                                      **{**kw(), "batch_size": 1}).epoch()))
    m, sd = torch.tensor((0.5, 0.4, 0.3)).view(1, 3, 1, 1) * 255, torch.tensor((0.2, 0.25, 0.3)).view(1, 3, 1, 1) * 255
    assert up.shape == (1, 3, 20, 20) and torch.allclose(up * sd + m, torch.full_like(up, 100.0), atol=1e-3)


def test_affine_is_exact_for_the_identity_and_a_half_turn():
    loader = DeviceLoader(split(side=8), train=True, augment=Augment(crop="none", flip=False), **kw())
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    ident = loader._affine(x, {"area": torch.ones(2), "log_ratio": torch.zeros(2), "cx": torch.zeros(2), "cy": torch.zeros(2)})
    assert torch.allclose(ident, x, atol=1e-3)
    half = loader._affine(x, {"angle": torch.full((2,), 180.0)})
    assert torch.allclose(half, x.flip(2).flip(3), atol=1e-3)
    # no crop, no flip, no rotation at the stored side: the training batch is the image itself, normalised
    s = split()
    (x0, y0, _), = list(DeviceLoader(s, train=True, augment=Augment(crop="none", flip=False), **{**kw(), "batch_size": 23})
                        .epoch(0))
    plain = {int(i): x for x, i in zip(next(iter(DeviceLoader(s, train=False, **{**kw(), "batch_size": 23}).epoch()))[0],
                                       range(23))}
    assert any(torch.equal(x0[0], plain[i]) for i in plain)


def test_colour_jitter_and_grey():
    s = split(side=8)
    m, sd = torch.tensor((0.5, 0.4, 0.3)).view(1, 3, 1, 1) * 255, torch.tensor((0.2, 0.25, 0.3)).view(1, 3, 1, 1) * 255
    for x, _, _ in DeviceLoader(s, train=True, augment=Augment(crop="none", flip=False, grey=1.0), **kw()).epoch(0):
        raw = x * sd + m
        assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-3) and torch.allclose(raw[:, 1], raw[:, 2], atol=1e-3)
    jittered = [x * sd + m for x, _, _ in DeviceLoader(s, train=True, augment=Augment(jitter=0.5), **kw()).epoch(0)]
    plain = [x * sd + m for x, _, _ in DeviceLoader(s, train=True, **kw()).epoch(0)]
    assert all(t.min() >= -1e-3 and t.max() <= 255 + 1e-3 for t in jittered)
    assert not torch.allclose(jittered[0], plain[0])
    a = [x for x, _, _ in DeviceLoader(s, train=True, seed=4, augment=Augment(crop="resized", rotation=30, jitter=0.2,
                                                                              grey=0.3), **kw()).epoch(2)]
    b = [x for x, _, _ in DeviceLoader(s, train=True, seed=4, augment=Augment(crop="resized", rotation=30, jitter=0.2,
                                                                              grey=0.3), **kw()).epoch(2)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))  # seeded: a resumed epoch replays its draws


def test_augment_refuses_bad_settings():
    with pytest.raises(ValueError, match="crop"):
        Augment(crop="centre")
    with pytest.raises(ValueError, match="scale"):
        Augment(scale=(0.8, 0.2))
    with pytest.raises(ValueError, match="out of range"):
        Augment(grey=2.0)


def test_adadelta_and_a_plateau_schedule_on_a_scripted_loss_sequence():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = make_optimizer({"optimizer": "adadelta", "lr": 1.0, "weight_decay": 0.0}, [w])
    assert isinstance(opt, torch.optim.Adadelta)
    sched = make_scheduler({"lr_schedule": "plateau", "plateau_factor": 0.5, "plateau_patience": 1}, opt, 10, 5)
    lrs = []
    for loss in [1.0, 0.9, 0.95, 0.97, 0.8, 0.85, 0.86, 0.5]:
        sched.step(loss)
        lrs.append(opt.param_groups[0]["lr"])
    # patience 1: the second epoch in a row without a new best lowers the rate by the factor
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    default = make_scheduler({"lr_schedule": "plateau"}, make_optimizer({"lr": 0.1}, [w]), 10, 5)
    assert default.factor == 0.1 and default.patience == 2
