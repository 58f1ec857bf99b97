"""Staged backbones for small (28-32 px) images.

- `resnet`: the CIFAR ResNet (He et al. 2016, as in kuangliu/pytorch-cifar): a 3x3 stem, then
  `n_stages` stages of `blocks` BasicBlocks, width doubling and resolution halving per stage.
  Width and depth are searched. With width 64, blocks 2, 4 stages it is the CIFAR ResNet-18
  (1.111 GFLOP forward at 32x32 with a 100-way head, by FlopCounterMode; see trainables/cost.py).
- `alexnet`: the AlexNet-style CIFAR network of B-AlexNet / Gran-HBN
  (ben-sanati/Class-Granular-Classifications), cut into the paper's three branch points:
  conv5x5/2(64)+pool | conv5x5(192)+pool+conv3x3(384) | conv3x3(256)x2+pool. The paper's very
  wide fully-connected exit heads are replaced by the space's head choice (trainables/models/
  early_exit.py), so parameter counts differ from the paper's 8.75M; `width` scales all convs.
"""

from __future__ import annotations

from torch import nn

from trainables.models import StagedBackbone, register_backbone

TINY_CONFIGS = {
    "resnet": {"width": 8, "blocks": 1, "n_stages": 3},
    "alexnet": {"width": 0.125},
}


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


@register_backbone
def resnet(in_channels: int, width: int = 64, blocks: int = 2, n_stages: int = 4) -> StagedBackbone:
    if not (1 <= n_stages <= 5) or blocks < 1 or width < 1:
        raise ValueError(f"resnet needs 1<=n_stages<=5, blocks>=1, width>=1; got {n_stages}, {blocks}, {width}")
    stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
    stages: list[nn.Module] = []
    channels: list[int] = []
    cin = width
    for s in range(n_stages):
        cout = width * 2**s
        layers: list[nn.Module] = [stem] if s == 0 else []
        for b in range(blocks):
            layers.append(BasicBlock(cin, cout, stride=2 if (s > 0 and b == 0) else 1))
            cin = cout
        stages.append(nn.Sequential(*layers))
        channels.append(cout)
    return StagedBackbone(stages, channels)


@register_backbone
def alexnet(in_channels: int, width: float = 1.0) -> StagedBackbone:
    def c(n: int) -> int:
        return max(4, int(round(n * width)))

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
    return StagedBackbone([stage1, stage2, stage3], [c(64), c(384), c(256)])
