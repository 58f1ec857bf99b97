"""Dynamic inference: a trained early-exit network with its chosen thresholds.

`DynamicClassifier.predict(images)` runs each image only as far as its exit: after every exit
the samples that answered leave the batch, so deeper stages see only the rest. The decision at
each exit is `trainables.exits.cascade_step` on live entropies, the very rule calibration
scored on cached outputs, at whatever answer levels the family has (fine only, or fine then
coarse).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.exits import cascade_step, normalised_entropy
from trainables.models.early_exit import EarlyExitNet

__all__ = ["DynamicClassifier", "Prediction"]


@dataclass
class Prediction:
    label: np.ndarray  # (N,) int64: class index at the level answered
    level: np.ndarray  # (N,) int64: answer level index (0 = the first level, e.g. fine)
    exit: np.ndarray  # (N,) int64: exit index that answered
    name: list[str]  # class name of each answer at its level

    @property
    def fine(self) -> np.ndarray:
        """(N,) bool: answered at the first (finest) level."""
        return self.level == 0


class DynamicClassifier:
    def __init__(
        self,
        model: EarlyExitNet,
        thresholds: np.ndarray,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        names: dict[str, list[str]],
        device: str | torch.device = "cpu",
    ) -> None:
        t = np.asarray(thresholds, dtype=np.float64)
        if t.shape != (len(model.levels), model.n_exits):
            raise ValueError(f"need thresholds of shape ({len(model.levels)} levels, {model.n_exits} exits), got {t.shape}")
        self.model = model.to(device).eval()
        self.thresholds = t
        self.device = torch.device(device)
        c = len(mean)
        self.mean = torch.tensor(mean, device=self.device).view(1, c, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, c, 1, 1) * 255
        self.names = {level: list(names[level]) for level in model.levels}
        self.point: dict[str, Any] = {}  # the operating point's rows (set by search.load)

    @classmethod
    def from_checkpoint(cls, path: str | Path, build_model, thresholds_of, device: str = "cpu") -> DynamicClassifier:
        """From a trial's model.pt: `build_model(config, data)` rebuilds the network (the family's),
        `thresholds_of(n_exits)` gives the operating point's thresholds."""
        from trainables.family import DataInfo

        payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
        data = DataInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in payload["data"].items()})
        model = build_model(payload["config"], data)
        model.load_state_dict(payload["state_dict"])
        names = {level: list(data.names(level)) for level in model.levels}
        return cls(model, thresholds_of(model.n_exits), data.mean, data.std, names, device)

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
        level = torch.zeros(n, dtype=torch.long, device=self.device)
        exit_at = torch.zeros(n, dtype=torch.long, device=self.device)
        active = torch.arange(n, device=self.device)
        h = x
        segments = self.model.segments()
        for k, (stages, heads) in enumerate(segments):
            h = stages(h)
            logits = heads(h)
            undecided = torch.ones(len(active), dtype=torch.bool, device=self.device)
            passes = [normalised_entropy(lg) <= float(self.thresholds[j, k]) for j, lg in enumerate(logits)]
            leave = torch.zeros_like(undecided)
            for j, go in enumerate(cascade_step(undecided, passes, k == len(segments) - 1)):
                idx = active[go]
                label[idx] = logits[j][go].argmax(-1)
                level[idx] = j
                exit_at[idx] = k
                leave |= go
            active, h = active[~leave], h[~leave]
            if len(active) == 0:
                break
        label_np, level_np = label.cpu().numpy(), level.cpu().numpy()
        levels = self.model.levels
        names = [self.names[levels[j]][c] for c, j in zip(label_np, level_np)]
        return Prediction(label=label_np, level=level_np, exit=exit_at.cpu().numpy(), name=names)
