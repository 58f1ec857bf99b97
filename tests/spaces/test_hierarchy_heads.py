"""hierarchy_heads: head MACs by hand, only the routed child heads run (and cost what ran), the
routing scored on cached outputs is the rule the live predictor runs, and a staged plan trains the
child heads on a bitwise-frozen backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trainables.engine.cost import count_flops
from trainables.hierarchy_heads.model import HierHeadsNet, build_hierarchy_heads_net, linear_macs, lowrank_macs
from trainables.hierarchy_heads.predictor import RoutedHeads
from trainables.hierarchy_heads.routing import answers, route_top_k, score_settings, thresholds_grid

COARSE_OF = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]  # 10 classes in 4 superclasses of sizes 3, 2, 4, 1
CFG = {"backbone": "resnet", "resnet.width": 4, "resnet.blocks": 1, "resnet.n_stages": 2}


def _net(head: str, **kw) -> HierHeadsNet:
    torch.manual_seed(0)
    net = build_hierarchy_heads_net({**CFG, "head": head, **kw}, 3, COARSE_OF).eval()
    if net.head.hierarchical:  # a superclass head that tells images apart, as a trained one would
        with torch.no_grad():
            net.head.coarse.weight.mul_(40.0)
    return net


def _predictor(net: HierHeadsNet, threshold: float, k: int) -> RoutedHeads:
    x = torch.zeros(1, 3, 16, 16)
    backbone, _ = count_flops(nn.Sequential(*net.stages), x)
    return RoutedHeads(net, threshold, k, (0.5,) * 3, (0.25,) * 3, [f"c{i}" for i in range(10)], backbone)


def _images(n: int = 64) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


@pytest.mark.parametrize("kw", [{"head": "flat"}, {"head": "lowrank", "rank": 3}, {"head": "lowrank", "rank": 3, "nonlinear": True},
                                {"head": "hier", "child_head": "flat"}, {"head": "hier", "child_head": "lowrank", "child_rank": 2}])
def test_head_macs_by_hand_and_by_the_flop_counter(kw):
    net = _net(**kw)
    F = net.feature_channels
    assert F == 8  # resnet width 4, two stages
    m = net.head.macs()
    if kw["head"] == "flat":
        assert m == {"head": F * 10}
    elif kw["head"] == "lowrank":
        assert m == {"head": F * 3 + 3 * 10} == {"head": lowrank_macs(F, 3, 10)}
    elif kw["child_head"] == "flat":
        assert m == {"coarse": F * 4, "children": [F * 3, F * 2, F * 4, F * 1]}
    else:  # rank 2, clipped to the group's size (a one-class group gets rank 1)
        assert m == {"coarse": F * 4, "children": [F * 2 + 2 * 3, F * 2 + 2 * 2, F * 2 + 2 * 4, F * 1 + 1 * 1]}
    h = net.backbone(torch.zeros(1, 3, 16, 16))
    flops, _ = count_flops(net.head, h)  # every head computed, as in training and the calibration cache
    assert flops == 2 * net.head.all_macs() == 2 * linear_macs(net.head)


def _count_child_calls(net: HierHeadsNet) -> list[list[int]]:
    calls: list[list[int]] = [[] for _ in net.head.children_heads]
    for g, child in enumerate(net.head.children_heads):
        child.register_forward_hook(lambda mod, inp, out, g=g: calls[g].append(len(inp[0])))
    return calls


def test_a_mixed_batch_runs_only_the_routed_child_heads_and_costs_what_ran():
    net = _net("hier", child_head="flat")
    calls = _count_child_calls(net)
    images = _images()
    pred = _predictor(net, threshold=2.0, k=1).predict(images)  # hard routing: one child head per image
    x = (images.float() - 0.5 * 255) / (0.25 * 255)
    with torch.no_grad():
        f = net.head.features(net.backbone(x))
        top = net.head.coarse(f).argmax(1).numpy()
    assert len(set(top.tolist())) >= 2, "the batch must mix superclasses"
    for g in range(4):  # each routed head ran once, on exactly its images; the others never ran
        assert calls[g] == ([int((top == g).sum())] if (top == g).any() else [])
    assert all(COARSE_OF[c] == s for c, s in zip(pred.label, top))  # the answer lies in the routed superclass
    F = net.feature_channels
    backbone, _ = count_flops(nn.Sequential(*net.stages), torch.zeros(1, 3, 16, 16))
    sizes = np.bincount(COARSE_OF)
    hand = F * 4 + F * sizes[top]  # superclass head + the routed child head, by hand
    assert np.array_equal(pred.cost["head_macs"], hand)
    assert np.array_equal(pred.cost["flops"], backbone + 2 * hand)

    for c in calls:
        c.clear()
    pred = _predictor(net, threshold=-1.0, k=2).predict(images)  # unsure everywhere: two heads per image
    assert sum(sum(c) for c in calls) == 2 * len(images)
    assert all(len(c) <= 1 for c in calls)  # still one call per head per batch


def test_routing_scored_on_cached_outputs_is_what_the_predictor_runs():
    net = _net("hier", child_head="lowrank", child_rank=2)
    images = _images(96)
    x = (images.float() - 0.5 * 255) / (0.25 * 255)
    with torch.no_grad():
        (fine, coarse), = net(x)  # what the calibration cache holds
    m = net.head.macs()
    routed = route_top_k(fine.numpy(), coarse.numpy(), COARSE_OF, [1, 2, 3, 4], m["coarse"], m["children"])
    grid = thresholds_grid(routed.entropy, 8)
    labels = torch.randint(0, 10, (96,), generator=torch.Generator().manual_seed(2)).numpy()
    scores = score_settings(routed, grid, labels, COARSE_OF)
    for i in range(0, len(scores["accuracy"]), 3):
        t, k = float(scores["threshold"][i]), int(scores["k"][i])
        want_label, want_macs = answers(routed, t, k)
        pred = _predictor(net, t, k).predict(images)
        assert np.array_equal(pred.label, want_label), (t, k)
        assert np.allclose(pred.cost["head_macs"], want_macs), (t, k)
        assert scores["accuracy"][i] == pytest.approx((want_label == labels).mean())
        assert scores["head_macs"][i] == pytest.approx(want_macs.mean())
    # k = every superclass at t < 0 is the full product rule: argmax of the joint over all classes
    full, _ = answers(routed, -1.0, 4)
    assert np.array_equal(full, fine.numpy().argmax(1))


def test_flat_head_reports_the_implied_superclass():
    net = _net("flat")
    (fine, coarse), = net(torch.randn(5, 3, 16, 16))
    p = torch.softmax(fine, 1)
    want = torch.stack([p[:, [c for c, s in enumerate(COARSE_OF) if s == g]].sum(1) for g in range(4)], 1)
    assert torch.allclose(coarse.exp(), want, atol=1e-5)


def test_staged_plan_trains_child_heads_on_a_bitwise_frozen_backbone(tmp_path):
    from spaces import get_space
    from spaces.hierarchy_heads import HierarchyHeads
    from tests.trainables.test_loop import tiny_ctx
    from trainables.engine.loop import run_trial
    from trainables.safe_load import load_torch

    space = get_space("hierarchy_heads")
    base = space.family(space.budget("smoke"), {})

    class Snap(HierarchyHeads):
        after: dict[str, dict[str, torch.Tensor]] = {}

        def stage_done(self, stage, net, calib, inputs):
            self.after[stage.name] = {k: v.detach().clone() for k, v in net.state_dict().items()}

    fam = Snap(base.declaration, base.calibration, base.reference_configs)
    cfg = {**CFG, "head": "hier", "child_head": "flat", "training": "staged", "epochs": 3, "child_epochs": 2,
           "stop_patience": 0, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4, "lr_schedule": "cosine", "batch_size": 64}
    ctx = tiny_ctx(tmp_path)
    run_trial(fam, cfg, ctx)
    before = fam.after["superclass"]
    after = load_torch(tmp_path / "trial" / "model.pt")["state_dict"]
    frozen = [k for k in before if k.startswith(("stages.", "head.coarse."))]
    assert any("running_mean" in k for k in frozen)
    for k in frozen:  # backbone weights, BatchNorm statistics and counters, the superclass head
        assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head.children_heads."))
    assert [h["epoch"] for h in ctx.reporter.history] == [1, 2, 3]


# -- --tree induced ----------------------------------------------------------------------------------

def test_induced_groups_by_hand():
    from trainables.hierarchy_heads.induce import agglomerate, induce_groups, weight_similarity

    w = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.9, 0.2], [0.0, 0.0, 1.0]])
    assert induce_groups(weight_similarity(w), 3).tolist() == [0, 0, 1, 1, 2]
    assert induce_groups(weight_similarity(w), 1).tolist() == [0] * 5
    assert induce_groups(weight_similarity(w), 5).tolist() == [0, 1, 2, 3, 4]
    # average linkage: {0,1} joins {2} (mean distance 2) before {3} (mean 9)
    d = np.array([[0, 1, 2, 9], [1, 0, 2, 9], [2, 2, 0, 9], [9, 9, 9, 0]], dtype=float)
    assert agglomerate(d, 2).tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="cannot group"):
        agglomerate(d, 5)


def _induced_family():
    from spaces import get_space

    space = get_space("hierarchy_heads")
    return space.family(space.budget("smoke"), space.resolve_options({"tree": "induced"}))


INDUCED_CFG = {**CFG, "head": "hier", "child_head": "flat", "training": "staged", "epochs": 3, "probe_epochs": 1,
               "induced_k": 3, "stop_patience": 0, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4,
               "lr_schedule": "cosine", "batch_size": 64}


def test_induced_tree_trains_a_probe_groups_its_classes_and_resumes_on_that_grouping(tmp_path):
    """The probe stage's weight vectors give the grouping; the routed stage, the caches, model.pt and
    the loaded predictor all use it, and a trial resumed in the routed stage picks it up again."""
    import json

    from tests.trainables.test_plans import Crash, CrashingReporter
    from trainables.exits import ExitCache
    from trainables.hierarchy_heads.induce import induce_groups, weight_similarity
    from trainables.engine.loop import LocalReporter, TrialContext, run_trial
    from trainables.safe_load import load_torch

    straight = tmp_path / "straight"
    run_trial(_induced_family(), dict(INDUCED_CFG), TrialContext(trial_dir=str(straight), reporter=LocalReporter(straight),
                                                                 data="synthetic", data_size="tiny", cpu_threads=1))
    payload = load_torch(straight / "model.pt")
    sd = payload["state_dict"]
    grouping = sd["head.grouping"].tolist()
    assert bool(sd["head.ready"]) and len(set(grouping)) == 3
    # the probe is frozen in the routed stage: its final weights are those the grouping came from
    assert grouping == induce_groups(weight_similarity(sd["head.probe.weight"].numpy()), 3).tolist()
    assert ExitCache.load(straight / "exit_cache_calibration.npz").extras["coarse_of"].tolist() == grouping
    points = json.loads((straight / "points.json").read_text())
    groups = json.loads(points["trial"]["induced_groups"])
    assert points["trial"]["tree"] == "induced" and sorted(len(g) for g in groups) == sorted(np.bincount(grouping).tolist())
    fam = _induced_family()
    clf = fam.predictor({"routing_threshold": 2.0, "routing_k": 1}, straight / "model.pt")
    assert clf.model.head.coarse_of == grouping and len(clf.model.head.children_heads) == 3

    d = tmp_path / "crashed"
    reporter = CrashingReporter(d, at=2)  # plan epoch 2: the first epoch of the routed stage
    ctx = TrialContext(trial_dir=str(d), reporter=reporter, data="synthetic", data_size="tiny", cpu_threads=1)
    with pytest.raises(Crash):
        run_trial(_induced_family(), dict(INDUCED_CFG), ctx)
    reporter.at = None
    run_trial(_induced_family(), dict(INDUCED_CFG), ctx)
    b = load_torch(d / "model.pt")["state_dict"]
    assert sd.keys() == b.keys() and all(torch.equal(sd[k], b[k]) for k in sd)  # bit for bit the straight run


def test_a_flat_head_in_an_induced_run_routes_on_no_tree(tmp_path):
    import json

    from trainables.engine.loop import LocalReporter, TrialContext, run_trial

    cfg = {**INDUCED_CFG, "head": "flat", "training": "joint", "epochs": 1}
    run_trial(_induced_family(), cfg, TrialContext(trial_dir=str(tmp_path), reporter=LocalReporter(tmp_path),
                                                   data="synthetic", data_size="tiny", cpu_threads=1))
    trial = json.loads((tmp_path / "points.json").read_text())["trial"]
    assert trial["head_type"] == "flat" and trial["tree"] == "none" and trial["induced_groups"] == ""
