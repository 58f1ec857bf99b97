"""The space registry and each built-in space's own promises (its define-by-run function in a plain
Optuna loop, its networks, its budgets)."""

from __future__ import annotations

import optuna
import pytest

from spaces import get_space, list_spaces, register_space
from trainables.engine.cost import exit_flops
from trainables.engine.family import DataInfo


def data(n_fine=100, n_coarse=20):
    return DataInfo(3, 32, n_fine, n_coarse, (0.5,) * 3, (0.25,) * 3, tuple(map(str, range(n_fine))),
                    tuple(map(str, range(n_coarse))), tuple(i % n_coarse for i in range(n_fine)))


def test_registry_lists_spaces_and_rejects_duplicates():
    assert {"gran_hbn", "branchynet"} <= set(list_spaces())

    def gran_hbn():
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="already registered"):
        register_space(gran_hbn)
    with pytest.raises(KeyError, match="known spaces"):
        get_space("no_such_space")


@pytest.mark.parametrize("name", ["gran_hbn", "branchynet"])
@pytest.mark.parametrize("budget", ["smoke", "full"])
def test_space_runs_in_a_plain_optuna_loop_and_builds(name, budget):
    """The define-by-run function, unchanged, in a plain Optuna loop: every config builds, and the
    space's largest networks cost at least as much as any it samples (the cost normaliser)."""
    space = get_space(name)
    b = space.budget(budget)
    family = space.family(b, space.resolve_options({}))
    largest = max(exit_flops(family.build_model(c, data()), 3, 32)[-1] for c in space.largest_configs(b))
    define = space.search_space(b)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        constants = define(trial)
        config = {**trial.params, **constants}
        net = family.build_model(config, data())
        assert net.n_exits == len(config["exit_after"]) >= 1 and net.levels == family.levels
        assert 1 <= config["epochs"] <= b.epochs
        if budget == "smoke":  # full-budget networks are big: their FLOPs are counted in the smoke case only
            assert exit_flops(net, 3, 32)[-1] <= largest
        study.tell(trial, 0.0)


def test_gran_hbn_fixed_trial():
    space = get_space("gran_hbn")
    params = {"backbone": "alexnet", "alexnet.width": 0.125, "exit_after_stage0": False, "exit_after_stage1": True,
              "head": "linear", "epochs": 2, "lambda_fine": 1.0, "lambda_coarse": 1.0, "fine_start_epoch": 0,
              "fine_ramp_epochs": 0, "coarse_start_epoch": 0, "coarse_ramp_epochs": 0, "exit_grad_scale": 1.0,
              "exit_weight_first": 1.0, "exit_weight_last": 0.5, "optimizer": "adam", "lr_adam": 1e-3, "weight_decay": 1e-4,
              "lr_schedule": "cosine", "label_smoothing": 0.0, "batch_size": 64}
    out = space.search_space(space.budget("smoke"))(optuna.trial.FixedTrial(params))
    assert out == {"exit_after": [1, 2], "lr": 1e-3}


def test_gran_hbn_paper_config_builds_three_exits():
    from spaces.gran_hbn import paper_config

    cfg = paper_config()
    assert cfg["lambda_fine"] == 1.5 and paper_config(ag_hbn=True)["lambda_fine"] == 1.02
    net = get_space("gran_hbn").family(get_space("gran_hbn").budget("full"), {}).build_model(cfg, data())
    assert net.n_exits == 3 and net.levels == ("fine", "coarse")


def test_branchynet_exits_two_to_five_and_resnet110_in_full():
    space = get_space("branchynet")
    seen_exits, seen_blocks = set(), set()
    for budget in ("smoke", "full"):
        define = space.search_space(space.budget(budget))
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
        for _ in range(60):
            t = study.ask()
            constants = define(t)
            cfg = {**t.params, **constants}
            ex = cfg["exit_after"]
            assert ex == sorted(set(ex)) and 2 <= len(ex) <= 5
            seen_exits.add(len(ex))
            seen_blocks.add(cfg.get("resnet.blocks"))
            study.tell(t, 0.0)
    assert seen_exits == {2, 3, 4, 5}
    assert 18 in seen_blocks  # ResNet-110 (6 x 18 + 2 layers) is in the full space
    fam = space.family(space.budget("full"), {})
    net = fam.build_model({"backbone": "resnet", "resnet.width": 16, "resnet.blocks": 18, "resnet.n_stages": 3,
                           "resnet.splits": 2, "exit_after": [0, 1, 5], "head": "conv", "head_convs": 1, "head_hidden": 64},
                          data(10, 2))
    assert net.levels == ("fine",) and len(net(__import__("torch").zeros(1, 3, 32, 32))[0]) == 1


def test_branchynet_options():
    space = get_space("branchynet")
    b = space.budget("smoke")
    assert space.declaration(b).point_objectives == ("accuracy", "latency_ms")
    assert space.declaration(b, {"objective": "flops"}).point_objectives == ("accuracy", "expected_flops")
    assert space.declaration(b, {"objective": "both"}).hv_objectives == ("accuracy", "latency_norm", "expected_flops_norm")
    with pytest.raises(ValueError, match="not one of"):
        space.resolve_options({"objective": "speed"})
    with pytest.raises(ValueError, match="has no option"):
        get_space("gran_hbn").resolve_options({"objective": "latency"})


def test_free_form_options_are_parsed_and_refused_with_their_flag(tmp_path, monkeypatch):
    """An option may take values beyond its choices (a number, a path) through its `parse`; a bad one
    is a ValueError naming the flag, the value as typed and what is accepted."""
    import dataclasses

    from spaces import Option, number_value, path_value

    space = dataclasses.replace(get_space("gran_hbn"), options={
        "max_model_mb": Option(("none",), "none", "size limit", parse=number_value(0), values="none or a number of MB"),
        "weights": Option(("imagenet", "none"), "none", "weights", parse=path_value, values="imagenet, none or PATH"),
        "tree": Option(("superclass", "deep"), "superclass")})
    assert space.resolve_options({}) == {"max_model_mb": "none", "weights": "none", "tree": "superclass"}
    assert space.resolve_options({"max_model_mb": "100"})["max_model_mb"] == "100"
    monkeypatch.chdir(tmp_path)
    assert space.resolve_options({"weights": "w.pt"})["weights"] == str(tmp_path / "w.pt")  # absolute: workers find it
    assert space.resolve_options({"weights": str(tmp_path / "w.pt")})["weights"] == str(tmp_path / "w.pt")  # idempotent
    for value, message in (("abc", "--max-model-mb 'abc': not a number"), ("-5", "above 0"), ("inf", "finite"),
                           ("0", "above 0")):
        with pytest.raises(ValueError, match=message) as exc:
            space.resolve_options({"max_model_mb": value})
        assert "none or a number of MB" in str(exc.value) and "space gran_hbn" in str(exc.value)
    with pytest.raises(ValueError, match="--tree 'wide' is not one of superclass, deep"):
        space.resolve_options({"tree": "wide"})  # an option without a parse takes its choices only
    assert number_value(1, strict=False)("1") == "1"
