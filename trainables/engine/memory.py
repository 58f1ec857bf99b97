"""One trial's peak device memory, from one training step of the space's largest network(s).

`training_peak(family, data, batch_size)` builds each of `family.reference_configs` (the space's
largest networks) and trains it as trainables/engine/loop.py does: Adam (two state tensors per
parameter, the most of the searched optimisers), the family's own loss, and on a GPU bf16
autocast with channels_last. The data a trial holds on the device (uint8 train, calibration and
test splits, trainables/engine/device_data.py) is added as `dataset_bytes` (`dataset_bytes(ds)`).

* On CUDA the peak is measured: `torch.cuda.max_memory_allocated` over two training steps (the
  second runs with the first step's gradients and optimiser state alive, as every later step
  does) and one no-grad forward at the evaluation batch size (1024, as the loop caches exit
  outputs), after `reset_peak_memory_stats`. What the caching allocator reserves beyond that and
  the CUDA context are not in it: search/packing.py adds them.
* On a CPU (no CUDA, e.g. in tests) it is an estimate, fp32 like the CPU loop: the bytes of the
  parameters, their gradients and the optimiser's state after one step, plus the activations the
  forward pass and the loss save for backward (counted once per storage with
  `torch.autograd.graph.saved_tensors_hooks`), plus the input batch. Temporaries freed during
  the step are not counted, so it is a lower bound of a step's real peak.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainables.engine.family import DataInfo, Family, TrialInputs
from trainables.engine.loop import train_step
from trainables.engine.optim import make_optimizer
from trainables.engine.precision import Precision

__all__ = ["EVAL_BATCH", "PeakMemory", "dataset_bytes", "training_peak"]

EVAL_BATCH = 1024  # trainables/engine/loop.py caches exit outputs in batches of this size


@dataclass(frozen=True)
class PeakMemory:
    peak_bytes: int  # the largest network's peak plus dataset_bytes
    measured: bool  # True: measured on CUDA; False: the CPU estimate
    batch_size: int
    dataset_bytes: int
    per_config: list[dict[str, Any]] = field(default_factory=list)  # each network's parts, in bytes


def dataset_bytes(ds: Any) -> int:
    """What a trial keeps on its device: every split's uint8 images and its fine and coarse labels
    (DeviceLoader: int64 classes, or uint8 multi-hot vectors for a multi-label dataset)."""
    total = 0
    for split in (ds.train, ds.calib, ds.test):
        labels = split.fine.nelement() * split.fine.element_size()
        total += split.images.nelement() * split.images.element_size() + (2 * labels if split.multi_label else 2 * 8 * len(split))
    return int(total)


def _batch(data: DataInfo, batch_size: int, device: torch.device, channels_last: bool, gen: torch.Generator,
           size: int | None = None):
    size = size or data.image_size  # the network's input side (Family.input_size)
    x = torch.randn(batch_size, data.channels, size, size, generator=gen).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    coarse_of = torch.as_tensor(np.asarray(data.coarse_of), dtype=torch.int64)
    if data.multi_label:  # multi-hot targets, as a multi-label dataset's batches hold
        from trainables.data import multi_hot_coarse

        yf = (torch.rand(batch_size, data.n_fine, generator=gen) < 0.3).to(torch.uint8)
        return x, yf.to(device), multi_hot_coarse(yf, coarse_of, data.n_coarse).to(device)
    yf = torch.randint(0, data.n_fine, (batch_size,), generator=gen)
    yc = coarse_of[yf]
    return x, yf.to(device), yc.to(device)


def _tensor_bytes(tensors) -> int:
    seen: set[int] = set()
    total = 0
    for t in tensors:
        s = t.untyped_storage()
        if s.data_ptr() not in seen:
            seen.add(s.data_ptr())
            total += s.nbytes()
    return total


def _config(cfg: Mapping[str, Any], batch_size: int) -> dict[str, Any]:
    return {**cfg, "optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0, "batch_size": batch_size}


def _cpu_estimate(family: Family, cfg: Mapping[str, Any], data: DataInfo, batch_size: int) -> dict[str, int]:
    device = torch.device("cpu")
    model = family.build_model(cfg, data)
    params = list(model.parameters())
    opt = make_optimizer(_config(cfg, batch_size), params)
    loss_fn = family.make_loss(TrialInputs(cfg, 0, data), model.n_exits)
    x, yf, yc = _batch(data, batch_size, device, False, torch.Generator().manual_seed(0), family.input_size(cfg, data))
    counted = {t.untyped_storage().data_ptr() for t in (*params, x)}  # parameters and the input count as such
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in counted:
            saved.append(t)
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = model(x)
        loss = loss_fn(outs, yf, yc, 0.0)
    activations = _tensor_bytes(saved)
    saved.clear()
    del outs, loss
    # the step itself is the engine's (as the CPU loop runs it: fp32); its saved tensors are counted above
    train_step(model, opt, x, yf, yc, loss_fn, Precision.of({"precision": "fp32"}, device), 0.0)
    state = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    parts = {"params": _tensor_bytes(params), "grads": _tensor_bytes(p.grad for p in params if p.grad is not None),
             "optimizer": _tensor_bytes(state), "activations": activations,
             "batch": x.nbytes + yf.nbytes + yc.nbytes}
    return {**parts, "peak": sum(parts.values())}


def _cuda_peak(family: Family, cfg: Mapping[str, Any], data: DataInfo, batch_size: int,
               device: torch.device) -> dict[str, int]:
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    model = family.build_model(cfg, data).to(device).to(memory_format=torch.channels_last)
    opt = make_optimizer(_config(cfg, batch_size), model.parameters())
    loss_fn = family.make_loss(TrialInputs(cfg, 0, data), model.n_exits)
    precision = Precision.of(cfg, device)  # the trial's own precision ("auto": bf16 on a GPU)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(2):  # the second step with the first one's gradients and optimiser state alive
        x, yf, yc = _batch(data, batch_size, device, True, gen, family.input_size(cfg, data))
        train_step(model, opt, x, yf, yc, loss_fn, precision, 0.0)  # the engine's own step
        del x
    model.eval()
    with torch.no_grad():
        x, _, _ = _batch(data, EVAL_BATCH, device, True, gen, family.input_size(cfg, data))
        with precision.autocast():
            model(x)
    torch.cuda.synchronize(device)
    peak = int(torch.cuda.max_memory_allocated(device) - base)
    del model, opt, x
    torch.cuda.empty_cache()
    return {"peak": peak}


def training_peak(family: Family, data: DataInfo, batch_size: int, *, configs: Sequence[Mapping[str, Any]] | None = None,
                  device: str | torch.device = "auto", dataset_bytes: int = 0) -> PeakMemory:
    """The peak of one trial of the largest of `configs` (default: the family's reference
    configs, the space's largest networks) at `batch_size`, plus `dataset_bytes`. See the module
    docstring for what is measured (CUDA) and what is estimated (CPU)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    configs = list(family.reference_configs if configs is None else configs)
    if not configs:
        raise ValueError("no network to measure: the family has no reference_configs")
    per_config = []
    for cfg in configs:
        if device.type == "cuda":
            parts = _cuda_peak(family, cfg, data, int(batch_size), device)
        else:
            parts = _cpu_estimate(family, cfg, data, int(batch_size))
        per_config.append(parts)
    peak = max(p["peak"] for p in per_config) + int(dataset_bytes)
    return PeakMemory(int(peak), device.type == "cuda", int(batch_size), int(dataset_bytes), per_config)
