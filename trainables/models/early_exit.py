"""The early-exit network: a staged backbone with one classifier head per answer level at every exit.

A family says which answer levels its exits have: Gran-HBN a fine and a coarse head
(`outputs={"fine": 100, "coarse": 20}`), BranchyNet one flat head (`{"fine": 10}`); only those
heads are built, so costs count only what runs. Exits sit after the stages named in
`exit_after` (the last kept stage is always an exit; stages after it are not built). `forward`
returns one tuple of logits per exit, in the order of `outputs`, which is what training and the
calibration cache need; `segments()` exposes the per-exit pieces for cost counting, latency
measurement and dynamic inference (trainables/dynamic.py), which runs a sample only as far as
its exit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from trainables.models import StagedBackbone, get_backbone

HEADS = ("linear", "mlp", "conv")


def make_head(kind: str, cin: int, n_out: int, hidden: int, convs: int = 1) -> nn.Module:
    """One classifier head on a (B, C, H, W) feature map.

    "conv" is BranchyNet's branch shape: `convs` 3x3 conv layers (BN, ReLU) before pooling, which
    give a shallow exit some spatial processing of its own, then a linear layer."""
    pool = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if kind == "linear":
        return nn.Sequential(*pool, nn.Linear(cin, n_out))
    if kind == "mlp":
        return nn.Sequential(*pool, nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_out))
    if kind == "conv":
        if convs < 1:
            raise ValueError(f"a conv head needs convs >= 1, got {convs}")
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [nn.Conv2d(cin if i == 0 else hidden, hidden, 3, padding=1, bias=False),
                       nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        return nn.Sequential(*layers, *pool, nn.Linear(hidden, n_out))
    raise ValueError(f"unknown head {kind!r}; known: {', '.join(HEADS)}")


class ExitHeads(nn.Module):
    """The heads of one exit, one per answer level; returns their logits in that order."""

    def __init__(self, kind: str, cin: int, outputs: Mapping[str, int], hidden: int, convs: int = 1) -> None:
        super().__init__()
        self.levels = tuple(outputs)
        self.heads = nn.ModuleDict({name: make_head(kind, cin, n, hidden, convs) for name, n in outputs.items()})

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.heads[name](h) for name in self.levels)


class EarlyExitNet(nn.Module):
    def __init__(
        self,
        backbone: StagedBackbone,
        exit_after: Sequence[int],
        outputs: Mapping[str, int],
        head: str = "linear",
        head_hidden: int = 128,
        exit_grad_scale: float = 1.0,
        head_convs: int = 1,
    ) -> None:
        super().__init__()
        if not 0.0 <= exit_grad_scale <= 1.0:
            raise ValueError(f"exit_grad_scale must be in [0, 1], got {exit_grad_scale}")
        # how much of an early exit's loss gradient reaches the backbone: 1 trains the backbone
        # for every exit (the classic multi-exit loss), 0 makes early heads probes of features
        # learnt for the last exit only; between, a trade of early-exit vs final accuracy
        self.exit_grad_scale = float(exit_grad_scale)
        n = len(backbone)
        exits = sorted(set(int(e) for e in exit_after))
        if not exits or exits[0] < 0 or exits[-1] >= n:
            raise ValueError(f"exit_after must name stages in 0..{n - 1}, got {list(exit_after)}")
        self.exit_after = exits
        # stages after the last exit would never run: drop them
        self.stages = nn.ModuleList(list(backbone.stages)[: exits[-1] + 1])
        if not outputs:
            raise ValueError("an exit needs at least one head")
        self.heads = nn.ModuleList(
            ExitHeads(head, backbone.stage_channels[e], outputs, head_hidden, head_convs) for e in exits
        )
        self.outputs = dict(outputs)
        self.levels = tuple(outputs)

    @property
    def n_exits(self) -> int:
        return len(self.exit_after)

    def segments(self) -> list[tuple[nn.Module, ExitHeads]]:
        """Per exit: the stages that run since the previous exit, and that exit's heads."""
        out, start = [], 0
        for e, heads in zip(self.exit_after, self.heads):
            out.append((nn.Sequential(*self.stages[start : e + 1]), heads))
            start = e + 1
        return out

    def _exit_input(self, h: torch.Tensor, last: bool) -> torch.Tensor:
        s = self.exit_grad_scale
        if last or s == 1.0 or not torch.is_grad_enabled():
            return h
        if s == 0.0:
            return h.detach()
        return h.detach() + s * (h - h.detach())  # same value, gradient scaled by s

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        outs = []
        h = x
        k = 0
        K = len(self.exit_after)
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if k < K and i == self.exit_after[k]:
                outs.append(self.heads[k](self._exit_input(h, last=k == K - 1)))
                k += 1
        return outs


def build_early_exit_net(config: Mapping[str, Any], in_channels: int, outputs: Mapping[str, int]) -> EarlyExitNet:
    """Build from a flat config: `backbone`, `<backbone>.<arg>` entries (e.g. `resnet.width`),
    `exit_after`, `head`, `head_hidden`, `head_convs`. Backbone arguments carry the backbone's
    name so that one study can search two backbones whose arguments differ in kind."""
    prefix = f"{config['backbone']}."
    bb_kwargs = {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}
    backbone = get_backbone(config["backbone"], in_channels=in_channels, **bb_kwargs)
    exit_after = config.get("exit_after")
    if exit_after is None:
        exit_after = list(range(len(backbone)))
    exit_after = [e if e >= 0 else len(backbone) + e for e in exit_after]
    return EarlyExitNet(
        backbone,
        exit_after,
        outputs,
        head=config.get("head", "linear"),
        head_hidden=int(config.get("head_hidden", 128)),
        exit_grad_scale=float(config.get("exit_grad_scale", 1.0)),
        head_convs=int(config.get("head_convs", 1)),
    )
