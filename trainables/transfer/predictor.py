"""The predictor of a transfer point: the trial's network at its input side, and the point's decision
thresholds.

Images (uint8, any side) are resized to the network's input side as the trial's evaluation batches
were (bilinear, antialiased), normalised with the dataset's statistics and run in batches. A
multi-label point answers every class whose probability is above its threshold
(`Prediction.labels`; `label` is the most probable class); a single-label one answers the top-1
class. Every image runs the whole network: its cost is the network's FLOPs at the input side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainables.multilabel import sigmoid
from trainables.predictor import Prediction

__all__ = ["TransferPredictor", "point_thresholds"]

ALWAYS, NEVER = 2.0, -1.0  # as an exit network: one exit, every answer at the fine level
BATCH = 256


def point_thresholds(point: Mapping[str, Any], n_classes: int) -> np.ndarray | None:
    """(C,) thresholds of a stored point: its per-class ones, else its one threshold for every class;
    None for a single-label point (top-1)."""
    per_class = point.get("class_thresholds")
    if per_class is not None and len(per_class):
        return np.asarray(per_class, dtype=np.float64)
    t = point.get("threshold")
    if t is None or t != t:
        return None
    return np.full(n_classes, float(t))


class TransferPredictor:
    """A Predictor (trainables/predictor.py) of one transfer point."""

    levels = ("fine",)

    def __init__(self, model: torch.nn.Module, input_size: int, mean: Sequence[float], std: Sequence[float],
                 names: Sequence[str], thresholds: np.ndarray | None, flops: float, device: str | torch.device = "cpu") -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.input_size = int(input_size)
        c = len(mean)
        self.mean = torch.tensor(mean, device=self.device, dtype=torch.float32).view(1, c, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device, dtype=torch.float32).view(1, c, 1, 1) * 255
        self.names = list(names)
        self.class_thresholds = thresholds  # (C,) or None: one class per image, the top-1
        self.flops = float(flops)
        self.thresholds = np.array([[ALWAYS]])  # as an exit network: one exit, answered fine
        self.point: dict[str, Any] = {}

    @classmethod
    def from_checkpoint(cls, path: str | Path, build_model, input_size, point: Mapping[str, Any],
                        device: str = "cpu") -> TransferPredictor:
        from trainables.dynamic import data_info
        from trainables.safe_load import load_torch

        payload: dict[str, Any] = load_torch(path)
        data = data_info(payload)
        model = build_model(payload["config"], data)
        model.load_state_dict(payload["state_dict"])
        flops = float(payload["costs"]["flops"][-1])
        thresholds = point_thresholds(point, data.n_fine) if data.multi_label else None
        return cls(model, input_size(payload["config"], data), data.mean, data.std, data.fine_names, thresholds, flops, device)

    @torch.no_grad()
    def scores(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """(N, C) class scores: probabilities (sigmoid per class when multi-label, else softmax)."""
        from trainables.dynamic import network_input

        out = []
        for start in range(0, len(images), BATCH):
            x = network_input(images[start:start + BATCH], self.mean, self.std, self.device)
            if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
                x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True,
                                  align_corners=False)
            out.append(self.model(x)[0][0].float().cpu().numpy())
        logits = np.concatenate(out) if out else np.zeros((0, len(self.names)), np.float32)
        if self.class_thresholds is not None:
            return sigmoid(logits)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def predict(self, images: np.ndarray | torch.Tensor) -> Prediction:
        """images: uint8, (N, C, H, W) or (N, H, W, C), any side."""
        p = self.scores(images)
        n = len(p)
        label = p.argmax(1).astype(np.int64) if n else np.zeros(0, np.int64)
        labels = p > self.class_thresholds if self.class_thresholds is not None else None
        zeros = np.zeros(n, dtype=np.int64)
        return Prediction(label=label, level=zeros, exit=zeros, name=[self.names[i] for i in label],
                          cost={"flops": np.full(n, self.flops)}, labels=labels)
