"""better_mistakes: its space covers every loss family with its parameter, each loss trains, the
embedding network ranks classes by nearest class vector, its metrics are the metrics module's,
and a dataset without the requested tree is refused before anything runs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import optuna
import pytest
import torch

from spaces import get_space
from spaces.better_mistakes import LOSSES, SCHEDULES
from trainables.data import get_dataset
from trainables.exits import ExitCache
from trainables.engine.family import DataInfo, TrialInputs, UnsuitableData
from trainables.metrics import hierarchical_metrics

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
DATA = DataInfo.of(get_dataset("synthetic", size="tiny"))
CFG = {"backbone": "resnet", "resnet.width": 4, "resnet.blocks": 1, "resnet.n_stages": 3, "exit_after": [2],
       "head": "linear"}
PARAMS = {"ce": {"label_smoothing": 0.1}, "hxe": {"hxe_alpha": 0.6}, "soft": {"soft_beta": 8.0},
          "granular": {"lambda_fine": 1.0, "lambda_coarse": 0.5}, "embedding": {"embedding_ce_weight": 0.1}}


def family(tree="superclass"):
    space = get_space("better_mistakes")
    return space.family(space.budget("smoke"), {"tree": tree})


def test_space_searches_every_loss_family_and_the_issues_schedules():
    space = get_space("better_mistakes")
    define = space.search_space(space.budget("full"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_losses, seen_sched, seen_backbones = set(), set(), set()
    for _ in range(80):
        t = study.ask()
        constants = define(t)
        cfg = {**t.params, **constants}
        seen_losses.add(cfg["loss"])
        seen_sched.add(cfg["lr_schedule"])
        seen_backbones.add(cfg["backbone"])
        param = {"ce": "label_smoothing", "hxe": "hxe_alpha", "soft": "soft_beta", "granular": "lambda_coarse",
                 "embedding": "embedding_ce_weight"}[cfg["loss"]]
        assert param in cfg
        study.tell(t, 0.0)
    assert seen_losses == set(LOSSES) and seen_sched == set(SCHEDULES) and seen_backbones == {"resnet", "plainnet"}


def test_plain11_has_its_eleven_layers():
    fam = family()
    net = fam.build_model({"backbone": "plainnet", "plainnet.width": 1.0, "exit_after": [3], "head": "mlp",
                           "head_hidden": 512, "loss": "ce"}, DataInfo.of(get_dataset("synthetic", size="tiny")))
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    linears = sum(isinstance(m, torch.nn.Linear) for m in net.modules())
    assert (convs, linears) == (9, 2)  # 9 conv + fc 512 + classifier


@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_trains_a_step(loss):
    fam = family()
    cfg = {**CFG, "loss": loss, **PARAMS[loss]}
    net = fam.build_model(cfg, DATA)
    fn = fam.make_loss(TrialInputs(cfg, 0, DATA), net.n_exits)
    x = torch.randn(8, 3, 32, 32)
    y = torch.randint(0, DATA.n_fine, (8,))
    out = net(x)
    assert len(out[-1]) == (2 if loss == "granular" else 1)
    value = fn(out, y, torch.as_tensor(DATA.coarse_of)[y], 0.0)
    assert torch.isfinite(value) and value.item() > 0
    value.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_embedding_network_outputs_cosines_to_the_class_vectors():
    from trainables.hier_losses import class_embeddings

    fam = family()
    net = fam.build_model({**CFG, "loss": "embedding"}, DATA).eval()
    x = torch.randn(6, 3, 32, 32)
    head = net.heads[-1].heads["fine"]
    with torch.no_grad():
        scores = net(x)[-1][0]
        h = x
        for stage in net.stages:
            h = stage(h)
        features = torch.nn.functional.normalize(torch.nn.Sequential(*list(head)[:-1])(h), dim=1)
    e = torch.as_tensor(class_embeddings(DATA.hierarchy), dtype=torch.float32)
    e = e / e.norm(dim=1, keepdim=True)
    assert scores.shape == (6, DATA.n_fine) and (scores.abs() <= 1 + 1e-5).all()
    torch.testing.assert_close(scores, features @ e.T, atol=1e-5, rtol=1e-5)
    nearest = torch.cdist(features, e).argmin(dim=1)  # unit vectors: highest cosine = nearest class vector
    assert torch.equal(scores.argmax(dim=1), nearest)


def test_metrics_are_the_metrics_modules_on_the_last_exits_scores():
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, DATA.n_fine, n)
    logits = rng.normal(size=(1, n, DATA.n_fine)).astype(np.float32)
    logits[0, np.arange(n), y] += 2.0
    cache = ExitCache(("fine",), {"fine": logits}, {"fine": y}, {"flops": np.array([123.0])})
    ev = family().evaluate(cache, TrialInputs({"loss": "ce"}, 0, DATA))
    m = hierarchical_metrics(logits[0], y, DATA.hierarchy.distance_matrix(), coarse_of=DATA.coarse_of)
    assert ev.signal == {"top1_error": m["top1_error"], "mistake_severity": m["mistake_severity"], "expected_flops": 123.0}
    out = family().finish(ev, cache, cache, TrialInputs({"loss": "hxe", "hxe_alpha": 0.3}, 0, DATA))
    assert [r["policy"] for r in out.points] == ["hxe", "hxe"] and out.points[0]["loss_param"] == 0.3
    assert out.points[0]["hdist_5"] == pytest.approx(m["hdist@5"]) and out.trial["tree"] == "superclass"


def test_deep_tree_on_a_dataset_without_one_is_refused():
    with pytest.raises(UnsuitableData, match="--tree superclass"):
        family("deep").check(DATA)
    p = subprocess.run([sys.executable, "-m", "search.run", "--space", "better_mistakes", "--data", "synthetic",
                        "--tree", "deep", "--data-size", "tiny", "--storage", "/nonexistent-never-made"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no deeper class tree" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.real_data
def test_wordnet_tree_is_used_when_asked():
    """With --tree deep the family takes the dataset's deeper tree (cifar100: the WordNet tree)."""
    import json
    import pathlib

    folder = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar100"
    if not (folder / "wordnet-hierarchy.txt").is_file() or not (folder / "fine_to_coarse.json").is_file():
        pytest.skip(f"real CIFAR-100 label files not present under {folder}")
    from trainables.hierarchy import Hierarchy

    names = json.loads((folder / "fine_to_coarse.json").read_text())
    two = Hierarchy.from_fine_to_coarse(names["fine_to_coarse"], names["fine_label_names"], names["coarse_label_names"])
    tree = Hierarchy.from_indented_file(folder / "wordnet-hierarchy.txt", names["fine_label_names"],
                                        coarse_of=names["fine_to_coarse"], coarse_names=names["coarse_label_names"])
    data = DATA._replace(n_fine=100, n_coarse=20, hierarchy=two, tree=tree, coarse_of=tuple(names["fine_to_coarse"]),
                         fine_names=tuple(names["fine_label_names"]), coarse_names=tuple(names["coarse_label_names"]))
    deep, flat = family("deep"), family("superclass")
    deep.check(data)
    assert deep.tree(data) is tree and flat.tree(data) is two and int(tree.leaf_depths.max()) == 8
    # the losses take that tree: HXE over 8 levels differs from HXE over 2
    y = torch.arange(8)
    z = torch.randn(8, 100)
    cfg = {"loss": "hxe", "hxe_alpha": 0.5}
    out = [(z,)]
    assert deep.make_loss(TrialInputs(cfg, 0, data), 1)(out, y, None, 0) != flat.make_loss(TrialInputs(cfg, 0, data), 1)(out, y, None, 0)
