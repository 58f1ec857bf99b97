"""Numeric precision of a trial's training and inference, from its config: fp32, bf16, or fp16
with a gradient scaler.

`precision` is a config key like any other, so a space can search it or fix it; "auto" (the
default) is bf16 autocast on a GPU and fp32 on a CPU, the engine's behaviour before the key
existed. bf16 and fp16 run the forward pass under `torch.autocast` on the trial's device (CUDA,
or CPU where torch supports it, which is how the tests exercise the GPU path); fp16 scales the
loss with `torch.amp.GradScaler` so small gradients do not flush to zero, and skips an optimiser
step whose gradients overflowed (the scaler then lowers its scale), as torch's AMP recipe does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["PRECISIONS", "Precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Precision:
    name: str  # "fp32" | "bf16" | "fp16" (resolved: never "auto")
    device_type: str  # "cuda" | "cpu"
    scaler: Any = None  # torch.amp.GradScaler for fp16

    @classmethod
    def of(cls, config: Mapping[str, Any], device: torch.device) -> Precision:
        name = str(config.get("precision", "auto"))
        if name not in PRECISIONS:
            raise ValueError(f"precision {name!r} is not one of {', '.join(PRECISIONS)}")
        if name == "auto":
            name = "bf16" if device.type == "cuda" else "fp32"
        scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None
        return cls(name, device.type, scaler)

    def autocast(self):
        """The context the forward pass runs in."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=_DTYPES[self.name])

    def backward(self, loss: torch.Tensor, backward=None) -> None:
        """loss.backward() (through `backward`, e.g. Accelerate's, when given), scaled for fp16."""
        scaled = self.scaler.scale(loss) if self.scaler is not None else loss
        (backward or torch.Tensor.backward)(scaled)

    def step(self, opt: torch.optim.Optimizer) -> bool:
        """The optimiser step; False when fp16 gradients overflowed and the step was skipped."""
        if self.scaler is None:
            opt.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(opt)
        self.scaler.update()
        return self.scaler.get_scale() >= scale

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {})}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if self.scaler is not None and state and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
