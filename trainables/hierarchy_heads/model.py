"""hierarchy_heads' networks: a backbone, then a flat, low-rank or hierarchical classifier head.

Heads, on the backbone's pooled features (F values per image):

* flat: F -> classes;
* low-rank: F -> d -> classes, with or without a ReLU between (the research's factorised head);
* hierarchical: a superclass head F -> superclasses, and one child head per superclass
  (F -> its classes, flat or low-rank) of which, at inference, only the routed ones run
  (trainables/hierarchy_heads/predictor.py).

What the engine sees (trainables/engine/loop.py) is one exit with two answer levels: `forward` returns
[(fine, coarse)]. For the hierarchical head `fine` holds, per class c of superclass s(c), the joint
log-probability log p(s(c)) + log p(c | s(c)), every child head computed (training needs them all,
and the calibration cache keeps them all so routing is calibrated afterwards without the network);
`coarse` the superclass logits. For a flat or low-rank head `fine` is its logits and `coarse`
log sum_{c in s} p(c), the superclass probability the flat answer implies (no multiply runs for it).

Multiply-accumulates of a head are counted from its linear layers (`linear_macs`): in x out each,
biases and elementwise work not counted, the convention of the FLOP counter the engine uses
(2 FLOPs per MAC; trainables/engine/cost.py), so the two agree exactly.

Also registers the ResNet-9 backbone (Myrtle's DAWNBench network, trained one-cycle).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from trainables.models import StagedBackbone, get_backbone, list_backbones, register_backbone

__all__ = ["HEADS", "HierHeadsNet", "build_hierarchy_heads_net", "linear_macs", "lowrank_macs", "placeholder_grouping"]

HEADS = ("flat", "lowrank", "hier")
CHILD_HEADS = ("flat", "lowrank")


def _conv_bn(cin: int, cout: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c, c), _conv_bn(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def resnet9(in_channels: int, width: int = 64) -> StagedBackbone:
    """ResNet-9: prep (w), layer 1 (2w, pool, residual), layer 2 (4w, pool), layer 3 (8w, pool, residual)."""
    w = int(width)
    if w < 1:
        raise ValueError(f"resnet9.width must be >= 1, got {width}")
    stages = [
        _conv_bn(in_channels, w),
        nn.Sequential(_conv_bn(w, 2 * w, pool=True), _Residual(2 * w)),
        _conv_bn(2 * w, 4 * w, pool=True),
        nn.Sequential(_conv_bn(4 * w, 8 * w, pool=True), _Residual(8 * w)),
    ]
    return StagedBackbone(stages, [w, 2 * w, 4 * w, 8 * w])


if "resnet9" not in list_backbones():  # this module may be imported again under another name (tests)
    register_backbone(resnet9, tiny={"width": 4})


def lowrank(cin: int, rank: int, n_out: int, nonlinear: bool) -> nn.Sequential:
    """F -> d -> classes (the first map without bias: a factorisation of one F x classes matrix)."""
    mid: list[nn.Module] = [nn.ReLU(inplace=True)] if nonlinear else []
    return nn.Sequential(nn.Linear(cin, rank, bias=False), *mid, nn.Linear(rank, n_out))


def linear_macs(module: nn.Module) -> int:
    """Multiply-accumulates per image of the linear layers of `module` (in x out each)."""
    return int(sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear)))


def lowrank_macs(cin: int, rank: int, n_out: int) -> int:
    """The low-rank head's MACs by formula: F x d + d x classes."""
    return cin * rank + rank * n_out


def _groups(coarse_of: Sequence[int]) -> list[list[int]]:
    n_coarse = max(coarse_of) + 1
    groups = [[c for c, s in enumerate(coarse_of) if s == g] for g in range(n_coarse)]
    if any(not g for g in groups):
        raise ValueError("every superclass needs at least one class")
    return groups


class Heads(nn.Module):
    """The classifier head on a (B, C, H, W) feature map; returns (fine, coarse) as described above."""

    def __init__(self, kind: str, cin: int, coarse_of: Sequence[int], rank: int = 0, nonlinear: bool = False,
                 child: str = "flat", child_rank: int = 0, induced: bool = False) -> None:
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"unknown head {kind!r}; known: {', '.join(HEADS)}")
        if child not in CHILD_HEADS:
            raise ValueError(f"unknown child head {child!r}; known: {', '.join(CHILD_HEADS)}")
        if induced and kind != "hier":
            raise ValueError("an induced grouping needs a hierarchical head")
        self.kind, self.child, self.cin = kind, child, int(cin)
        self.child_rank, self.nonlinear = int(child_rank), bool(nonlinear)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self._index(coarse_of)
        n_fine = len(self.coarse_of)
        if kind == "flat":
            self.fine = nn.Linear(cin, n_fine)
        elif kind == "lowrank":
            self.fine = lowrank(cin, int(rank), n_fine, nonlinear)
        else:
            self.coarse = nn.Linear(cin, len(self.groups))
            self.children_heads = self._children()
        self.induced = bool(induced)
        if self.induced:  # a flat probe trains first; the grouping induced from it replaces `coarse_of`
            self.probe = nn.Linear(cin, n_fine)
            self.register_buffer("grouping", torch.tensor(self.coarse_of), persistent=True)
            self.register_buffer("ready", torch.tensor(False), persistent=True)
        self._ready = False  # `ready` as a Python flag: read every forward, without a device sync

    def _index(self, coarse_of: Sequence[int]) -> None:
        self.coarse_of = [int(s) for s in coarse_of]
        self.groups = _groups(self.coarse_of)
        n_fine = len(self.coarse_of)
        order = [c for g in self.groups for c in g]  # classes in group order
        inverse = torch.empty(n_fine, dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(n_fine)
        device = self.inverse.device if hasattr(self, "inverse") else None
        self.register_buffer("inverse", inverse.to(device), persistent=False)
        self.register_buffer("group_of", torch.tensor(self.coarse_of, device=device), persistent=False)

    def _children(self) -> nn.ModuleList:
        if self.child == "flat":
            return nn.ModuleList(nn.Linear(self.cin, len(g)) for g in self.groups)
        return nn.ModuleList(lowrank(self.cin, min(self.child_rank, len(g)) or 1, len(g), self.nonlinear) for g in self.groups)

    @property
    def probing(self) -> bool:
        """An induced head before its grouping is set: the flat probe answers."""
        return self.induced and not self._ready

    def set_grouping(self, coarse_of: Sequence[int]) -> None:
        """Route on this grouping (as many groups as the superclass head has outputs): the child
        heads are built anew for it, on the head's device."""
        if not self.induced:
            raise ValueError("only an induced head takes a new grouping")
        groups = _groups([int(s) for s in coarse_of])
        if len(groups) != self.coarse.out_features or len(coarse_of) != len(self.coarse_of):
            raise ValueError(f"a grouping of {len(self.coarse_of)} classes into {self.coarse.out_features} groups is needed")
        device = self.probe.weight.device
        self._index(coarse_of)
        self.children_heads = self._children().to(device)
        self.grouping.copy_(torch.tensor(self.coarse_of))
        self.ready.fill_(True)
        self._ready = True

    @property
    def hierarchical(self) -> bool:
        return self.kind == "hier"

    def features(self, h: torch.Tensor) -> torch.Tensor:
        return self.pool(h)

    def child_log_probs(self, f: torch.Tensor, g: int) -> torch.Tensor:
        """log p(c | superclass g) over g's classes (in `groups[g]` order), running g's head only."""
        return torch.log_softmax(self.children_heads[g](f).float(), dim=-1)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(h)
        if not self.hierarchical or self.probing:
            fine = self.probe(f) if self.probing else self.fine(f)
            logp = torch.log_softmax(fine.float(), dim=-1)
            coarse = torch.stack([torch.logsumexp(logp[:, g], dim=-1) for g in self.groups], dim=-1)
            return fine, coarse
        coarse = self.coarse(f)
        logp_s = torch.log_softmax(coarse.float(), dim=-1)
        cond = torch.cat([self.child_log_probs(f, g) for g in range(len(self.groups))], dim=-1)[:, self.inverse]
        return logp_s[:, self.group_of] + cond, coarse

    def macs(self) -> dict[str, Any]:
        """Per image: `head` (a flat or low-rank head), or `coarse` and `children` (one per superclass)."""
        if not self.hierarchical:
            return {"head": linear_macs(self.fine)}
        return {"coarse": linear_macs(self.coarse), "children": [linear_macs(c) for c in self.children_heads]}

    def all_macs(self) -> int:
        m = self.macs()
        return int(m["head"]) if "head" in m else int(m["coarse"] + sum(m["children"]))


class HierHeadsNet(nn.Module):
    """A backbone and a `Heads`: to the engine, a network with one exit and levels (fine, coarse)."""

    levels = ("fine", "coarse")

    def __init__(self, backbone: StagedBackbone, heads: Heads) -> None:
        super().__init__()
        self.stages = nn.ModuleList(backbone.stages)
        self.head = heads
        self.feature_channels = backbone.stage_channels[-1]

    @property
    def n_exits(self) -> int:
        return 1

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """An induced head's grouping comes first (it decides the child heads' shapes), then the weights."""
        grouping = state_dict.get("head.grouping")
        if grouping is not None and bool(state_dict.get("head.ready", False)) and \
                [int(v) for v in grouping.tolist()] != self.head.coarse_of:
            self.head.set_grouping([int(v) for v in grouping.tolist()])
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.head.induced:
            self.head._ready = bool(self.head.ready)
        return out

    def segments(self) -> list[tuple[nn.Module, Heads]]:
        return [(nn.Sequential(*self.stages), self.head)]

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self.head(self.backbone(x))]


def placeholder_grouping(n_fine: int, k: int) -> list[int]:
    """k contiguous groups of classes: an induced head's grouping until its probe has trained."""
    k = max(1, min(int(k), n_fine))
    return [c * k // n_fine for c in range(n_fine)]


def build_hierarchy_heads_net(config: Mapping[str, Any], in_channels: int, coarse_of: Sequence[int],
                              induced: bool = False) -> HierHeadsNet:
    """From a flat config: `backbone` and its `<backbone>.<arg>` entries, `head`, `rank`, `nonlinear`,
    `child_head`, `child_rank`; `induced`: `induced_k` groups, to be induced after a probe stage."""
    prefix = f"{config['backbone']}."
    bb = get_backbone(config["backbone"], in_channels=in_channels,
                      **{k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)})
    if induced:
        coarse_of = placeholder_grouping(len(coarse_of), int(config["induced_k"]))
    heads = Heads(config["head"], bb.stage_channels[-1], coarse_of, rank=int(config.get("rank", 0)),
                  nonlinear=bool(config.get("nonlinear", False)), child=config.get("child_head", "flat"),
                  child_rank=int(config.get("child_rank", 0)), induced=induced)
    return HierHeadsNet(bb, heads)
