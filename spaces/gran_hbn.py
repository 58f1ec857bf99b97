"""Gran-HBN / AG-HBN: early-exit networks with a fine and a coarse head at every exit.

Per input, entropy decides whether to answer fine, answer coarse, or go deeper
(trainables/exits/policy.py). The space searches the backbone (CIFAR ResNet, width and depth; or
the Gran-HBN paper's AlexNet-style network), where the exits sit, the head shape, the granular
loss (fine/coarse weights with start epochs and ramps, per-exit weights) and the optimiser and
LR schedule. Each trial is trained once and its thresholds calibrated afterwards by the inner
multi-objective search (trainables/exits/search.py) on the calibration split; its signal to the
outer search, after every epoch and at the end alike, is the hypervolume of that calibration
front of (accuracy, specificity, expected FLOPs / FLOPs of this space's largest network), with the
network without early exits (policy `plain`, trainables/exits/plain.py: the last exit's fine
answers at the plain network's FLOPs), which every trial also offers as an operating point.

Paper defaults, for reference (../shared/RESEARCH.md): Adam, lr 1.5e-4, weight decay 5e-4,
batch 64, 120 epochs, branch weights [1.0, 0.8, 0.6], fine weight 1.5 (Gran-HBN) or 1.02
(AG-HBN); `paper_config()` returns that setting in this space's terms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from spaces import register_space
from spaces._base import Budget, Space
from spaces._training import suggest_training
from trainables.contract import Column, Declaration, Outcome, ReportSpec, Selection
from trainables.exits import (
    PLAIN,
    PLAIN_COLUMN,
    ExitCache,
    ExitStats,
    PointScores,
    calibrate,
    fixed_policies,
    plain_metrics,
    plain_thresholds,
    with_plain,
)
from trainables.engine.family import Evaluation, Family, TrialInputs, pick, point_rows
from trainables.losses import GranularLoss, config_exit_weights
from trainables.pareto import hypervolume, non_dominated_mask

BUDGETS = {
    # smoke: 2 CPU cores, a few minutes for the whole search (README quick start)
    "smoke": Budget(
        "smoke", epochs=4, data_size="smoke", trials=4,
        calibration={"n_trials": 128, "neighbours": 16, "population": 32, "levels": 32, "max_points": 48},
    ),
    "full": Budget(
        "full", epochs=30, data_size="full", trials=32,
        calibration={"n_trials": 512, "neighbours": 32, "population": 64, "levels": 64, "max_points": 128},
    ),
}

RESNET_WIDTHS = {"smoke": [8], "full": [16, 32, 64]}
RESNET_BLOCKS = {"smoke": (1, 1), "full": (1, 2)}
ALEXNET_WIDTHS = {"smoke": [0.125, 0.25], "full": [0.5, 1.0]}
HEAD_HIDDEN = {"smoke": [16, 32], "full": [128, 256]}
BATCH_SIZES = {"smoke": [64, 128], "full": [128, 256, 512]}


def define(trial, budget: Budget) -> dict[str, Any]:
    """Define-by-run: only suggest_* calls; returns the derived constants."""
    b = budget.name
    backbone = trial.suggest_categorical("backbone", ["resnet", "alexnet"])
    if backbone == "resnet":
        trial.suggest_categorical("resnet.width", RESNET_WIDTHS[b])
        trial.suggest_int("resnet.blocks", *RESNET_BLOCKS[b])
        n_stages = trial.suggest_int("resnet.n_stages", 3, 4)
    else:
        trial.suggest_categorical("alexnet.width", ALEXNET_WIDTHS[b])
        n_stages = 3
    # an exit after each earlier stage is optional; the last stage always has one
    exit_after = [s for s in range(n_stages - 1) if trial.suggest_categorical(f"exit_after_stage{s}", [True, False])]
    exit_after.append(n_stages - 1)

    head = trial.suggest_categorical("head", ["linear", "mlp", "conv"])
    if head != "linear":
        trial.suggest_categorical("head_hidden", HEAD_HIDDEN[b])

    epochs = trial.suggest_int("epochs", max(1, math.ceil(budget.epochs / 2)), budget.epochs)
    ramp_max = max(0, epochs // 3)
    trial.suggest_float("lambda_fine", 0.5, 2.0)
    trial.suggest_float("lambda_coarse", 0.25, 2.0)
    trial.suggest_int("fine_start_epoch", 0, ramp_max)
    trial.suggest_int("fine_ramp_epochs", 0, ramp_max)
    trial.suggest_int("coarse_start_epoch", 0, 0)  # coarse first, as in B-CNN's schedule
    trial.suggest_int("coarse_ramp_epochs", 0, ramp_max)
    trial.suggest_categorical("exit_grad_scale", [0.0, 0.25, 1.0])
    trial.suggest_float("exit_weight_first", 0.3, 1.0)
    trial.suggest_float("exit_weight_last", 0.3, 1.0)

    lr = suggest_training(trial, BATCH_SIZES[b])
    return {"exit_after": exit_after, "lr": lr}


def largest_configs(budget: Budget) -> list[dict[str, Any]]:
    """The most expensive network of each backbone in this space: every exit, widest heads."""
    b = budget.name
    head = {"head": "conv", "head_hidden": max(HEAD_HIDDEN[b])}
    return [
        {"backbone": "resnet", "resnet.width": max(RESNET_WIDTHS[b]), "resnet.blocks": RESNET_BLOCKS[b][1],
         "resnet.n_stages": 4, "exit_after": [0, 1, 2, 3], **head},
        {"backbone": "alexnet", "alexnet.width": max(ALEXNET_WIDTHS[b]), "exit_after": [0, 1, 2], **head},
    ]


def paper_config(ag_hbn: bool = False) -> dict[str, Any]:
    """The Gran-HBN (or AG-HBN) paper's training setting, in this space's parameters."""
    return {
        "backbone": "alexnet", "alexnet.width": 1.0, "exit_after": [0, 1, 2], "head": "mlp", "head_hidden": 1024,
        "optimizer": "adam", "lr": 1.5e-4, "weight_decay": 5e-4, "batch_size": 64,
        "epochs": 100 if ag_hbn else 120, "lr_schedule": "cosine",
        "lambda_fine": 1.02 if ag_hbn else 1.5, "lambda_coarse": 1.0, "exit_weight_first": 1.0, "exit_weight_last": 0.6,
        "fine_start_epoch": 0, "fine_ramp_epochs": 0, "coarse_start_epoch": 0, "coarse_ramp_epochs": 0,
        "label_smoothing": 0.0,
    }


FLOPS_CONVENTION = (
    "FLOPs per image counted by torch.utils.flop_counter.FlopCounterMode at batch 1 (2 FLOPs per "
    "multiply-accumulate of matmuls and convolutions); the cost to exit k includes every backbone stage up "
    "to k and the fine and coarse heads of exits 1..k; expected FLOPs = sum over exits of (fraction "
    "exiting there) x (cost to that exit); normalised by the FLOPs of the space's largest network."
)

DECLARATION = Declaration(
    yields="points",
    point=(
        Column("accuracy", direction="max", unit="fraction",
               description="answers right at the level answered (fine: true class; coarse: true superclass)"),
        Column("specificity", direction="max", unit="fraction", description="fraction of answers given at the fine level"),
        Column("expected_flops", direction="min", unit="FLOPs", description="mean FLOPs per image"),
        Column("expected_flops_norm", direction="min", unit="ratio",
               description="expected FLOPs / FLOPs of the space's largest network"),
        Column("exit_fraction", "floats", per_exit=True, unit="fraction", description="fraction answered at each exit"),
        Column("fine_acc_per_exit", "floats", per_exit=True, unit="fraction",
               description="each exit's fine-head top-1 accuracy on the whole split"),
        Column("coarse_acc_per_exit", "floats", per_exit=True, unit="fraction",
               description="each exit's coarse-head top-1 accuracy on the whole split"),
    ),
    policy=(
        Column("thresholds_fine", "floats", per_exit=True,
               description="per-exit normalised-entropy threshold of a fine answer (-1 never, 2 always)"),
        Column("thresholds_coarse", "floats", per_exit=True,
               description="per-exit threshold of a coarse answer; the last exit's is unused (what reaches it answers)"),
        PLAIN_COLUMN,
    ),
    trial=(
        Column("hypervolume", direction="max",
               description="hypervolume of the trial's whole calibration front (its search signal); "
                           "recomputable from trials/<id>/calibration_front.npz"),
        Column("front_size", "int", description="calibration-front size before thinning to the stored points"),
        Column("settings_evaluated", "int", description="distinct threshold settings the inner search scored"),
        Column("exit_flops", "floats", per_exit=True, unit="FLOPs",
               description="cumulative FLOPs per image up to each exit, heads included"),
    ),
    curves=(
        Column("hypervolume", direction="max", description="calibration-front hypervolume after this epoch"),
        Column("calib_fine_acc_per_exit", "floats", per_exit=True, unit="fraction",
               description="each exit's fine accuracy on calibration"),
        Column("calib_coarse_acc_per_exit", "floats", per_exit=True, unit="fraction",
               description="each exit's coarse accuracy on calibration"),
    ),
    point_objectives=("accuracy", "specificity", "expected_flops_norm"),
    objectives={"hypervolume": "max"},
    report=ReportSpec(
        fronts=(("expected_flops", "accuracy"), ("specificity", "accuracy")),
        table=("accuracy", "specificity", "expected_flops", "expected_flops_norm"),
        trial_curve=("expected_flops", "accuracy"),
        marks=(PLAIN,),
        exit_fraction="exit_fraction",
        epoch_panels=("hypervolume", "calib_fine_acc_per_exit", "calib_coarse_acc_per_exit"),
        key_config=("backbone", "head", "epochs", "optimizer", "lr", "exit_after"),
    ),
    selection=Selection(
        best="accuracy", constraints={"specificity": ("min", 0.9)}, tie_break="expected_flops",
        aliases={"flops": "expected_flops"},
        description="the global-front point with the best calibration accuracy among those answering at "
                    "the fine level at least 90% of the time (specificity >= 0.9); ties to fewer FLOPs",
    ),
    hv_objectives=("accuracy", "specificity", "expected_flops_norm"),
    hv_reference=(0.0, 0.0, 1.0),
    answer_metric="accuracy",
    notes={
        "FLOPs convention": FLOPS_CONVENTION,
        "specificity": "fraction of answers given at the fine (class) level rather than the coarse (superclass) level",
        "hypervolume": "of (accuracy, specificity, expected FLOPs / largest network's), reference point (0, 0, 1), over "
                       "the calibrated front and the network without early exits",
        "plain network": "every trial offers the network without early exits (policy plain, marked): the last exit's fine "
                         "answers at the plain network's FLOPs (every stage, then the last exit's heads)",
    },
)


class GranHBN(Family):
    """Gran-HBN's own parts: fine and coarse heads, the granular loss, entropy-threshold calibration."""

    levels = ("fine", "coarse")

    def make_loss(self, inputs: TrialInputs, n_exits: int) -> GranularLoss:
        config = inputs.config
        return GranularLoss(
            exit_weights=config_exit_weights(config, n_exits),
            lambda_fine=float(config.get("lambda_fine", 1.0)),
            lambda_coarse=float(config.get("lambda_coarse", 1.0)),
            fine_start_epoch=float(config.get("fine_start_epoch", 0)),
            fine_ramp_epochs=float(config.get("fine_ramp_epochs", 0)),
            coarse_start_epoch=float(config.get("coarse_start_epoch", 0)),
            coarse_ramp_epochs=float(config.get("coarse_ramp_epochs", 0)),
            label_smoothing=float(config.get("label_smoothing", 0.0)),
        )

    @staticmethod
    def metrics(scores: PointScores, stats: ExitStats) -> dict[str, np.ndarray]:
        """The declared point metrics of S settings, vectorised."""
        return {
            "accuracy": scores.accuracy,
            "specificity": scores.level_fraction[:, 0],
            "expected_flops": scores.expected(stats.costs["flops"]),
            "expected_flops_norm": scores.expected(stats.normalised_cost("flops")),
            "exit_fraction": scores.exit_fraction,
        }

    def _objectives(self, stats: ExitStats):
        names = DECLARATION.hv_objectives

        def objectives(scores: PointScores) -> np.ndarray:
            m = self.metrics(scores, stats)
            return np.stack([m[n] for n in names], axis=1)

        return objectives

    def evaluate(self, calib_cache: ExitCache, inputs: TrialInputs) -> Evaluation:
        calib = calib_cache.stats()
        maximize = DECLARATION.maximize(DECLARATION.hv_objectives)
        res = calibrate(calib, self._objectives(calib), maximize, DECLARATION.hv_reference, seed=inputs.seed,
                        **self.calibration)
        plain = plain_metrics(self.metrics, calib)
        if plain is not None:  # the network without early exits is one of the trial's points too
            front = np.vstack([res.front, np.stack([plain[n] for n in DECLARATION.hv_objectives], axis=1)])
            front = front[non_dominated_mask(front, maximize)]
            res = res._replace(front=front, hypervolume=hypervolume(front, DECLARATION.hv_reference, maximize))
        curve = {"hypervolume": res.hypervolume, "calib_fine_acc_per_exit": calib.acc_per_exit("fine").tolist(),
                 "calib_coarse_acc_per_exit": calib.acc_per_exit("coarse").tolist()}
        return Evaluation({"hypervolume": res.hypervolume}, curve, res)

    def finish(self, evaluation: Evaluation, calib_cache: ExitCache, test_cache: ExitCache, inputs: TrialInputs) -> Outcome:
        calib, test = calib_cache.stats(), test_cache.stats()
        res = evaluation.state
        fixed = fixed_policies(2, calib.n_exits, self.levels)
        settings = np.concatenate([res.thresholds, np.stack([t for _, t in fixed])])
        names = [("calibrated", f"calibrated/{i}") for i in range(len(res.thresholds))]
        names += [(name, f"{name}/0") for name, _ in fixed]
        split_metrics = {}
        has_plain = False
        for split, stats in (("calibration", calib), ("test", test)):
            m, has_plain = with_plain(self.metrics, stats, settings)  # the plain network last, when the cache has its costs
            per_exit = {"fine_acc_per_exit": stats.acc_per_exit("fine").tolist(),
                        "coarse_acc_per_exit": stats.acc_per_exit("coarse").tolist()}
            split_metrics[split] = [pick(m, i) | per_exit for i in range(len(m["accuracy"]))]
        if has_plain:
            names.append((PLAIN, f"{PLAIN}/0"))
            settings = np.concatenate([settings, plain_thresholds(2, calib.n_exits)[None]])
        # a trial's front: its calibrated points and the plain network
        eligible = [i for i, (policy, _) in enumerate(names) if policy in ("calibrated", PLAIN)]
        objs = np.array([[split_metrics["calibration"][i][n] for n in DECLARATION.point_objectives] for i in eligible])
        on_trial_front = dict(zip(eligible, non_dominated_mask(objs, DECLARATION.maximize(DECLARATION.point_objectives))))
        points = []
        for i, (policy, pid) in enumerate(names):
            reference = i not in on_trial_front
            points += point_rows(pid, policy, reference=reference, trial_front=bool(on_trial_front.get(i, False)),
                                 params={"thresholds_fine": settings[i, 0].tolist(), "thresholds_coarse": settings[i, 1].tolist(),
                                         PLAIN: policy == PLAIN},
                                 by_split={s: split_metrics[s][i] for s in split_metrics})
        trial = {"hypervolume": res.hypervolume, "front_size": int(len(res.front)), "settings_evaluated": res.n_evaluated,
                 "exit_flops": calib.costs["flops"].tolist()}
        return Outcome(points, trial, res.front)

    def thresholds(self, point: Mapping[str, Any], model: Any) -> np.ndarray:
        return np.array([point["thresholds_fine"], point["thresholds_coarse"]], dtype=np.float64)



def family(budget: Budget, options: Mapping[str, str]) -> GranHBN:
    return GranHBN(DECLARATION, budget.calibration, largest_configs(budget))


@register_space
def gran_hbn() -> Space:
    return Space(
        name="gran_hbn",
        description="Gran-HBN / AG-HBN early-exit network, fine+coarse heads per exit, entropy exits",
        define=define,
        family=family,
        largest_configs=largest_configs,
        default_data="cifar100",
        budgets=BUDGETS,
    )
