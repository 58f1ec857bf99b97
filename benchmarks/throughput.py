"""Training images/s of the platform's step vs a bare loop and vs a PIL/DataLoader pipeline.

Three loops train the same early-exit network (CIFAR ResNet-18 with exits after every stage by
default) on the same 32x32 uint8 images, in the same precision, in one process:

- platform: trainables.engine.loop.run_epoch: DeviceLoader (uint8 on the device, random crop + flip
  there), Accelerate (bf16 autocast on GPU), channels_last on GPU, the granular multi-exit loss;
- bare: the images on the device, a batch indexed, normalised, forward, the same loss, backward,
  step: no augmentation, no Accelerate. The ceiling the platform is measured against;
- dataloader: torchvision-style PIL pipeline (RandomCrop(pad 4), RandomHorizontalFlip, ToTensor,
  Normalize) through torch.utils.data.DataLoader with worker processes, then the same step.

    python -m benchmarks.throughput [--steps 50] [--width 64] [--batch 512] [--workers 8]

Prints one JSON line per loop and a line with the ratios platform/bare and
platform/dataloader. On CPU (no GPU at hand) the defaults shrink to a small network so it
finishes in a minute or two; those figures back CPU claims only.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def make_model(width: int, device, channels_last: bool):
    from trainables.models import build_early_exit_net

    cfg = {"backbone": "resnet", "resnet.width": width, "resnet.blocks": 2, "resnet.n_stages": 4,
           "exit_after": [0, 1, 2, 3], "head": "linear"}
    torch.manual_seed(0)
    model = build_early_exit_net(cfg, 3, {"fine": 100, "coarse": 20}).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def measure(run, warmup: int, steps: int, batch: int, device) -> float:
    run(warmup)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    run(steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    cuda = torch.cuda.is_available()
    ap.add_argument("--steps", type=int, default=50 if cuda else 6)
    ap.add_argument("--warmup", type=int, default=10 if cuda else 2)
    ap.add_argument("--width", type=int, default=64 if cuda else 16)
    ap.add_argument("--batch", type=int, default=512 if cuda else 128)
    ap.add_argument("--workers", type=int, default=8 if cuda else 2)
    ap.add_argument("--images", type=int, default=20_000 if cuda else 4_000)
    args = ap.parse_args()

    from accelerate import Accelerator

    from trainables.data import Split
    from trainables.engine.device_data import DeviceLoader
    from trainables.engine.loop import _reset_accelerate, run_epoch
    from trainables.losses import GranularLoss

    device = torch.device("cuda" if cuda else "cpu")
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (args.images, 3, 32, 32), dtype=np.uint8))
    fine = torch.from_numpy(rng.integers(0, 100, args.images)).long()
    coarse_of = np.arange(100) // 5
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    loss_fn = GranularLoss(exit_weights=[1.0, 0.8, 0.6, 0.4], lambda_fine=1.5)
    out = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "width": args.width, "batch": args.batch,
           "steps": args.steps, "precision": "bf16 autocast" if cuda else "fp32"}

    # platform
    _reset_accelerate()
    acc = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no")
    model = make_model(args.width, device, cuda)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    model, opt = acc.prepare(model, opt)
    loader = DeviceLoader(Split(images, fine), coarse_of, args.batch, device, mean, std, train=True, channels_last=cuda)
    epoch = [0]

    def platform(n):
        done = 0
        while done < n:
            k = min(n - done, len(loader))
            run_epoch(model, opt, None, loader, loss_fn, acc, epoch[0], max_steps=k)
            epoch[0] += 1
            done += k

    plat = measure(platform, args.warmup, args.steps, args.batch, device)

    # bare
    model = make_model(args.width, device, cuda)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x_dev, y_dev = images.to(device), fine.to(device)
    yc_dev = torch.as_tensor(coarse_of, device=device)[y_dev]
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def bare(n):
        model.train()
        for i in range(n):
            idx = torch.randint(0, len(x_dev), (args.batch,), device=device)
            x = (x_dev[idx].float() - m) / s
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                outs = model(x)
            loss = loss_fn(outs, y_dev[idx], yc_dev[idx], 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    bare_ips = measure(bare, args.warmup, args.steps, args.batch, device)

    # PIL + DataLoader
    from PIL import Image
    from torchvision import transforms

    tfm = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                              transforms.ToTensor(), transforms.Normalize(mean, std)])
    hwc = images.permute(0, 2, 3, 1).numpy()

    class PilDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(hwc)

        def __getitem__(self, i):
            return tfm(Image.fromarray(hwc[i])), int(fine[i])

    dl = torch.utils.data.DataLoader(PilDataset(), batch_size=args.batch, shuffle=True, drop_last=True,
                                     num_workers=args.workers, pin_memory=cuda, persistent_workers=args.workers > 0)
    model = make_model(args.width, device, cuda)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    it = [iter(dl)]

    def dataloader(n):
        model.train()
        for _ in range(n):
            try:
                x, y = next(it[0])
            except StopIteration:
                it[0] = iter(dl)
                x, y = next(it[0])
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                outs = model(x)
            loss = loss_fn(outs, y, yc_dev[y] if cuda else torch.as_tensor(coarse_of)[y], 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    dl_ips = measure(dataloader, args.warmup, args.steps, args.batch, device)
    for name, v in (("platform", plat), ("bare", bare_ips), ("dataloader", dl_ips)):
        print(json.dumps({**out, "loop": name, "images_per_second": round(v, 1)}))
    print(json.dumps({**out, "platform_over_bare": round(plat / bare_ips, 3), "platform_over_dataloader": round(plat / dl_ips, 3)}))


if __name__ == "__main__":
    main()
