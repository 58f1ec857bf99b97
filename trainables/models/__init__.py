"""Model families: a registry of staged backbones, and the early-exit network built on them.

A backbone is a stack of stages (`nn.ModuleList`) with known output channels; an exit can sit
after any stage. `register_backbone` is strict (a duplicate name raises), `list_backbones()`
serves the CLI and the parametrized tests. Every backbone has a `tiny` setting (the
`TINY_CONFIGS` below) that runs forward and backward on CPU in well under a second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from trainables.registry import Registry

__all__ = [
    "StagedBackbone",
    "get_backbone",
    "list_backbones",
    "register_backbone",
]


class StagedBackbone(nn.Module):
    """A backbone cut into stages; stage k maps the output of stage k-1 to `stage_channels[k]`."""

    def __init__(self, stages: list[nn.Module], stage_channels: list[int]) -> None:
        super().__init__()
        if len(stages) != len(stage_channels):
            raise ValueError("one channel count per stage")
        self.stages = nn.ModuleList(stages)
        self.stage_channels = list(stage_channels)

    def __len__(self) -> int:
        return len(self.stages)


BackboneBuilder = Callable[..., StagedBackbone]
_BACKBONES: Registry[BackboneBuilder] = Registry("backbone")
register_backbone = _BACKBONES.register
list_backbones = _BACKBONES.names


def get_backbone(name: str, in_channels: int, **kwargs: Any) -> StagedBackbone:
    return _BACKBONES[name](in_channels=in_channels, **kwargs)


from trainables.models import backbones as _backbones  # noqa: E402,F401  (fills the registry)
from trainables.models.early_exit import EarlyExitNet, build_early_exit_net  # noqa: E402

TINY_CONFIGS: dict[str, dict[str, Any]] = _backbones.TINY_CONFIGS

__all__ += ["EarlyExitNet", "TINY_CONFIGS", "build_early_exit_net"]
