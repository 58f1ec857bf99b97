"""Model families: a registry of staged backbones, and the early-exit network built on them.

A backbone is a stack of stages (`nn.ModuleList`) with known output channels; an exit can sit
after any stage. `register_backbone` is strict (a duplicate name raises), `list_backbones()`
serves the CLI and the parametrized tests. Every backbone registers with its `tiny` setting
(kept in `TINY_CONFIGS`), which runs forward and backward on CPU in well under a second, so the
tests parametrized over the registry cover a backbone registered anywhere (e.g. ResNet-9 by
trainables/hierarchy_heads/model.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
list_backbones = _BACKBONES.names
#: backbone name -> its tiny setting (keyword arguments of the builder)
TINY_CONFIGS: dict[str, dict[str, Any]] = {}


def register_backbone(fn: BackboneBuilder | None = None, *, tiny: Mapping[str, Any]):
    """Register a backbone builder (strict: a duplicate name raises) with its tiny setting:
    `@register_backbone(tiny={"width": 8})`, or `register_backbone(builder, tiny=...)`."""
    def register(f: BackboneBuilder) -> BackboneBuilder:
        _BACKBONES.register(f)
        TINY_CONFIGS[f.__name__] = dict(tiny)
        return f

    return register if fn is None else register(fn)


def get_backbone(name: str, in_channels: int, **kwargs: Any) -> StagedBackbone:
    return _BACKBONES[name](in_channels=in_channels, **kwargs)


from trainables.models import backbones as _backbones  # noqa: E402,F401  (fills the registry)
from trainables.models.early_exit import EarlyExitNet, build_early_exit_net  # noqa: E402

__all__ += ["EarlyExitNet", "TINY_CONFIGS", "build_early_exit_net"]
