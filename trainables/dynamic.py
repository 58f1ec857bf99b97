"""Dynamic inference: a trained early-exit network with its chosen thresholds.

`DynamicClassifier.predict(images)` runs each image only as far as its exit: after every exit
the samples that answered leave the batch, so deeper stages see only the rest. The decision at
each exit is `trainables.exits.cascade_step` on live entropies, the very rule calibration
scored on cached outputs, at whatever answer levels the family has (fine only, or fine then
coarse).

`without_exits=True` makes the same network without early exits: every stage, then only the last
exit's heads (no early head, no decision on the way). That is the plain network an early-exit
point is compared with, and an operating point of its own (the family's `plain` point).

The network runs at the trial's precision (`autocast`, channels_last on a GPU), as it ran when
the calibration outputs were cached and when its latency was measured (trainables/engine/cost.py
times this very `predict`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from trainables.data_info import DataInfo
from trainables.exits import cascade_step, normalised_entropy
from trainables.models.early_exit import EarlyExitNet
from trainables.predictor import Prediction

__all__ = ["Answers", "DynamicClassifier", "Prediction", "answer_at_exit", "data_info", "network_input"]


def data_info(payload: dict[str, Any]) -> DataInfo:
    """The DataInfo a trial stored with its network in model.pt."""
    return DataInfo.from_plain(payload["data"])


def network_input(images: np.ndarray | torch.Tensor, mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images, (N, C, H, W) or (N, H, W, C), normalised as in training (`mean`, `std`: (1, C, 1, 1)
    in 0..255 units) on `device`: what every predictor feeds its network."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dtype != torch.uint8:
        raise TypeError(f"images must be uint8, got {x.dtype}")
    c = mean.shape[1]
    if x.ndim == 4 and x.shape[1] != c and x.shape[-1] == c:
        x = x.permute(0, 3, 1, 2)
    return ((x.to(device).float() - mean) / std).contiguous()


class Answers(NamedTuple):
    """What dynamic inference fills in, per sample: class, answer level and exit."""

    label: torch.Tensor
    level: torch.Tensor
    exit: torch.Tensor

    @classmethod
    def empty(cls, n: int, device: torch.device) -> Answers:
        return cls(*(torch.zeros(n, dtype=torch.long, device=device) for _ in range(3)))


def answer_at_exit(heads, h: torch.Tensor, thresholds: np.ndarray, last: bool, k: int, active: torch.Tensor,
                   out: Answers) -> tuple[torch.Tensor, torch.Tensor]:
    """Exit k's decision on the samples still running (`h`: their features after exit k's stages,
    `active`: their indices): record the answers of those that leave, and return the features and
    indices of the rest. Dynamic inference runs this at every exit, and trainables/engine/cost.py times
    it, so a point's predicted latency includes what deciding costs."""
    logits = heads(h)
    undecided = torch.ones(len(active), dtype=torch.bool, device=h.device)
    passes = [normalised_entropy(lg) <= float(t) for lg, t in zip(logits, thresholds)]
    leave = torch.zeros_like(undecided)
    for j, go in enumerate(cascade_step(undecided, passes, last)):
        idx = active[go]
        out.label[idx] = logits[j][go].argmax(-1)
        out.level[idx] = j
        out.exit[idx] = k
        leave |= go
    stay = ~leave
    return h[stay], active[stay]


class DynamicClassifier:
    """The early-exit cascade at a point's thresholds: a Predictor (trainables/predictor.py)."""

    def __init__(
        self,
        model: EarlyExitNet,
        thresholds: np.ndarray,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        names: dict[str, list[str]],
        device: str | torch.device = "cpu",
        exit_costs: dict[str, Any] | None = None,
        *,
        without_exits: bool = False,
        autocast: Callable[[], Any] | None = None,
        channels_last: bool = False,
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
        self.segments = model.segments()  # built once: making the modules costs more than a small exit's compute
        self.levels = tuple(model.levels)
        self.without_exits = bool(without_exits)
        self.autocast = autocast or contextlib.nullcontext
        self.channels_last = bool(channels_last)
        self.point: dict[str, Any] = {}  # the operating point's rows (set by search.load)
        # cost name -> (K,) cumulative cost of answering at each exit (what a sample leaving there ran)
        self.exit_costs = {k: np.asarray(v, dtype=np.float64) for k, v in (exit_costs or {}).items()
                           if np.shape(v) == (model.n_exits,)}

    @classmethod
    def from_checkpoint(cls, path: str | Path, build_model, thresholds_of, device: str = "cpu", *,
                        without_exits: bool = False) -> DynamicClassifier:
        """From a trial's model.pt: `build_model(config, data)` rebuilds the network (the family's),
        `thresholds_of(model)` gives the operating point's thresholds for it; the network runs at the
        trial's precision on `device`."""
        from trainables.engine.precision import Precision
        from trainables.safe_load import load_torch

        payload: dict[str, Any] = load_torch(path)
        data = data_info(payload)
        model = build_model(payload["config"], data)
        model.load_state_dict(payload["state_dict"])
        names = {level: list(data.names(level)) for level in model.levels}
        costs = payload.get("costs")
        if without_exits:  # an image costs the whole network without exits, wherever it answers
            costs = {k: [float(v)] * model.n_exits for k, v in (payload.get("plain") or {}).items()}
        dev = torch.device(device)
        cuda = dev.type == "cuda"
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        return cls(model, thresholds_of(model), data.mean, data.std, names, dev, exit_costs=costs,
                   without_exits=without_exits, autocast=Precision.of(payload["config"], dev).autocast, channels_last=cuda)

    @torch.no_grad()
    def predict(self, images: np.ndarray | torch.Tensor) -> Prediction:
        """images: uint8, (N, C, H, W) or (N, H, W, C)."""
        x = network_input(images, self.mean, self.std, self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        n = x.shape[0]
        out = Answers.empty(n, self.device)
        active = torch.arange(n, device=self.device)
        h = x
        segments = self.segments
        last = len(segments) - 1
        with self.autocast():
            for k, (stages, heads) in enumerate(segments):
                if self.without_exits and k < last:
                    h = stages(h)  # no early exit: its heads do not run
                    continue
                h, active = answer_at_exit(heads, stages(h), self.thresholds[:, k], k == last, k, active, out)
                if len(active) == 0:
                    break
        label, level, exit_at = out
        label_np, level_np = label.cpu().numpy(), level.cpu().numpy()
        levels = self.model.levels
        names = [self.names[levels[j]][c] for c, j in zip(label_np, level_np)]
        exit_np = exit_at.cpu().numpy()
        return Prediction(label=label_np, level=level_np, exit=exit_np, name=names,
                          cost={k: v[exit_np] for k, v in self.exit_costs.items()})
