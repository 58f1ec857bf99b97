"""Dynamic inference: a trained early-exit network with its chosen thresholds.

`DynamicClassifier.predict(images)` runs each image only as far as its exit: after every exit
the samples that answered leave the batch, so deeper stages see only the rest. The answer is
the fine class or the superclass, by the policy of trainables/exits.py (the same decisions as
`apply_policy` on cached outputs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.models import build_early_exit_net
from trainables.models.early_exit import EarlyExitNet

__all__ = ["DynamicClassifier", "Prediction"]


@dataclass
class Prediction:
    label: np.ndarray  # (N,) int64: fine class index if fine[i], else superclass index
    fine: np.ndarray  # (N,) bool: answered at the fine level
    exit: np.ndarray  # (N,) int64: exit index that answered
    name: list[str]  # class or superclass name of each answer


def _norm_entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return (-(logp.exp() * logp).sum(-1) / math.log(logits.shape[-1])).clamp(0, 1)


class DynamicClassifier:
    def __init__(
        self,
        model: EarlyExitNet,
        thresholds_fine: list[float],
        thresholds_coarse: list[float],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        fine_names: list[str],
        coarse_names: list[str],
        device: str | torch.device = "cpu",
    ) -> None:
        if len(thresholds_fine) != model.n_exits or len(thresholds_coarse) != model.n_exits:
            raise ValueError(f"need {model.n_exits} thresholds per level")
        self.model = model.to(device).eval()
        self.tf = [float(t) for t in thresholds_fine]
        self.tc = [float(t) for t in thresholds_coarse]
        self.device = torch.device(device)
        c = len(mean)
        self.mean = torch.tensor(mean, device=self.device).view(1, c, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, c, 1, 1) * 255
        self.fine_names, self.coarse_names = list(fine_names), list(coarse_names)

    @classmethod
    def from_checkpoint(cls, path: str | Path, thresholds_fine, thresholds_coarse, device="cpu") -> DynamicClassifier:
        payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
        model = build_early_exit_net(payload["config"], payload["in_channels"], payload["n_fine"], payload["n_coarse"])
        model.load_state_dict(payload["state_dict"])
        return cls(model, thresholds_fine, thresholds_coarse, payload["mean"], payload["std"],
                   payload["fine_names"], payload["coarse_names"], device)

    @torch.no_grad()
    def predict(self, images: np.ndarray | torch.Tensor) -> Prediction:
        """images: uint8, (N, C, H, W) or (N, H, W, C)."""
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        if x.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {x.dtype}")
        c = self.mean.shape[1]
        if x.ndim == 4 and x.shape[1] != c and x.shape[-1] == c:
            x = x.permute(0, 3, 1, 2)
        x = ((x.to(self.device).float() - self.mean) / self.std).contiguous()
        n = x.shape[0]
        label = torch.zeros(n, dtype=torch.long, device=self.device)
        fine = torch.zeros(n, dtype=torch.bool, device=self.device)
        exit_at = torch.zeros(n, dtype=torch.long, device=self.device)
        active = torch.arange(n, device=self.device)
        h = x
        segments = self.model.segments()
        for k, (stages, heads) in enumerate(segments):
            h = stages(h)
            f_logits, c_logits = heads(h)
            last = k == len(segments) - 1
            go_fine = _norm_entropy(f_logits) <= self.tf[k]
            go_coarse = ~go_fine & ((_norm_entropy(c_logits) <= self.tc[k]) | last)
            leave = go_fine | go_coarse
            idx = active[leave]
            label[idx] = torch.where(go_fine[leave], f_logits[leave].argmax(-1), c_logits[leave].argmax(-1))
            fine[idx] = go_fine[leave]
            exit_at[idx] = k
            active, h = active[~leave], h[~leave]
            if len(active) == 0:
                break
        label_np, fine_np = label.cpu().numpy(), fine.cpu().numpy()
        names = [self.fine_names[c] if f else self.coarse_names[c] for c, f in zip(label_np, fine_np)]
        return Prediction(label=label_np, fine=fine_np, exit=exit_at.cpu().numpy(), name=names)
