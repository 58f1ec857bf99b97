"""The network of a transfer trial: a torchvision backbone and a linear head for the dataset's classes.

One exit, one answer level ("fine"): the head's logits are the classes' scores (softmax for one
class per image, sigmoid per class for a multi-label dataset). Parameters are named `backbone.*`
(torchvision's names under it: what a weights file holds) and `head.*`, which is how a training
plan freezes the backbone (a stage that trains ("head",) only). A one-channel dataset is repeated
to the three channels the backbones take. `segments()` is what the engine counts FLOPs on.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from trainables.transfer.backbones import build_backbone, saved_bytes

__all__ = ["TransferNet", "weight_bytes"]


def _features(backbone: nn.Module, in_channels: int, x: torch.Tensor) -> torch.Tensor:
    if in_channels == 1:
        x = x.expand(-1, 3, -1, -1)
    out = backbone(x)
    return out.logits if hasattr(out, "logits") else out  # GoogLeNet in training mode returns a namedtuple


class _Body(nn.Module):
    """The backbone as one stage (a view for cost counting: it shares the network's modules)."""

    def __init__(self, backbone: nn.Module, in_channels: int) -> None:
        super().__init__()
        self.backbone, self.in_channels = backbone, in_channels
        self.train(backbone.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _features(self.backbone, self.in_channels, x)


class _Head(nn.Module):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.train(head.training)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.head(h),)


class TransferNet(nn.Module):
    n_exits = 1
    levels = ("fine",)

    def __init__(self, backbone: str, n_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.backbone, self.feature_width = build_backbone(backbone)
        self.head = nn.Linear(self.feature_width, int(n_classes))
        self.in_channels = int(in_channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return _features(self.backbone, self.in_channels, x)

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor]]:
        return [(self.head(self.features(x)),)]

    def segments(self) -> list[tuple[nn.Module, nn.Module]]:
        """[(backbone, head)]: the one exit's stages and head, as the engine's cost counting reads them."""
        return [(_Body(self.backbone, self.in_channels), _Head(self.head))]


@lru_cache(maxsize=None)
def weight_bytes(name: str, n_classes: int) -> int:
    """Bytes on disk of a trial's network of backbone `name` with a head of `n_classes` (built once, on
    a forked random stream: a trial's seeded initialisation is the same whether or not this ran)."""
    with torch.random.fork_rng(devices=[]):
        return saved_bytes(TransferNet(name, n_classes))
