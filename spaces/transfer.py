"""transfer: torchvision backbones fine-tuned on a dataset's classes, single- or multi-label.

The research (../shared/RESEARCH.md, "Transfer learning") fine-tuned torchvision ImageNet backbones
with several optimisers on a multi-label task (18 classes; BCE-with-logits; sigmoid > 0.5; macro F1
on validation, micro F1 on test; under 100 MB), with a hand-written loop per model. Here it is one
space through the shared engine:

* searched: the backbone (resnet18/50, resnext50_32x4d, regnet_y_400mf/800mf/1_6gf,
  shufflenet_v2_x1_0, googlenet, efficientnet_b0, mobilenet_v3_large; the smoke budget the four
  quickest on a CPU), the input side (or `--input-size N`), how it trains (the backbone frozen, all
  of it fine-tuned, or fine-tuned after k epochs of the head alone: a training plan of stages),
  the optimiser (Adam, AdaDelta, SGD, AdamW) and its rate, the schedule (ReduceLROnPlateau on the
  calibration loss with its factor and patience, or cosine), early stopping (patience and min delta
  on the calibration metric, the best epoch's weights restored), mixed precision (bf16 autocast) or
  fp32, the augmentation (pad-crop and flip, or the research's: random-resized crop, flip,
  rotation, colour jitter, grey scale; on the device), the batch size and the epochs;
  `--backbone`, `--input-size`, `--training`, `--optimizer` and `--augment` set one of them instead;
* weights (`--weights`): torchvision's ImageNet files from the local torch hub cache, a state dict
  (PATH), or none; nothing is downloaded without `--download` (trainables/transfer/backbones.py);
* loss: BCE-with-logits on a multi-label dataset, cross-entropy on a single-label one;
* decision thresholds are post-training parameters, tuned on the calibration split's cached
  outputs (trainables/multilabel.py): one global threshold (the trial's point, on the fronts) and
  per-class thresholds (a reference point, read against it), with the research's fixed 0.5 as
  another; all scored on test, and every row shows the per-class thresholds' macro F1 beside its
  own, so their overfitting is in the report, not hidden. A single-label trial answers its top-1;
* objectives (one point per trial, a multi-objective outer search): macro F1 (or `--metric
  accuracy`) max, FLOPs per image min, training seconds min; the model's size on disk is reported,
  and `--max-model-mb` bounds it: a backbone that cannot fit is never proposed, and a network over
  the bound (with its head for this dataset's classes) is refused before it trains.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from spaces import register_space
from spaces._base import Budget, Option, Space, number_value, path_value
from trainables.contract import Column, Declaration, Outcome, ReportSpec, Selection
from trainables.engine.augment import Augment
from trainables.engine.family import DataInfo, Evaluation, Family, TrialInputs, UnsuitableData, point_rows
from trainables.engine.plan import Plan, Stage, StopRule
from trainables.exits import ExitCache
from trainables.multilabel import answers, class_thresholds, f1_scores, global_threshold, one_hot, sigmoid, subset_accuracy

ALL_BACKBONES = ("resnet18", "resnet50", "resnext50_32x4d", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf",
                 "shufflenet_v2_x1_0", "googlenet", "efficientnet_b0", "mobilenet_v3_large")
BACKBONES = {"smoke": ("resnet18", "regnet_y_400mf", "shufflenet_v2_x1_0", "mobilenet_v3_large"), "full": ALL_BACKBONES}
LARGEST = {"smoke": "resnet18", "full": "resnext50_32x4d"}  # the most FLOPs of each budget's backbones (torchvision's figures)
INPUT_SIZES = {"smoke": [32], "full": [64, 128, 224]}
BATCH_SIZES = {"smoke": [32, 64], "full": [32, 64, 128]}
LR = {"adam": (1e-4, 3e-3), "adamw": (1e-4, 3e-3), "sgd": (1e-3, 0.1), "adadelta": (0.05, 2.0)}
STOP_PATIENCE = {"smoke": [0, 1], "full": [0, 3, 6]}
STOP_MIN_DELTA = [0.0, 0.001, 0.01]
BUDGETS = {
    "smoke": Budget("smoke", epochs=2, data_size="tiny", trials=4),
    "full": Budget("full", epochs=20, data_size="full", trials=32),
}
AUGMENT = {
    "flip_crop": Augment(),
    # the research's transforms: random-resized crop, flip, rotation, colour jitter, grey scale
    "research": Augment(crop="resized", scale=(0.35, 1.0), flip=True, rotation=15.0, jitter=0.2, grey=0.1),
}
MB = 1_000_000


def _whole_pixels(value: str) -> str:
    if not value.isdigit() or not 16 <= int(value) <= 1024:
        raise ValueError("a whole number of pixels from 16 to 1024")
    return value


@lru_cache(maxsize=8)
def _fitting(path: str, stamp: tuple[int, int]) -> tuple[str, ...]:
    from trainables.transfer.backbones import fitting_backbones, read_state_dict

    return tuple(fitting_backbones(read_state_dict(path)))


def weights_backbones(weights: str) -> tuple[str, ...] | None:
    """The backbones a --weights PATH fits (None for imagenet or none; () when the file is unusable)."""
    if weights in ("imagenet", "none"):
        return None
    p = Path(weights)
    try:
        st = p.stat()
        return _fitting(str(p), (st.st_size, st.st_mtime_ns))
    except (OSError, ValueError):
        return ()


def backbone_choices(budget: Budget, options: Mapping[str, str]) -> list[str]:
    """The backbones a run may sample: the budget's, or the one --backbone names; only those a
    --weights PATH fits; only those whose tensors alone fit --max-model-mb (the head comes on top)."""
    from trainables.transfer.backbones import body_bytes

    chosen = options.get("backbone", "searched")
    names = list(BACKBONES[budget.name]) if chosen == "searched" else [chosen]
    fits = weights_backbones(options.get("weights", "none"))
    if fits is not None:
        names = [n for n in (names if chosen != "searched" else ALL_BACKBONES) if n in fits]
    limit = options.get("max_model_mb", "none")
    if limit != "none":
        names = [n for n in names if body_bytes(n) <= float(limit) * MB]
    return names


def searched_or_set(options: Mapping[str, str], name: str, every: Iterable[str]) -> list[str]:
    """The values a run may sample for `name`: all of them, or the one its option sets."""
    chosen = options.get(name, "searched")
    return list(every) if chosen == "searched" else [chosen]


def training_choices(budget: Budget, options: Mapping[str, str]) -> list[str]:
    """How a run with starting weights trains: searched among the modes the budget's epochs allow, or set."""
    modes = ("frozen", "finetune", "frozen_then_finetune") if budget.epochs >= 2 else ("frozen", "finetune")
    return searched_or_set(options, "training", modes)


def define(trial, budget: Budget, options: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Define-by-run: only suggest_* calls; returns the derived constants (the learning rate; the
    input side when --input-size sets it)."""
    o = dict(options or {})
    b = budget.name
    names = backbone_choices(budget, o) or list(BACKBONES[b])  # none left: the family refuses the run first
    trial.suggest_categorical("backbone", names)
    constants: dict[str, Any] = {}
    if o.get("input_size", "searched") == "searched":
        trial.suggest_categorical("input_size", INPUT_SIZES[b])
    else:
        constants["input_size"] = int(o["input_size"])
    low = max(1, math.ceil(budget.epochs / 2))
    if o.get("weights", "none") != "none":  # a frozen backbone is worth trying only when it has learnt something
        training = trial.suggest_categorical("training", training_choices(budget, o))
        if training == "frozen_then_finetune":
            epochs = trial.suggest_int("epochs", max(2, low), budget.epochs)
            trial.suggest_int("frozen_epochs", 1, epochs - 1)
        else:
            trial.suggest_int("epochs", low, budget.epochs)
    else:
        trial.suggest_int("epochs", low, budget.epochs)
    optimizer = trial.suggest_categorical("optimizer", searched_or_set(o, "optimizer", LR))
    lr = trial.suggest_float(f"lr_{optimizer}", *LR[optimizer], log=True)
    trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True)
    if trial.suggest_categorical("lr_schedule", ["plateau", "cosine"]) == "plateau":
        trial.suggest_float("plateau_factor", 0.1, 0.5)
        trial.suggest_int("plateau_patience", 1, 3)
    if trial.suggest_categorical("stop_patience", STOP_PATIENCE[b]):
        trial.suggest_categorical("stop_min_delta", STOP_MIN_DELTA)
    trial.suggest_categorical("precision", ["fp32", "bf16"])
    trial.suggest_categorical("augment", searched_or_set(o, "augment", AUGMENT))
    trial.suggest_categorical("batch_size", BATCH_SIZES[b])
    return {"lr": lr, **constants}


def largest_configs(budget: Budget) -> list[dict[str, Any]]:
    return [{"backbone": LARGEST[budget.name], "input_size": max(INPUT_SIZES[budget.name])}]


def declaration(metric: str = "macro_f1", max_model_mb: str = "none") -> Declaration:
    bound = "" if max_model_mb == "none" else f" (--max-model-mb {max_model_mb}: none above it is trained)"
    return Declaration(
        yields="point",
        point=(
            Column("macro_f1", direction="max" if metric == "macro_f1" else None, unit="fraction",
                   description="mean of the classes' F1 at this point's thresholds (single-label: of its top-1 answers)"),
            Column("micro_f1", unit="fraction", description="F1 of every (image, class) decision pooled (single-label: accuracy)"),
            Column("accuracy", direction="max" if metric == "accuracy" else None, unit="fraction",
                   description="images answered exactly right: every class (multi-label), the top-1 class (single-label)"),
            Column("expected_flops", direction="min", unit="FLOPs",
                   description="FLOPs per image of the network at its input side (every image runs all of it)"),
            Column("train_seconds", direction="min", unit="s", description="seconds the trial spent training (its epochs' training passes)"),
            Column("model_mb", unit="MB", description="the trained network's weights on disk (its state dict as torch.save "
                                                      "writes it; 1 MB = 1e6 bytes)" + bound),
            Column("macro_f1_per_class", unit="fraction",
                   description="the same network with per-class thresholds tuned on calibration: beside macro_f1 on both "
                               "splits, it shows how much per-class thresholds overfit (multi-label only)"),
        ),
        policy=(
            Column("threshold", description="the one decision threshold on every class's probability (global: tuned on "
                                            "calibration; fixed: 0.5); empty for per-class thresholds or top-1 answers"),
            Column("class_thresholds", "floats", description="per-class decision thresholds tuned on calibration (per_class)"),
        ),
        trial=(
            Column("backbone", "str", description="the torchvision backbone"),
            Column("weights", "str", description="its starting weights: imagenet (torchvision's file), none, or a state dict's path"),
            Column("input_size", "int", description="the side in pixels of the images the network sees"),
            Column("training", "str", description="frozen (head only), finetune (all), or frozen_then_finetune"),
            Column("multi_label", "bool", description="multi-hot targets: BCE-with-logits and thresholds (else cross-entropy, top-1)"),
            Column("n_classes", "int", description="classes of the dataset (the head's outputs)"),
        ),
        curves=(
            Column("macro_f1", direction="max", unit="fraction", description="calibration macro F1 (global threshold tuned each epoch)"),
            Column("micro_f1", unit="fraction", description="calibration micro F1"),
            Column("accuracy", unit="fraction", description="calibration accuracy (exact match / top-1)"),
        ),
        point_objectives=(metric, "expected_flops", "train_seconds"),
        objectives={metric: "max", "expected_flops": "min", "train_seconds": "min"},
        report=ReportSpec(
            fronts=(("expected_flops", metric), ("train_seconds", metric)),
            table=("macro_f1", "macro_f1_per_class", "micro_f1", "accuracy", "expected_flops", "train_seconds", "model_mb"),
            epoch_panels=("macro_f1", "micro_f1", "accuracy"),
            key_config=("backbone", "input_size", "training", "optimizer", "lr_schedule", "precision", "augment",
                        "batch_size", "epochs"),
        ),
        selection=Selection(best=metric, tie_break="expected_flops", aliases={"flops": "expected_flops"},
                            description=f"the global-front point with the highest calibration {metric}; ties to fewer FLOPs"),
        notes={
            "thresholds": "tuned on the calibration split's cached outputs (trainables/multilabel.py): the global point's one "
                          "threshold maximises macro F1; the per_class reference point's thresholds each maximise their "
                          "class's F1; fixed is the research's 0.5. Test is only scored: per-class thresholds overfit "
                          "calibration, compare macro_f1_per_class with macro_f1 on calibration and on test",
            "FLOPs convention": "FlopCounterMode at batch 1 at the input side (2 FLOPs per multiply-accumulate)",
            "model size": "bytes of the trained network's state dict as torch.save writes it; 1 MB = 1e6 bytes" + bound,
        },
        answer_metric="accuracy",
    )


class Transfer(Family):
    """A torchvision backbone and a linear head per trial; decision thresholds tuned on its cache."""

    levels = ("fine",)
    multi_label = True

    def __init__(self, declaration: Declaration, budget: Budget, options: Mapping[str, str]) -> None:
        super().__init__(declaration, budget.calibration, largest_configs(budget))
        self.budget = budget
        self.options = dict(options)
        self.weights = self.options.get("weights", "none")
        self.metric = self.options.get("metric", "macro_f1")
        limit = self.options.get("max_model_mb", "none")
        self.max_bytes = None if limit == "none" else float(limit) * MB
        self.fixed_size = None if self.options.get("input_size", "searched") == "searched" else int(self.options["input_size"])

    # -- what a run needs before it starts -------------------------------------------------------

    def candidates(self) -> list[str]:
        return backbone_choices(self.budget, self.options)

    def _check_weights_file(self) -> None:
        """A --weights PATH must be a safe state dict of some transfer backbone: said precisely, before
        anything else refers to the backbones it fits."""
        from trainables.transfer.backbones import WeightsError, read_state_dict

        if self.weights in ("none", "imagenet"):
            return
        try:
            read_state_dict(self.weights)  # missing, unsafe or not a state dict
        except WeightsError as exc:
            raise UnsuitableData(f"--weights: {exc}; or train from scratch with --weights none") from None
        if not weights_backbones(self.weights):
            raise UnsuitableData(f"--weights {self.weights} holds no transfer backbone's parameters (by name and shape: "
                                 f"{', '.join(ALL_BACKBONES)}); export one with python3 -m trainables.transfer.export, "
                                 "or train from scratch with --weights none")

    def check(self, data: DataInfo) -> None:
        self._check_weights_file()
        training = self.options.get("training", "searched")
        if self.weights == "none" and training not in ("searched", "finetune"):
            raise UnsuitableData(f"--training {training} trains with the backbone frozen, which needs starting weights: "
                                 "give --weights imagenet or PATH, or leave --training out (from scratch it fine-tunes)")
        if training not in ("searched", *training_choices(self.budget, {})):
            raise UnsuitableData(f"--training {training} needs two epochs or more; budget {self.budget.name} trains "
                                 f"{self.budget.epochs}: pick another --training or --budget")
        names = self.candidates()
        if not names:
            why = []
            if weights_backbones(self.weights) is not None:
                why.append(f"--weights {self.weights} fits {', '.join(weights_backbones(self.weights)) or 'no backbone'}")
            if self.options.get("backbone", "searched") != "searched":
                why.append(f"--backbone {self.options['backbone']}")
            if self.max_bytes is not None:
                from trainables.transfer.backbones import body_bytes
                smallest = min(BACKBONES[self.budget.name], key=body_bytes)
                why.append(f"--max-model-mb {self.options['max_model_mb']} (the smallest, {smallest}, is "
                           f"{body_bytes(smallest) / MB:.1f} MB without its head)")
            raise UnsuitableData(f"no backbone of the transfer space is left to search: {'; '.join(why)}; relax these")
        if data.channels not in (1, 3):
            raise UnsuitableData(f"the backbones take RGB (or grey) images; the dataset has {data.channels} channels")

    def fetch(self, download: bool) -> None:
        from trainables.transfer.backbones import fetch_imagenet, hub_file

        if self.weights == "none":
            return
        if self.weights != "imagenet":
            self._check_weights_file()  # on every node a trial runs on, too
            return
        missing = [n for n in self.candidates() if not hub_file(n).is_file()]
        if missing and download:
            for n in missing:
                fetch_imagenet(n)
            missing = [n for n in missing if not hub_file(n).is_file()]
        if missing:
            paths = ", ".join(str(hub_file(n)) for n in missing)
            raise UnsuitableData(f"--weights imagenet: torchvision's ImageNet weights are not in the local torch hub cache: "
                                 f"{paths}. Put the files there (the directory is $TORCH_HOME/hub/checkpoints), pass "
                                 "--download to fetch them (needs network access), name one backbone whose file you have "
                                 "with --backbone, or train from scratch with --weights none")

    # -- the network and its training -----------------------------------------------------------

    def build_model(self, config: Mapping[str, Any], data: DataInfo):
        from trainables.transfer.model import TransferNet

        return TransferNet(str(config["backbone"]), data.n_fine, data.channels)

    def initialise(self, net: Any, inputs: TrialInputs) -> None:
        from trainables.transfer.backbones import WeightsError, load_weights

        try:
            net.weights_from = load_weights(net.backbone, net.backbone_name, self.weights)
        except WeightsError as exc:
            raise UnsuitableData(str(exc)) from None

    def input_size(self, config: Mapping[str, Any], data: DataInfo) -> int:
        return int(config.get("input_size") or self.fixed_size or data.image_size)

    def augmentation(self, inputs: TrialInputs) -> Augment:
        return AUGMENT[str(inputs.config.get("augment", "flip_crop"))]

    def plan(self, inputs: TrialInputs) -> Plan:
        config, data = inputs.config, inputs.data
        if self.max_bytes is not None and data is not None:
            from trainables.transfer.model import weight_bytes

            size = weight_bytes(str(config["backbone"]), data.n_fine)
            if size > self.max_bytes:
                raise UnsuitableData(f"{config['backbone']} with a head for {data.n_fine} classes is {size / MB:.2f} MB on "
                                     f"disk, above --max-model-mb {self.options['max_model_mb']}: not trained")
        epochs = int(config["epochs"])
        patience = int(config.get("stop_patience", 0))
        stop = StopRule(self.metric, "max", patience, float(config.get("stop_min_delta", 0.0))) if patience else None
        training = str(config.get("training", "finetune"))
        if training == "frozen":
            return Plan((Stage("frozen", epochs, trains=("head",), stop=stop),))
        if training == "frozen_then_finetune":
            k = min(int(config.get("frozen_epochs", 1)), epochs - 1)
            return Plan((Stage("frozen", k, trains=("head",)), Stage("finetune", epochs - k, stop=stop)))
        return Plan((Stage("finetune", epochs, stop=stop),))

    def make_loss(self, inputs: TrialInputs, n_exits: int):
        import torch.nn.functional as F

        multi = bool(inputs.data.multi_label) if inputs.data is not None else False

        def loss(outputs, y_fine, y_coarse, epoch):
            logits = outputs[-1][0].float()
            if multi:
                return F.binary_cross_entropy_with_logits(logits, y_fine.float())
            return F.cross_entropy(logits, y_fine)

        return loss

    def cache_extras(self, net: Any, data: DataInfo) -> dict[str, np.ndarray]:
        """The network's size on disk (measured once: it does not change as it trains)."""
        if getattr(net, "_saved_bytes", None) is None:
            from trainables.transfer.backbones import saved_bytes

            net._saved_bytes = saved_bytes(net)
        return {"model_bytes": np.asarray([net._saved_bytes], dtype=np.float64)}

    # -- scores and points ----------------------------------------------------------------------

    def _scores(self, cache: ExitCache, thresholds: np.ndarray | float | None, multi: bool) -> dict[str, Any]:
        """Every point metric of one decision rule on one split (thresholds None: top-1 answers)."""
        logits = np.asarray(cache.logits["fine"][-1], dtype=np.float32)
        y = np.asarray(cache.labels["fine"])
        if multi:
            truth = y.astype(bool)
            pred = answers(sigmoid(logits), thresholds)
            f, acc = f1_scores(pred, truth), subset_accuracy(pred, truth)
        else:
            top1 = logits.argmax(1)
            f, acc = f1_scores(one_hot(top1, logits.shape[1]), one_hot(y, logits.shape[1])), float((top1 == y).mean())
        return {"macro_f1": f.macro, "micro_f1": f.micro, "accuracy": acc}

    def _common(self, cache: ExitCache) -> dict[str, float]:
        extras = cache.extras
        return {"expected_flops": float(cache.costs["flops"][-1]),
                "train_seconds": float(extras["train_seconds"][0]) if "train_seconds" in extras else float("nan"),
                "model_mb": float(extras["model_bytes"][0]) / MB if "model_bytes" in extras else float("nan")}

    def evaluate(self, calib: ExitCache, inputs: TrialInputs) -> Evaluation:
        multi = np.asarray(calib.labels["fine"]).ndim == 2
        state: dict[str, Any] = {"multi": multi}
        if multi:
            probs = sigmoid(np.asarray(calib.logits["fine"][-1], dtype=np.float32))
            truth = np.asarray(calib.labels["fine"]).astype(bool)
            state["global"], _ = global_threshold(probs, truth)
            state["per_class"] = class_thresholds(probs, truth)
        m = self._scores(calib, state.get("global"), multi)
        common = self._common(calib)
        signal = {self.metric: m[self.metric], "expected_flops": common["expected_flops"],
                  "train_seconds": common["train_seconds"], "model_mb": common["model_mb"]}
        return Evaluation(signal, dict(m), state)

    def finish(self, evaluation: Evaluation, calib: ExitCache, test: ExitCache, inputs: TrialInputs) -> Outcome:
        state, config, data = evaluation.state, inputs.config, inputs.data
        multi = state["multi"]
        rules: list[tuple[str, bool, dict[str, Any], Any]] = []
        if multi:
            t, per = float(state["global"]), np.asarray(state["per_class"])
            rules = [("global", False, {"threshold": t, "class_thresholds": None}, t),
                     ("per_class", True, {"threshold": None, "class_thresholds": per.tolist()}, per),
                     ("fixed", True, {"threshold": 0.5, "class_thresholds": None}, 0.5)]
        else:
            rules = [("top1", False, {"threshold": None, "class_thresholds": None}, None)]
        by_split: dict[str, dict[str, dict[str, Any]]] = {}
        for split, cache in (("calibration", calib), ("test", test)):
            common = self._common(cache)
            per_class = self._scores(cache, state["per_class"], True)["macro_f1"] if multi else None
            for name, _, _, thresholds in rules:
                by_split.setdefault(name, {})[split] = {**self._scores(cache, thresholds, multi), **common,
                                                        "macro_f1_per_class": per_class}
        points = []
        for name, reference, params, _ in rules:
            points += point_rows(name, name, reference=reference, trial_front=not reference, params=params,
                                 by_split=by_split[name])
        trial = {"backbone": str(config["backbone"]), "weights": self.weights, "input_size": self.input_size(config, data),
                 "training": str(config.get("training", "finetune")), "multi_label": bool(multi),
                 "n_classes": int(data.n_fine) if data is not None else int(np.asarray(calib.logits["fine"]).shape[-1])}
        return Outcome(points, trial)

    def thresholds(self, point: Mapping[str, Any], model: Any) -> np.ndarray:
        return np.array([[2.0]])  # one exit, answered at the fine level

    def predictor(self, point: Mapping[str, Any], checkpoint: Any, device: str = "cpu"):
        from trainables.transfer.predictor import TransferPredictor

        return TransferPredictor.from_checkpoint(checkpoint, self.build_model, self.input_size, point, device)


def family(budget: Budget, options: Mapping[str, str]) -> Transfer:
    return Transfer(declaration(options.get("metric", "macro_f1"), options.get("max_model_mb", "none")), budget, options)


OPTIONS = {
    "weights": Option(("none", "imagenet"), "none", "starting weights: torchvision's ImageNet files from the local torch hub "
                      "cache (nothing downloaded without --download), a state dict of one backbone, or none",
                      parse=path_value, values="none, imagenet or PATH"),
    "backbone": Option(("searched", *ALL_BACKBONES), "searched", "search the budget's backbones, or one"),
    "input_size": Option(("searched",), "searched", "the side the network sees: searched, or set", parse=_whole_pixels,
                         values="searched or a whole number of pixels"),
    "max_model_mb": Option(("none",), "none", "the largest model on disk the search may train, in MB (1e6 bytes)",
                           parse=number_value(0), values="none or a number of MB"),
    "metric": Option(("macro_f1", "accuracy"), "macro_f1", "the score the search maximises beside FLOPs and training time"),
    "optimizer": Option(("searched", *LR), "searched", "search the optimisers, or use one (its learning rate is searched)"),
    "augment": Option(("searched", *AUGMENT), "searched", "search the on-device augmentations, or use one (research: "
                      "random-resized crop, flip, rotation, colour jitter, grey scale; flip_crop: flip and padded crop)"),
    "training": Option(("searched", "frozen", "finetune", "frozen_then_finetune"), "searched",
                       "with --weights: search how the backbone trains (frozen, fine-tuned, or fine-tuned after k frozen "
                       "epochs), or set it; from scratch (--weights none) it is always fine-tuned"),
}


@register_space
def transfer() -> Space:
    return Space(
        name="transfer",
        description="torchvision backbones fine-tuned (ImageNet, a state dict, or scratch), single- or multi-label, "
                    "decision thresholds tuned after training",
        define=define,
        family=family,
        largest_configs=largest_configs,
        default_data="synthetic",
        budgets=BUDGETS,
        options=OPTIONS,
    )


__all__: Sequence[str] = ["BACKBONES", "Transfer", "declaration", "define", "transfer"]
