"""Staged backbones for small (28-32 px) images.

- `resnet`: the CIFAR ResNet (He et al. 2016, as in kuangliu/pytorch-cifar): a 3x3 stem, then
  `n_stages` stages of `blocks` BasicBlocks, width doubling and resolution halving per stage.
  Width and depth are searched. With width 64, blocks 2, 4 stages it is the CIFAR ResNet-18
  (1.111 GFLOP forward at 32x32 with a 100-way head, by FlopCounterMode; see trainables/engine/cost.py);
  with width 16, blocks 18, 3 stages it is He et al.'s ResNet-110 (6n+2 layers, n = 18), the
  B-ResNet-110 backbone of BranchyNet. `splits` cuts every stage into that many consecutive
  groups of blocks, so exits can sit inside a stage too (BranchyNet's branch points).
- `alexnet`: the AlexNet-style CIFAR network of B-AlexNet / Gran-HBN
  (ben-sanati/Class-Granular-Classifications), cut into the paper's three branch points:
  conv5x5/2(64)+pool | conv5x5(192)+pool+conv3x3(384) | conv3x3(256)x2+pool. The paper's very
  wide fully-connected exit heads are replaced by the space's head choice (trainables/models/
  early_exit.py), so parameter counts differ from the paper's 8.75M; `width` scales all convs.
  `cuts="layers"` cuts it after each of its five conv layers instead (B-AlexNet's finer branch
  points): same network, more places for an exit.
- `plainnet`: Barz & Denzler's Plain-11 ("Deep Learning is not a Matter of Depth but of Good
  Training", 2018; cvjena/semantic-embeddings): conv3x3 (BN, ReLU) layers 64, 64 | avg-pool |
  128 x3 | avg-pool | 256 x3 | avg-pool | 512, in four stages; with an "mlp" head of 512 hidden
  units (global average pooling, fc 512, classifier) it has its 11 layers. The 11-layer CNN of the
  Making Better Mistakes comparison (../shared/RESEARCH.md). `width` scales every layer.
"""

from __future__ import annotations

from torch import nn

from trainables.models import StagedBackbone, register_backbone


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


@register_backbone(tiny={"width": 8, "blocks": 1, "n_stages": 3})
def resnet(in_channels: int, width: int = 64, blocks: int = 2, n_stages: int = 4, splits: int = 1) -> StagedBackbone:
    if not (1 <= n_stages <= 5) or blocks < 1 or width < 1 or not (1 <= splits <= blocks):
        raise ValueError(f"resnet needs 1<=n_stages<=5, blocks>=1, width>=1, 1<=splits<=blocks; "
                         f"got {n_stages}, {blocks}, {width}, {splits}")
    stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
    stages: list[nn.Module] = []
    channels: list[int] = []
    cin = width
    for s in range(n_stages):
        cout = width * 2**s
        blocks_of = [BasicBlock(cin if b == 0 else cout, cout, stride=2 if (s > 0 and b == 0) else 1) for b in range(blocks)]
        cin = cout
        # `splits` groups of consecutive blocks, as even as the count allows (earlier groups larger)
        bounds = [round(blocks * g / splits) for g in range(splits + 1)]
        for g in range(splits):
            layers: list[nn.Module] = [stem] if (s == 0 and g == 0) else []
            stages.append(nn.Sequential(*layers, *blocks_of[bounds[g]:bounds[g + 1]]))
            channels.append(cout)
    return StagedBackbone(stages, channels)


@register_backbone(tiny={"width": 0.125})
def alexnet(in_channels: int, width: float = 1.0, cuts: str = "paper") -> StagedBackbone:
    def c(n: int) -> int:
        return max(4, int(round(n * width)))

    if cuts not in ("paper", "layers"):
        raise ValueError(f"alexnet cuts must be 'paper' or 'layers', got {cuts!r}")

    stage1 = nn.Sequential(
        nn.Conv2d(in_channels, c(64), 5, stride=2, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
    stage2 = nn.Sequential(
        nn.Conv2d(c(64), c(192), 5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(c(192), c(384), 3, padding=1), nn.ReLU(inplace=True),
    )
    stage3 = nn.Sequential(
        nn.Conv2d(c(384), c(256), 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c(256), c(256), 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
    if cuts == "layers":  # the same layers, an exit possible after each conv layer
        s2, s3 = list(stage2), list(stage3)
        return StagedBackbone(
            [stage1, nn.Sequential(*s2[:3]), nn.Sequential(*s2[3:]), nn.Sequential(*s3[:2]), nn.Sequential(*s3[2:])],
            [c(64), c(192), c(384), c(256), c(256)],
        )
    return StagedBackbone([stage1, stage2, stage3], [c(64), c(384), c(256)])


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_backbone(tiny={"width": 0.125})
def plainnet(in_channels: int, width: float = 1.0) -> StagedBackbone:
    def c(n: int) -> int:
        return max(4, int(round(n * width)))

    plan = [[64, 64], [128, 128, 128], [256, 256, 256], [512]]
    stages: list[nn.Module] = []
    cin = in_channels
    for s, convs in enumerate(plan):
        layers: list[nn.Module] = [nn.AvgPool2d(2)] if s > 0 else []  # Plain-11 pools between its blocks
        for n in convs:
            layers += _conv_bn_relu(cin, c(n))
            cin = c(n)
        stages.append(nn.Sequential(*layers))
    return StagedBackbone(stages, [c(p[-1]) for p in plan])
