"""Every backbone's tiny variant runs forward and backward with one or two answer levels; FLOP
counts match a hand count and count only the heads built (latency: tests/trainables/test_latency.py)."""

import numpy as np
import pytest
import torch
from torch import nn

from trainables.engine.cost import count_flops, exit_flops, expected_flops, plain_cost, segment_flops
from trainables.models import TINY_CONFIGS, build_early_exit_net, list_backbones, register_backbone
from trainables.models.early_exit import HEADS


TWO = {"fine": 10, "coarse": 4}
ONE = {"fine": 10}


def _cfg(name, head="linear", exit_after=None):
    cfg = {"backbone": name, **{f"{name}.{k}": v for k, v in TINY_CONFIGS[name].items()}, "head": head, "head_hidden": 16}
    if exit_after is not None:
        cfg["exit_after"] = exit_after
    return cfg


@pytest.mark.parametrize("name", list_backbones())
@pytest.mark.parametrize("head", HEADS)
def test_tiny_forward_backward(name, head):
    net = build_early_exit_net(_cfg(name, head), in_channels=3, outputs=TWO)
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
    net = build_early_exit_net(_cfg(name), in_channels=1, outputs={"fine": 10, "coarse": 5})
    assert [f.shape for f, _ in net(torch.randn(2, 1, 28, 28))] == [(2, 10)] * net.n_exits


def test_exit_after_drops_later_stages():
    net = build_early_exit_net(_cfg("resnet", exit_after=[0, 1]), 3, TWO)
    assert net.n_exits == 2 and len(net.stages) == 2


def test_one_level_exits_build_one_head_and_count_only_it():
    one = build_early_exit_net(_cfg("resnet"), 3, ONE)
    two = build_early_exit_net(_cfg("resnet"), 3, TWO)
    assert all(len(out) == 1 for out in one(torch.randn(2, 3, 32, 32)))
    s1, h1 = segment_flops(one, 3, 32)
    s2, h2 = segment_flops(two, 3, 32)
    assert np.array_equal(s1, s2) and (h1 < h2).all()  # same backbone; the coarse heads cost extra
    assert plain_cost(s1, h1) == s1.sum() + h1[-1] < exit_flops(one, 3, 32)[-1]


@pytest.mark.parametrize("convs", [1, 2])
def test_branchy_conv_branch_has_its_conv_layers(convs):
    net = build_early_exit_net({**_cfg("resnet", head="conv"), "head_convs": convs}, 3, ONE)
    head = net.heads[0].heads["fine"]
    assert sum(isinstance(m, nn.Conv2d) for m in head.modules()) == convs


def test_finer_cut_points_keep_the_network():
    """resnet splits and alexnet layer cuts give more exit positions over the very same layers."""
    from trainables.models import get_backbone

    a, b = get_backbone("resnet", 3, width=8, blocks=4, n_stages=3), get_backbone("resnet", 3, width=8, blocks=4, n_stages=3, splits=2)
    assert (len(a), len(b)) == (3, 6) and b.stage_channels == [8, 8, 16, 16, 32, 32]
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    c, d = get_backbone("alexnet", 3, width=0.25), get_backbone("alexnet", 3, width=0.25, cuts="layers")
    assert (len(c), len(d)) == (3, 5)
    assert [type(m) for m in c.modules() if not isinstance(m, nn.Sequential)][1:] == \
        [type(m) for m in d.modules() if not isinstance(m, nn.Sequential)][1:]  # the same layers, in order
    x = torch.randn(2, 3, 32, 32)
    hc, hd = x, x
    for st in c.stages:
        hc = st(hc)
    for st in d.stages:
        hd = st(hd)
    assert hc.shape == hd.shape


def test_resnet110_depth():
    from trainables.models import get_backbone

    net = get_backbone("resnet", 3, width=16, blocks=18, n_stages=3, splits=2)
    convs = sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in net.modules())
    assert convs == 109  # 1 stem + 3 stages x 18 blocks x 2: with the classifier, He et al.'s 6n+2 = 110 layers
    assert 1.7e6 < sum(p.numel() for p in net.parameters()) < 1.75e6  # ResNet-110: 1.7M parameters


def test_duplicate_backbone_name_raises():
    with pytest.raises(ValueError):

        @register_backbone(tiny={})
        def resnet(in_channels):  # noqa: F811
            raise AssertionError


def test_flop_count_matches_hand_count():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    flops, _ = count_flops(net, torch.zeros(1, 3, 4, 4))
    conv = 2 * (3 * 3 * 3) * 8 * 4 * 4  # 2 x MACs: k*k*cin per output, cout*H*W outputs
    lin = 2 * 128 * 5
    assert flops == conv + lin


def test_exit_flops_cumulative_with_heads():
    net = build_early_exit_net(_cfg("resnet"), 3, TWO)
    flops = exit_flops(net, 3, 32)
    assert (np.diff(flops) > 0).all()
    total_full, _ = count_flops(net, torch.zeros(1, 3, 32, 32))
    # running the whole network computes every head once: the cost to the last exit
    assert flops[-1] == total_full


def test_resnet18_reference_flops():
    cfg = {"backbone": "resnet", "resnet.width": 64, "resnet.blocks": 2, "resnet.n_stages": 4, "exit_after": [3]}
    net = build_early_exit_net(cfg, 3, {"fine": 100})
    # RESEARCH.md: CIFAR ResNet-18 forward 1.111 GFLOP with a 100-way head
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
    base = build_early_exit_net(_cfg("resnet", exit_after=[0, 2]), 3, TWO)
    net = build_early_exit_net({**_cfg("resnet", exit_after=[0, 2]), "exit_grad_scale": scale}, 3, TWO)
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
