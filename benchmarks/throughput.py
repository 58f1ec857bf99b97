"""Training images/s of the platform's step vs a bare loop and vs a PIL/DataLoader pipeline.

Three loops train the same early-exit network (CIFAR ResNet-18 with exits after every stage by
default) on the same 32x32 uint8 images, in the same precision, in one process:

- platform: trainables.engine.loop.run_epoch as a trial runs it: DeviceLoader (uint8 on the device,
  random crop + flip there), Accelerate, the engine's precision (bf16 autocast on GPU), channels_last
  on GPU, the granular multi-exit loss;
- bare: the images on the device, a batch indexed, normalised, forward, the same loss, backward,
  step: no augmentation, no Accelerate. The ceiling the platform is measured against;
- dataloader: torchvision-style PIL pipeline (RandomCrop(pad 4), RandomHorizontalFlip, ToTensor,
  Normalize) through torch.utils.data.DataLoader with worker processes, then the same step.

    python -m benchmarks.throughput [--steps 50] [--width 64] [--batch 512] [--workers 8]

Prints one JSON line per loop and a line with the ratios platform/bare and
platform/dataloader. `measure_throughput` is the same measurement for other benchmarks
(benchmarks/suite.py). On CPU (no GPU at hand) the defaults shrink to a small network so it
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


def defaults(cuda: bool) -> dict:
    """The sizes the benchmark runs at by default: a ResNet-18-sized network on a GPU, a small one on a CPU."""
    if cuda:
        return {"steps": 50, "warmup": 10, "width": 64, "batch": 512, "workers": 8, "images": 20_000}
    return {"steps": 6, "warmup": 2, "width": 16, "batch": 128, "workers": 2, "images": 4_000}


def measure_throughput(steps: int, warmup: int, width: int, batch: int, workers: int, images: int) -> dict:
    """Training images/s of the three loops (platform, bare, dataloader) on this machine's device,
    each timed over `steps` steps after `warmup` steps; returns the setting and the three rates."""
    cuda = torch.cuda.is_available()
    from accelerate import Accelerator

    from trainables.data import Split
    from trainables.engine.device_data import DeviceLoader
    from trainables.engine.loop import _reset_accelerate, run_epoch
    from trainables.engine.precision import Precision
    from trainables.losses import GranularLoss

    device = torch.device("cuda" if cuda else "cpu")
    rng = np.random.default_rng(0)
    n_images = images
    images = torch.from_numpy(rng.integers(0, 256, (n_images, 3, 32, 32), dtype=np.uint8))
    fine = torch.from_numpy(rng.integers(0, 100, n_images)).long()
    coarse_of = np.arange(100) // 5
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    loss_fn = GranularLoss(exit_weights=[1.0, 0.8, 0.6, 0.4], lambda_fine=1.5)
    out = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "width": width, "batch": batch,
           "steps": steps, "warmup": warmup, "workers": workers, "images": n_images,
           "precision": "bf16 autocast" if cuda else "fp32"}

    # platform: as a trial runs it (trainables/engine/loop.py run_trial): Accelerate places and wraps,
    # the engine's Precision autocasts
    _reset_accelerate()
    acc = Accelerator(cpu=not cuda, mixed_precision="no")
    precision = Precision.of({}, device)
    model = make_model(width, device, cuda)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    model, opt = acc.prepare(model, opt)
    loader = DeviceLoader(Split(images, fine), coarse_of, batch, device, mean, std, train=True, channels_last=cuda)
    epoch = [0]

    def platform(n):
        done = 0
        while done < n:
            k = min(n - done, len(loader))
            run_epoch(model, opt, None, loader, loss_fn, acc, epoch[0], max_steps=k, precision=precision)
            epoch[0] += 1
            done += k

    plat = measure(platform, warmup, steps, batch, device)

    # bare
    model = make_model(width, device, cuda)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x_dev, y_dev = images.to(device), fine.to(device)
    yc_dev = torch.as_tensor(coarse_of, device=device)[y_dev]
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def bare(n):
        model.train()
        for i in range(n):
            idx = torch.randint(0, len(x_dev), (batch,), device=device)
            x = (x_dev[idx].float() - m) / s
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                outs = model(x)
            loss = loss_fn(outs, y_dev[idx], yc_dev[idx], 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    bare_ips = measure(bare, warmup, steps, batch, device)

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

    dl = torch.utils.data.DataLoader(PilDataset(), batch_size=batch, shuffle=True, drop_last=True,
                                     num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0)
    model = make_model(width, device, cuda)
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

    dl_ips = measure(dataloader, warmup, steps, batch, device)
    return {"setting": out, "images_per_second": {"platform": plat, "bare": bare_ips, "dataloader": dl_ips}}


def main() -> None:
    cuda = torch.cuda.is_available()
    d = defaults(cuda)
    ap = argparse.ArgumentParser()
    for name in ("steps", "warmup", "width", "batch", "workers", "images"):
        ap.add_argument(f"--{name}", type=int, default=d[name])
    args = ap.parse_args()
    res = measure_throughput(args.steps, args.warmup, args.width, args.batch, args.workers, args.images)
    out, ips = res["setting"], res["images_per_second"]
    for name, v in ips.items():
        print(json.dumps({**out, "loop": name, "images_per_second": round(v, 1)}))
    print(json.dumps({**out, "platform_over_bare": round(ips["platform"] / ips["bare"], 3),
                      "platform_over_dataloader": round(ips["platform"] / ips["dataloader"], 3)}))


if __name__ == "__main__":
    main()
