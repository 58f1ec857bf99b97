"""The transfer space: its ten torchvision backbones, where their weights come from (nothing is ever
downloaded here), its search space and options, its training plans (early stopping, the plateau
schedule on scripted sequences), multi-label trials with thresholds tuned on calibration, and the
commands that export a backbone and label a folder of images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from spaces import get_space
from spaces.transfer import ALL_BACKBONES, AUGMENT, BACKBONES, LR, Transfer, backbone_choices, declaration
from trainables.data_info import DataInfo
from trainables.engine.family import TrialInputs, UnsuitableData
from trainables.transfer.backbones import (BODY, WeightsError, fitting_backbones, hub_file, load_weights,
                                           read_state_dict, saved_bytes)
from trainables.transfer.model import TransferNet, weight_bytes

ROOT = Path(__file__).resolve().parents[2]
SPACE = get_space("transfer")


def info(n_classes=5, multi=False, size=32) -> DataInfo:
    names = tuple(str(i) for i in range(n_classes))
    return DataInfo(3, size, n_classes, 1, (0.5,) * 3, (0.25,) * 3, names, ("all",), (0,) * n_classes, multi_label=multi)


def fam(budget="smoke", **options) -> Transfer:
    return SPACE.family(SPACE.budget(budget), SPACE.resolve_options(options))


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to download weights fails the test."""
    def refuse(*a, **k):
        raise AssertionError("a test tried to download weights")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


# -- the backbones --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_each_backbone_builds_and_trains_one_step_at_a_tiny_size(name):
    torch.manual_seed(0)
    net = TransferNet(name, 3)
    assert net.feature_width == BODY[name][1]
    assert sum(t.nelement() * t.element_size() for t in net.backbone.state_dict().values()) == BODY[name][0]
    assert all(k.startswith(("backbone.", "head.")) for k in net.state_dict())
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    before = net.head.weight.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    (logits,), = net(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    opt.step()
    assert logits.shape == (2, 3) and torch.isfinite(loss)
    assert not torch.equal(before, net.head.weight)


def test_flops_are_counted_at_the_input_side():
    from trainables.engine.cost import segment_flops

    net = TransferNet("shufflenet_v2_x1_0", 4)
    (body32,), (head,) = segment_flops(net, 3, 32)
    (body64,), _ = segment_flops(net, 3, 64)
    assert head == 2 * 1024 * 4 and 3.5 < body64 / body32 < 4.5
    assert net.training  # counting leaves the network as it was


# -- weights: the hub cache, a state dict, none ------------------------------------------------------

@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_imagenet_weights_come_from_the_local_hub_cache(torch_home):
    import torchvision

    name = "shufflenet_v2_x1_0"
    assert hub_file(name) == torch_home / "hub" / "checkpoints" / "shufflenetv2_x1-5666bf0f80.pth"
    f = fam(weights="imagenet", backbone=name)
    with pytest.raises(UnsuitableData) as exc:
        f.fetch(download=False)
    for part in (str(hub_file(name)), "--download", "--weights none"):
        assert part in str(exc.value)
    reference = torchvision.models.get_model(name, weights=None, num_classes=1000)  # torchvision's file: fc of 1000 classes
    hub_file(name).parent.mkdir(parents=True)
    torch.save(reference.state_dict(), hub_file(name))
    f.fetch(download=False)  # present: nothing to do
    net = f.build_model({"backbone": name}, info())
    f.initialise(net, TrialInputs({"backbone": name}, 0, info()))
    assert torch.equal(net.backbone.conv1[0].weight, reference.conv1[0].weight)
    assert net.head.weight.shape == (5, 1024) and "imagenet" in net.weights_from
    with pytest.raises(UnsuitableData, match="regnet_y_400mf"):
        fam(weights="imagenet", backbone="regnet_y_400mf").fetch(download=False)
    with pytest.raises(UnsuitableData, match="mobilenet_v3_large"):  # every backbone the search may sample needs its file
        fam(weights="imagenet").fetch(download=False)


class Payload:
    """Not a tensor: a pickle holding it is refused, and its __reduce__ never runs."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/exitsearch-transfer-pickle-ran",))


def test_a_pickle_that_is_not_plain_tensors_is_refused(tmp_path):
    marker = Path("/tmp/exitsearch-transfer-pickle-ran")
    marker.unlink(missing_ok=True)
    bad = tmp_path / "evil.pt"
    torch.save({"conv1.0.weight": torch.zeros(1), "x": Payload()}, bad)
    with pytest.raises(WeightsError, match="was not opened: it holds objects a safe loader"):
        read_state_dict(bad)
    assert not marker.exists()
    listy = tmp_path / "list.pt"
    torch.save({"conv1.0.weight": [1, 2, 3]}, listy)
    with pytest.raises(WeightsError, match="is not a state dict"):
        read_state_dict(listy)
    with pytest.raises(UnsuitableData, match="--weights none"):
        fam(weights=str(bad)).fetch(download=False)
    with pytest.raises(UnsuitableData, match="was not opened"):  # said first, before the run starts
        fam(weights=str(bad)).check(info())
    with pytest.raises(WeightsError, match="no weights file"):
        read_state_dict(tmp_path / "absent.pt")


def test_looking_backbones_and_sizes_up_leaves_the_seeded_random_stream_alone():
    """The first trial of a process looks them up (then they are cached): a trial's initialisation must
    not depend on whether it was first."""
    from trainables.transfer import backbones, model

    backbones._shapes.cache_clear()
    model.weight_bytes.cache_clear()
    torch.manual_seed(3)
    fitting_backbones(TransferNet("regnet_y_400mf", 2).backbone.state_dict())  # RegNet is built for real, not on meta
    weight_bytes("shufflenet_v2_x1_0", 4)
    after = torch.rand(3)
    torch.manual_seed(3)
    TransferNet("regnet_y_400mf", 2)
    assert torch.equal(after, torch.rand(3))


def test_a_state_dict_path_fixes_the_backbones_it_fits(tmp_path):
    net = TransferNet("shufflenet_v2_x1_0", 7)
    path = tmp_path / "w.pt"
    torch.save(net.backbone.state_dict(), path)
    assert fitting_backbones(read_state_dict(path)) == ["shufflenet_v2_x1_0"]
    f = fam(weights=str(path))
    f.fetch(download=False)
    assert f.candidates() == ["shufflenet_v2_x1_0"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        SPACE.search_space(SPACE.budget("smoke"), {"weights": str(path)})(trial)
        assert trial.params["backbone"] == "shufflenet_v2_x1_0" and "training" in trial.params
    other = TransferNet("shufflenet_v2_x1_0", 3)
    load_weights(other.backbone, "shufflenet_v2_x1_0", str(path))
    assert torch.equal(other.backbone.conv1[0].weight, net.backbone.conv1[0].weight)
    with pytest.raises(WeightsError, match="does not hold resnet18's weights.*it fits shufflenet_v2_x1_0"):
        load_weights(TransferNet("resnet18", 3).backbone, "resnet18", str(path))
    with pytest.raises(UnsuitableData, match="no backbone of the transfer space is left"):
        fam(weights=str(path), backbone="resnet18").check(info())


# -- the space: options, define, plans --------------------------------------------------------------

def test_define_replays_and_respects_the_options():
    budget = SPACE.budget("full")
    seen = set()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(40):
        trial = study.ask()
        const = SPACE.search_space(budget, {"max_model_mb": "20", "input_size": "96"})(trial)
        seen.add(trial.params["backbone"])
        assert const["input_size"] == 96 and "input_size" not in trial.params and "training" not in trial.params
        assert {"optimizer", "precision", "augment", "lr_schedule", "stop_patience", "batch_size"} <= set(trial.params)
    # backbones whose tensors alone exceed 20 MB are never proposed
    assert seen <= {"regnet_y_400mf", "shufflenet_v2_x1_0", "efficientnet_b0", "mobilenet_v3_large"} and len(seen) >= 3
    assert backbone_choices(budget, {"backbone": "resnet50"}) == ["resnet50"]
    assert set(backbone_choices(SPACE.budget("smoke"), {})) == set(BACKBONES["smoke"])


def test_the_optimiser_augmentation_and_training_can_be_set():
    budget = SPACE.budget("full")
    options = SPACE.resolve_options({"optimizer": "adam", "augment": "flip_crop", "training": "finetune",
                                     "weights": "imagenet"})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    for _ in range(12):
        trial = study.ask()
        const = SPACE.search_space(budget, options)(trial)
        assert (trial.params["optimizer"], trial.params["augment"], trial.params["training"]) == ("adam", "flip_crop",
                                                                                                 "finetune")
        assert 1e-4 <= const["lr"] == trial.params["lr_adam"] <= 3e-3
    searched = set()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))  # a study's categories are fixed
    for _ in range(40):
        trial = study.ask()
        SPACE.search_space(budget, {"weights": "imagenet"})(trial)
        searched.add((trial.params["optimizer"], trial.params["augment"], trial.params["training"]))
    assert {o for o, _, _ in searched} == set(LR) and {a for _, a, _ in searched} == set(AUGMENT)
    assert {t for _, _, t in searched} == {"frozen", "finetune", "frozen_then_finetune"}
    for bad in ({"optimizer": "lamb"}, {"augment": "mixup"}, {"training": "half"}):
        with pytest.raises(ValueError, match="is not one of"):
            SPACE.resolve_options(bad)
    with pytest.raises(UnsuitableData, match="--training frozen trains with the backbone frozen, which needs starting weights"):
        fam(training="frozen").check(info())
    fam(training="finetune").check(info())  # from scratch it fine-tunes anyway


def test_the_largest_config_costs_the_most():
    """The cost normaliser: no smoke config the define proposes costs more FLOPs than the largest."""
    from trainables.engine.cost import exit_flops
    from spaces.transfer import largest_configs

    b = SPACE.budget("smoke")
    f = fam()
    data = info()
    largest = max(exit_flops(f.build_model(c, data), 3, f.input_size(c, data))[-1] for c in largest_configs(b))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        constants = SPACE.search_space(b)(trial)
        seen.add({**trial.params, **constants}["backbone"])
    for name in seen:
        config = {"backbone": name, "input_size": 32}
        assert exit_flops(f.build_model(config, data), 3, 32)[-1] <= largest


def test_the_model_size_bound(tmp_path):
    with pytest.raises(UnsuitableData, match="shufflenet_v2_x1_0, is 5.1 MB without its head"):
        fam(max_model_mb="1").check(info())
    f = fam(max_model_mb="6", backbone="shufflenet_v2_x1_0")  # 5.1 MB of backbone: proposed
    config = {"backbone": "shufflenet_v2_x1_0", "epochs": 1}
    f.plan(TrialInputs(config, 0, info(10)))  # with 10 classes: 5.1 MB, trained
    with pytest.raises(UnsuitableData, match=r"with a head for 1000 classes is 9\.\d\d MB on disk, above --max-model-mb 6"):
        f.plan(TrialInputs(config, 0, info(1000)))  # 1024 x 1000 more weights: refused before training
    net = TransferNet("shufflenet_v2_x1_0", 10)
    with open(tmp_path / "m.pt", "wb") as fh:  # a file object: torch.save names the archive's records "archive/..."
        torch.save(net.state_dict(), fh)
    assert saved_bytes(net) == os.path.getsize(tmp_path / "m.pt") == weight_bytes("shufflenet_v2_x1_0", 10)
    for bad, msg in (("abc", "not a number"), ("-1", "above 0")):
        with pytest.raises(ValueError, match=msg):
            SPACE.resolve_options({"max_model_mb": bad})
    with pytest.raises(ValueError, match="whole number of pixels"):
        SPACE.resolve_options({"input_size": "big"})


def test_plans_freeze_fine_tune_or_both():
    f = fam(weights="imagenet")
    plan = f.plan(TrialInputs({"backbone": "resnet18", "epochs": 5, "training": "frozen_then_finetune", "frozen_epochs": 2,
                               "stop_patience": 3, "stop_min_delta": 0.01}, 0, info()))
    assert [(s.name, s.epochs, s.trains) for s in plan.stages] == [("frozen", 2, ("head",)), ("finetune", 3, None)]
    assert plan.stages[1].stop.patience == 3 and plan.stages[1].stop.min_delta == 0.01 and plan.stages[1].stop.metric == "macro_f1"
    plan = f.plan(TrialInputs({"backbone": "resnet18", "epochs": 2, "training": "frozen"}, 0, info()))
    assert [(s.name, s.trains, s.stop) for s in plan.stages] == [("frozen", ("head",), None)]
    assert fam(metric="accuracy").plan(TrialInputs({"backbone": "resnet18", "epochs": 2, "stop_patience": 1}, 0,
                                                   info())).stages[0].stop.metric == "accuracy"
    assert declaration("accuracy").objectives == {"accuracy": "max", "expected_flops": "min", "train_seconds": "min"}


class Scripted(Transfer):
    """The calibration metric and loss follow scripts, to check the stop rule and the plateau schedule."""

    METRIC = [0.50, 0.60, 0.605, 0.58, 0.70, 0.9]  # stops after the fourth epoch: 0.605 is not 0.01 better than 0.6
    LOSS = [1.0, 0.9, 0.95, 0.97, 0.8, 0.8]

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.evaluated = 0

    def evaluate(self, calib, inputs):
        ev = super().evaluate(calib, inputs)
        i = min(self.evaluated, 4) if self.evaluated < 4 else 1  # after the stop, the restored epoch is evaluated again
        self.evaluated += 1
        value = self.METRIC[i]
        return ev._replace(signal={**ev.signal, "macro_f1": value}, curve={**ev.curve, "macro_f1": value})

    def make_loss(self, inputs, n_exits):
        train = super().make_loss(inputs, n_exits)

        def loss(outputs, yf, yc, epoch):
            if torch.is_grad_enabled():
                return train(outputs, yf, yc, epoch)
            return torch.tensor(self.LOSS[int(round(epoch)) - 1])  # the calibration loss of plan epoch `epoch`
        return loss


def test_early_stopping_and_the_plateau_schedule_on_scripted_sequences(tmp_path):
    from trainables.engine.loop import LocalReporter, TrialContext, run_trial
    from trainables.exits import ExitCache

    base = fam()
    f = Scripted(base.declaration, SPACE.budget("smoke"), base.options)
    config = {"backbone": "shufflenet_v2_x1_0", "input_size": 16, "epochs": 6, "optimizer": "adam", "lr": 1e-3,
              "weight_decay": 0.0, "lr_schedule": "plateau", "plateau_factor": 0.5, "plateau_patience": 1,
              "stop_patience": 2, "stop_min_delta": 0.01, "precision": "fp32", "augment": "flip_crop", "batch_size": 100}
    d = tmp_path / "t"
    ctx = TrialContext(trial_dir=str(d), reporter=LocalReporter(d), data="synthetic", data_size="tiny", cpu_threads=1)
    m = run_trial(f, config, ctx)
    curves = json.loads((d / "curves.json").read_text())
    assert [c["epoch"] for c in curves] == [1, 2, 3, 4] and m["fidelity"] == 1.0  # stopped after epoch 4 of 6
    assert curves[-1]["restored_epoch"] == 2 and m["macro_f1"] == 0.6  # the best epoch's weights, evaluated again
    # the rate each epoch trained at: halved once the calibration loss had not improved for two epochs in a row
    assert [c["lr"] for c in curves] == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3])
    state = torch.load(d / "checkpoint" / "state.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(5e-4)  # after epoch 4's loss 0.97
    cache = ExitCache.load(d / "exit_cache_calibration.npz")
    assert cache.extras["train_seconds"][0] == pytest.approx(sum(c["epoch_seconds"] for c in curves))
    assert cache.extras["model_bytes"][0] == weight_bytes("shufflenet_v2_x1_0", 100)
    points = json.loads((d / "points.json").read_text())["points"]
    assert {p["point_id"] for p in points} == {"top1"}  # single-label: the top-1 answers, no thresholds


# -- multi-label trials, the predictor, the commands ----------------------------------------------

def run(*args, timeout=600):
    p = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return p


@pytest.fixture(scope="module")
def mosaic_run(tmp_path_factory):
    """A multi-label CSV + folder written by the mosaic command (tiles from the synthetic set), and a
    two-trial transfer search on it in the plain loop (no Ray)."""
    from search.local import run_local
    from search.spec import RunSpec

    tmp = tmp_path_factory.mktemp("mosaic")
    p = run("-m", "trainables.data.mosaic", "--source", "synthetic", "--classes", "0-7", "--out", str(tmp / "data"),
            "--unlabelled", "12")
    assert p.returncode == 0, p.stderr
    csv = tmp / "data" / "labels.csv"
    spec = RunSpec(space="transfer", data=f"csv:{csv}", name="ml", storage=str(tmp / "runs"), trials=2, data_size="tiny",
                   options={"backbone": "regnet_y_400mf"})
    return tmp, run_local(spec), p.stdout


def test_the_mosaic_command_writes_a_multi_label_csv_and_folder(mosaic_run):
    from trainables.data.csv_images import read_listing

    tmp, _, out = mosaic_run
    listing = read_listing(tmp / "data" / "labels.csv")
    assert listing.multi_label and set(listing.classes) <= set(range(8)) and len(listing.ids) == 120  # 480 images / 4
    assert all(1 <= len(row) <= 4 for row in listing.labels) and "," in listing.captions[0]
    img = __import__("torchvision").io.decode_image(str(tmp / "data" / listing.ids[0]))
    assert img.shape == (3, 64, 64) and "wrote 120 2x2 mosaics" in out
    assert len(list((tmp / "data" / "unlabelled").glob("*.png"))) == 12
    from trainables.data.mosaic import main as mosaic_main

    assert mosaic_main(["--source", "synthetic", "--out", str(tmp / "data")]) == 2  # labels.csv exists: nothing overwritten


def test_a_multi_label_trial_yields_global_per_class_and_fixed_threshold_points(mosaic_run):
    import pyarrow.parquet as pq

    _, run_dir, _ = mosaic_run
    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    assert {r["status"] for r in rows} == {"complete"} and {r["multi_label"] for r in rows} == {True}
    for tid in {r["trial_id"] for r in rows}:
        mine = {(r["point_id"].split("/")[1], r["split"]): r for r in rows if r["trial_id"] == tid}
        assert set(mine) == {(p, s) for p in ("global", "per_class", "fixed") for s in ("calibration", "test")}
        g, pc = mine["global", "calibration"], mine["per_class", "calibration"]
        assert not g["reference"] and pc["reference"] and mine["fixed", "test"]["threshold"] == 0.5
        assert len(pc["class_thresholds"]) == g["n_classes"] == 8 and g["class_thresholds"] is None
        # tuned on calibration, per-class thresholds fit it at least as well as the one global threshold
        assert pc["macro_f1"] >= g["macro_f1"] - 1e-12
        for split in ("calibration", "test"):  # every row carries the per-class score beside its own
            assert mine["global", split]["macro_f1_per_class"] == pytest.approx(mine["per_class", split]["macro_f1"])
        assert g["model_mb"] == pytest.approx(weight_bytes("regnet_y_400mf", 8) / 1e6) and g["train_seconds"] > 0


def test_the_loaded_predictor_reproduces_the_stored_scores(mosaic_run):
    from search.load import load_operating_point
    from trainables.data import get_dataset
    from trainables.multilabel import f1_scores

    _, run_dir, _ = mosaic_run
    spec = json.loads((run_dir / "spec.json").read_text())
    ds = get_dataset(spec["data"], size="tiny", seed=0)
    for policy in ("global", "per_class"):
        rows = __import__("pyarrow.parquet", fromlist=["x"]).read_table(run_dir / "results.parquet").to_pylist()
        pid = next(r["point_id"] for r in rows if r["point_id"].endswith(policy))
        clf = load_operating_point(run_dir, pid)
        for split, part in (("calibration", ds.calib), ("test", ds.test)):
            pred = clf.predict(part.images)
            measured = f1_scores(pred.labels, part.fine.numpy().astype(bool)).macro
            assert measured == pytest.approx(clf.point[split]["macro_f1"], abs=2 / len(part)), (policy, split)
            assert np.all(pred.cost["flops"] == clf.point[split]["expected_flops"])


def test_the_predict_and_export_commands(mosaic_run, tmp_path):
    from trainables.data.csv_images import read_listing

    tmp, run_dir, _ = mosaic_run
    out = tmp_path / "predictions.csv"
    p = run("-m", "search.predict", str(run_dir), str(tmp / "data" / "unlabelled"), "--out", str(out))
    assert p.returncode == 0, p.stderr
    listing = read_listing(out, labelled=False)
    assert listing.ids == sorted(x.name for x in (tmp / "data" / "unlabelled").glob("*.png"))
    assert all(set(row) <= set(range(8)) for row in listing.labels) and any(listing.labels)
    from search.predict import main as predict_main

    before = out.read_bytes()
    assert predict_main([str(run_dir), str(tmp / "data" / "unlabelled"), "--out", str(out)]) == 2  # exists
    assert predict_main([str(run_dir), str(tmp_path), "--out", str(tmp_path / "none.csv")]) == 2  # no images there
    assert out.read_bytes() == before and not (tmp_path / "none.csv").exists()
    trial = next((run_dir / "trials").iterdir())
    w = tmp_path / "w.pt"
    p = run("-m", "trainables.transfer.export", str(trial / "model.pt"), "--out", str(w))
    assert p.returncode == 0, p.stderr
    assert fitting_backbones(read_state_dict(w)) == ["regnet_y_400mf"]
    payload = torch.load(trial / "model.pt", weights_only=True)
    state = read_state_dict(w)
    assert all(torch.equal(state[k], payload["state_dict"][f"backbone.{k}"]) for k in state)


@pytest.mark.slow
def test_a_search_from_exported_weights_with_set_options_as_the_readme_runs_it(mosaic_run, tmp_path):
    """The README's real mosaic run, small: weights exported from a trial, then a search that sets the
    backbone, input side, optimiser, augmentation and training mode on the command line."""
    tmp, run_dir, _ = mosaic_run
    trial = next((run_dir / "trials").iterdir())
    w = tmp_path / "w.pt"
    assert run("-m", "trainables.transfer.export", str(trial / "model.pt"), "--out", str(w)).returncode == 0
    p = run("-m", "search.run", "--space", "transfer", "--data", f"csv:{tmp / 'data' / 'labels.csv'}", "--data-size", "tiny",
            "--budget", "smoke", "--backbone", "regnet_y_400mf", "--input-size", "32", "--optimizer", "adam", "--augment",
            "flip_crop", "--training", "finetune", "--trials", "2", "--weights", str(w), "--storage", str(tmp_path / "runs"),
            "--name", "set", "--no-report", timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "runs" / "set" / "results.parquet").to_pylist()
    assert {r["status"] for r in rows} == {"complete"} and len({r["trial_id"] for r in rows}) == 2
    assert {(r["config.optimizer"], r["config.augment"], r["config.training"], r["config.input_size"], r["weights"])
            for r in rows} == {("adam", "flip_crop", "finetune", 32, str(w))}


@pytest.mark.slow
@pytest.mark.parametrize("data", ["synthetic", "mosaic"])
def test_the_smoke_search_runs_as_the_readme_says(data, tmp_path):
    args = ["--data", "synthetic"]
    if data == "mosaic":
        p = run("-m", "trainables.data.mosaic", "--source", "synthetic", "--classes", "0-9", "--out", str(tmp_path / "d"))
        assert p.returncode == 0, p.stderr
        args = ["--data", f"csv:{tmp_path / 'd' / 'labels.csv'}"]
    p = run("-m", "search.run", "--space", "transfer", *args, "--budget", "smoke", "--storage", str(tmp_path / "runs"),
            "--name", "s", timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "runs" / "s" / "results.parquet").to_pylist()
    assert {r["status"] for r in rows} == {"complete"} and len({r["trial_id"] for r in rows}) == 4
    assert any(r["on_front"] for r in rows) and (tmp_path / "runs" / "s" / "report.html").stat().st_size > 10_000


def test_the_transfer_run_summary_command(mosaic_run):
    """python3 -m benchmarks.transfer_run RUN: the default point chosen on calibration, its test
    scores, and its trial's per-class and fixed points on test beside them, as the rows hold them."""
    import pyarrow.parquet as pq

    _, run_dir, _ = mosaic_run
    p = run("-m", "benchmarks.transfer_run", str(run_dir))
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.strip().splitlines()[-1])
    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    calib = [r for r in rows if r["split"] == "calibration" and r["on_front"] and not r["reference"]]
    best = max(calib, key=lambda r: (r["macro_f1"], -r["expected_flops"]))
    assert got["default_point"] == best["point_id"] and got["trials_complete"] == 2
    test = {r["point_id"]: r for r in rows if r["split"] == "test"}
    tid = best["trial_id"]
    assert got["test"]["macro_f1"] == pytest.approx(test[best["point_id"]]["macro_f1"], abs=1e-4)
    assert got["test_reference_points_of_its_trial"]["per_class"]["macro_f1"] == pytest.approx(
        test[f"{tid}/per_class"]["macro_f1"], abs=1e-4)
    assert got["test_reference_points_of_its_trial"]["fixed"]["threshold"] == 0.5
    gaps = [r["macro_f1_per_class"] - r["macro_f1"] for r in test.values() if not r["reference"]]
    assert got["test_per_class_minus_global_macro_f1_median"] == pytest.approx(float(np.median(gaps)), abs=1e-4)
