"""Every backbone's tiny variant runs forward and backward; FLOP counts match a hand count."""

import numpy as np
import pytest
import torch
from torch import nn

from trainables.cost import count_flops, exit_flops, expected_flops
from trainables.models import TINY_CONFIGS, build_early_exit_net, list_backbones, register_backbone
from trainables.models.early_exit import HEADS


def _cfg(name, head="linear", exit_after=None):
    cfg = {"backbone": name, **{f"{name}.{k}": v for k, v in TINY_CONFIGS[name].items()}, "head": head, "head_hidden": 16}
    if exit_after is not None:
        cfg["exit_after"] = exit_after
    return cfg


@pytest.mark.parametrize("name", list_backbones())
@pytest.mark.parametrize("head", HEADS)
def test_tiny_forward_backward(name, head):
    net = build_early_exit_net(_cfg(name, head), in_channels=3, n_fine=10, n_coarse=4)
    x = torch.randn(4, 3, 32, 32)
    outs = net(x)
    assert len(outs) == net.n_exits
    for f, c in outs:
        assert f.shape == (4, 10) and c.shape == (4, 4)
    loss = sum(f.sum() + c.sum() for f, c in outs)
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("name", list_backbones())
def test_grey_28px_input(name):
    net = build_early_exit_net(_cfg(name), in_channels=1, n_fine=10, n_coarse=5)
    assert [f.shape for f, _ in net(torch.randn(2, 1, 28, 28))] == [(2, 10)] * net.n_exits


def test_exit_after_drops_later_stages():
    net = build_early_exit_net(_cfg("resnet", exit_after=[0, 1]), 3, 10, 4)
    assert net.n_exits == 2 and len(net.stages) == 2


def test_duplicate_backbone_name_raises():
    with pytest.raises(ValueError):

        @register_backbone
        def resnet(in_channels):  # noqa: F811
            raise AssertionError


def test_flop_count_matches_hand_count():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    flops, _ = count_flops(net, torch.zeros(1, 3, 4, 4))
    conv = 2 * (3 * 3 * 3) * 8 * 4 * 4  # 2 x MACs: k*k*cin per output, cout*H*W outputs
    lin = 2 * 128 * 5
    assert flops == conv + lin


def test_exit_flops_cumulative_with_heads():
    net = build_early_exit_net(_cfg("resnet"), 3, 10, 4)
    flops = exit_flops(net, 3, 32)
    assert (np.diff(flops) > 0).all()
    total_full, _ = count_flops(net, torch.zeros(1, 3, 32, 32))
    # running the whole network computes every head once: the cost to the last exit
    assert flops[-1] == total_full


def test_resnet18_reference_flops():
    cfg = {"backbone": "resnet", "resnet.width": 64, "resnet.blocks": 2, "resnet.n_stages": 4, "exit_after": [3]}
    net = build_early_exit_net(cfg, 3, 100, 20)
    # RESEARCH.md: CIFAR ResNet-18 forward 1.111 GFLOP with a 100-way head; ours adds a 20-way head
    assert exit_flops(net, 3, 32)[-1] == pytest.approx(1.111e9, rel=1e-3)


def test_expected_flops():
    assert expected_flops(np.array([0.5, 0.25, 0.25]), np.array([10.0, 20.0, 40.0])) == pytest.approx(20.0)


def test_registry_is_strict_and_lists_names():
    from trainables.registry import Registry

    reg = Registry("widget")

    @reg.register
    def a():
        return 1

    with pytest.raises(ValueError, match="already registered"):
        reg.register(a)
    with pytest.raises(KeyError, match="known widgets: a"):
        reg["b"]
    assert reg.names() == ["a"] and "a" in reg and reg["a"]() == 1


@pytest.mark.parametrize("scale", [0.0, 0.25, 1.0])
def test_exit_grad_scale_scales_only_early_exit_gradients(scale):
    torch.manual_seed(0)
    base = build_early_exit_net(_cfg("resnet", exit_after=[0, 2]), 3, 10, 4)
    net = build_early_exit_net({**_cfg("resnet", exit_after=[0, 2]), "exit_grad_scale": scale}, 3, 10, 4)
    net.load_state_dict(base.state_dict())
    x = torch.randn(4, 3, 32, 32)

    def stem_grad(model, exit_index):
        model.zero_grad()
        outs = model(x)
        outs[exit_index][0].sum().backward()
        w = model.stages[0][0][0].weight
        return torch.zeros_like(w) if w.grad is None else w.grad.clone()  # detached: no gradient at all

    base.eval(), net.eval()  # batch-norm statistics frozen: identical forward passes
    torch.testing.assert_close(stem_grad(net, 0), scale * stem_grad(base, 0))
    torch.testing.assert_close(stem_grad(net, 1), stem_grad(base, 1))  # the last exit is untouched
    with torch.no_grad():
        for (a, b), (c, d) in zip(net(x), base(x)):
            torch.testing.assert_close(a, c)
