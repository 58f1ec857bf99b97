"""BranchyNet: entropy early exits on flat labels (Teerapittayanon et al., ICPR 2016).

Branchy backbones: a CIFAR ResNet cut at half-stages (B-ResNet; width and depth searched, the
full budget reaching ResNet-110) and the AlexNet-style network cut after each conv layer
(B-AlexNet). 2 to 5 exits whose positions are searched (the first exit's place, then whether
each later cut point gets one; the last always does), branch shape searched (a linear head, or
1-2 conv layers then linear, as in BranchyNet), one flat head per exit (only it is built and
counted), per-exit loss weights searched (BranchyNet found weighting early branches more helps).

Exit rule: a sample leaves at the first exit whose normalised entropy is <= t[k]; the last exit
always answers. After training, four calibration modes each make operating points on the
calibration split (tagged with the mode as their `policy`), all scored on test:

1. `target`  BranchyNet's own: per exit, "always exit" when that exit's accuracy meets the
   target, else the entropy percentile at which its accepted samples meet it; swept over
   targets; the point with the best accuracy-to-latency ratio is marked (`best_ratio`);
2. `budget`  MSDNet's: exit-rate profiles p_k proportional to q^k, thresholds set so that
   n * p_k samples exit at k; swept over q;
3. `search`  the inner multi-objective Optuna search over the thresholds;
4. `risk`    per-exit thresholds with a finite-sample guarantee: with probability >= 1 - delta
   over the calibration draw, the accuracy loss against the final exit is at most epsilon
   (Learn-then-Test with Hoeffding-Bentkus p-values, trainables/exits/risk.py).

Every trial also offers the network without early exits as an operating point (policy `plain`,
trainables/exits/plain.py): the last exit's accuracy at the plain network's cost, on the fronts
like any other point, so the default rule never returns a point slower than it at no better
accuracy.

Costs: expected FLOPs and measured latency per image (batch 1, and batched with samples leaving
at their exit), from the trial's predictor timed answering at each exit, in sequence as dynamic
inference runs it, on the trial's device (trainables/engine/cost.py); every point carries its
speed-up over the plain network, measured and in FLOPs, and their ratio.
`--objective latency|flops|both` picks the cost that is a point objective. The trial's signal
(every epoch and at the end) is the hypervolume of all its points on calibration.

Published (../shared/RESEARCH.md): CIFAR-10 B-AlexNet 2.4x faster at +0.8 pt; B-ResNet-110 1.9x
at -1.5 pt; weighting the first branch 1.0 and the last 0.3 gave +1%.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from spaces import register_space
from spaces._base import Budget, Option, Space
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
    plain_thresholds,
    with_plain,
)
from trainables.exits.modes import budget_thresholds, target_thresholds
from trainables.exits.risk import risk_calibrate
from trainables.engine.family import Evaluation, Family, TrialInputs, pick, point_rows
from trainables.engine.batch_latency import expected_batch_ms, timed_sizes
from trainables.engine.cost import LATENCY
from trainables.losses import GranularLoss, config_exit_weights
from trainables.pareto import hypervolume, non_dominated_mask

_SEARCH_KEYS = ("n_trials", "neighbours", "population", "levels", "max_points")
BUDGETS = {
    "smoke": Budget("smoke", epochs=4, data_size="smoke", trials=4, calibration={
        "n_trials": 96, "neighbours": 16, "population": 32, "levels": 32, "max_points": 24,
        "targets": 12, "qs": [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0], "epsilons": [0.01, 0.02, 0.05], "delta": 0.1,
        "latency": {"batch_size": 128, "warmup": 3, "repeats": 10}}),
    "full": Budget("full", epochs=40, data_size="full", trials=32, calibration={
        "n_trials": 512, "neighbours": 32, "population": 64, "levels": 64, "max_points": 64,
        "targets": 24, "qs": [0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0],
        "epsilons": [0.005, 0.01, 0.02, 0.05], "delta": 0.1,
        "latency": {"batch_size": 256, "warmup": 5, "repeats": 20}}),
}

RESNET_WIDTHS = {"smoke": [8], "full": [16, 32]}
RESNET_BLOCKS = {"smoke": [2], "full": [3, 5, 9, 18]}  # 6n+2 layers: ResNet-20, -32, -56, -110
ALEXNET_WIDTHS = {"smoke": [0.125, 0.25], "full": [0.5, 1.0]}
HEAD_HIDDEN = {"smoke": [16, 32], "full": [64, 128]}
BATCH_SIZES = {"smoke": [64, 128], "full": [128, 256, 512]}
# cut points: ResNet's 3 stages in halves (6 pieces), AlexNet's 5 conv layers; early exits may sit
# at the first four cut points, so a network has 2 to 5 exits
FINAL_CUT = {"resnet": 5, "alexnet": 4}
EARLY_CUTS = 4


def define(trial, budget: Budget) -> dict[str, Any]:
    """Define-by-run: only suggest_* calls; returns the derived constants."""
    b = budget.name
    backbone = trial.suggest_categorical("backbone", ["resnet", "alexnet"])
    if backbone == "resnet":
        trial.suggest_categorical("resnet.width", RESNET_WIDTHS[b])
        trial.suggest_categorical("resnet.blocks", RESNET_BLOCKS[b])
        const: dict[str, Any] = {"resnet.n_stages": 3, "resnet.splits": 2}
    else:
        trial.suggest_categorical("alexnet.width", ALEXNET_WIDTHS[b])
        const = {"alexnet.cuts": "layers"}
    first = trial.suggest_int("first_exit", 0, EARLY_CUTS - 1)
    later = [c for c in range(first + 1, EARLY_CUTS) if trial.suggest_categorical(f"exit_after_cut{c}", [True, False])]
    head = trial.suggest_categorical("head", ["linear", "conv"])
    if head == "conv":
        trial.suggest_int("head_convs", 1, 2)
        trial.suggest_categorical("head_hidden", HEAD_HIDDEN[b])
    trial.suggest_int("epochs", max(1, math.ceil(budget.epochs / 2)), budget.epochs)
    trial.suggest_float("exit_weight_first", 0.3, 1.0)
    trial.suggest_float("exit_weight_last", 0.3, 1.0)
    trial.suggest_categorical("exit_grad_scale", [0.25, 1.0])
    lr = suggest_training(trial, BATCH_SIZES[b])
    return {"exit_after": [first, *later, FINAL_CUT[backbone]], "lr": lr, **const}


def largest_configs(budget: Budget) -> list[dict[str, Any]]:
    """The most expensive network of each backbone: every exit, the widest two-conv branches."""
    b = budget.name
    head = {"head": "conv", "head_convs": 2, "head_hidden": max(HEAD_HIDDEN[b])}
    return [
        {"backbone": "resnet", "resnet.width": max(RESNET_WIDTHS[b]), "resnet.blocks": max(RESNET_BLOCKS[b]),
         "resnet.n_stages": 3, "resnet.splits": 2, "exit_after": [0, 1, 2, 3, 5], **head},
        {"backbone": "alexnet", "alexnet.width": max(ALEXNET_WIDTHS[b]), "alexnet.cuts": "layers",
         "exit_after": [0, 1, 2, 3, 4], **head},
    ]


COST = {"latency": ("latency_ms",), "flops": ("expected_flops",), "both": ("latency_ms", "expected_flops")}
COST_NORM = {"latency_ms": "latency_norm", "expected_flops": "expected_flops_norm"}
MODES = ("target", "budget", "search", "risk")

POINT = (
    Column("accuracy", direction="max", unit="fraction", description="top-1 accuracy of the answers"),
    Column("accuracy_drop", unit="fraction", description="the final exit's accuracy on this split minus this point's"),
    Column("risk", unit="fraction", description="fraction the final exit gets right but this point answers wrong "
                                                "(what the risk mode bounds by epsilon)"),
    Column("latency_ms", direction="min", unit="ms", description="expected latency per image at batch 1"),
    Column("latency_ms_batched", direction="min", unit="ms",
           description="expected time per image in a batch whose samples leave at their exit (each segment "
                       "timed on the images that reach it)"),
    Column("latency_norm", direction="min", unit="ratio", description="latency_ms / the largest network's batch-1 latency"),
    Column("expected_flops", direction="min", unit="FLOPs", description="mean FLOPs per image"),
    Column("expected_flops_norm", direction="min", unit="ratio", description="expected FLOPs / FLOPs of the largest network"),
    Column("speedup_latency", unit="x", description="measured speed-up: batch-1 latency of this network without early "
                                                    "exits / latency_ms"),
    Column("speedup_latency_batched", unit="x", description="measured speed-up in a batch: batched time per image of this "
                                                            "network without early exits / latency_ms_batched"),
    Column("speedup_flops", unit="x", description="FLOPs of this network without early exits / expected_flops"),
    Column("speedup_realised", unit="ratio", description="speedup_latency / speedup_flops: how much of the FLOPs "
                                                         "speed-up shows in measured batch-1 time"),
    Column("exit_fraction", "floats", per_exit=True, unit="fraction", description="fraction answered at each exit"),
    Column("acc_per_exit", "floats", per_exit=True, unit="fraction", description="each exit's accuracy on the whole split"),
)
POLICY = (
    Column("thresholds", "floats", per_exit=True, description="per-exit normalised-entropy threshold (-1 never, 2 always)"),
    Column("mode_param", description="the mode's parameter: target accuracy (target), q (budget), epsilon (risk)"),
    Column("certified", "bool", description="risk mode: the fixed-sequence test certified this setting (else all answer last)"),
    Column("best_ratio", "bool", description="target mode: best accuracy / latency_ms on calibration"),
    PLAIN_COLUMN,
)
TRIAL = (
    Column("hypervolume", direction="max", description="hypervolume of all the trial's calibrated points on calibration "
                                                       "(its search signal); recomputable from calibration_front.npz"),
    Column("settings_evaluated", "int", description="threshold settings the search mode scored"),
    Column("exit_flops", "floats", per_exit=True, unit="FLOPs", description="cumulative FLOPs per image to each exit"),
    Column("exit_latency_ms", "floats", per_exit=True, unit="ms", description="measured batch-1 latency to each exit"),
    Column("exit_latency_ms_batched", "floats", per_exit=True, unit="ms", description="measured batched time per image to each exit"),
    Column("plain_latency_ms", unit="ms", description="batch-1 latency of the network without early exits"),
    Column("plain_latency_ms_batched", unit="ms", description="batched time per image of the network without early exits"),
    Column("plain_flops", unit="FLOPs", description="FLOPs of the network without early exits"),
    Column("reference_latency_ms", unit="ms", description="batch-1 latency of the space's largest network (normaliser)"),
)
CURVES = (
    Column("hypervolume", direction="max", description="hypervolume of the calibrated points after this epoch"),
    Column("calib_acc_per_exit", "floats", per_exit=True, unit="fraction", description="each exit's accuracy on calibration"),
)
NOTES = {
    "FLOPs convention": "FlopCounterMode at batch 1 (2 FLOPs per multiply-accumulate of matmuls and convolutions); the cost "
                        "to exit k includes every stage up to k and the branch of every exit on the way",
    "latency": "the trial's predictor timed end to end on its device, answering at each exit (every stage, branch and "
               "decision up to it, in sequence, as dynamic inference runs them) and without early exits: lower "
               "quartile of interleaved rounds after warm-up, one batch size at a time, at batch 1, a sub-batch and a "
               "batch; batch-1 latency = sum over exits of (fraction exiting there) x (time to that exit); batched: the "
               "expected time per image of a batch whose images split, each segment timed on the images that reach it; "
               "benchmarks.dynamic_latency checks both against the predictor timed on test images",
    "plain network": "every trial offers the network without early exits (policy plain, marked): the last exit's accuracy "
                     "at the plain network's cost; it is eligible for the fronts, so the default rule never returns a "
                     "point slower than it at no better accuracy",
    "calibration modes": "target (BranchyNet: per-exit entropy percentile meeting a target accuracy), budget (MSDNet: "
                         "exit rates proportional to q^k), search (multi-objective Optuna search), risk (Learn-then-Test: "
                         "accuracy loss vs the final exit <= epsilon with probability >= 1 - delta); all chosen on calibration",
}


LATENCY_CONVENTION = dataclasses.replace(LATENCY, columns=(
    "latency_ms", "latency_ms_batched", "latency_norm", "speedup_latency", "speedup_latency_batched", "speedup_realised",
    "exit_latency_ms", "exit_latency_ms_batched", "plain_latency_ms", "plain_latency_ms_batched", "reference_latency_ms"))


def declaration(objective: str) -> Declaration:
    costs = COST[objective]
    hv = ("accuracy", *(COST_NORM[c] for c in costs))
    return Declaration(
        yields="points", point=POINT, policy=POLICY, trial=TRIAL, curves=CURVES,
        point_objectives=("accuracy", *costs), objectives={"hypervolume": "max"},
        report=ReportSpec(
            fronts=(("latency_ms", "accuracy"), ("expected_flops", "accuracy"), ("latency_ms_batched", "accuracy")),
            table=("accuracy", "accuracy_drop", "latency_ms", "latency_ms_batched", "speedup_latency",
                   "speedup_latency_batched", "expected_flops", "speedup_flops", "speedup_realised", "risk"),
            trial_curve=(costs[0], "accuracy"), marks=("best_ratio", PLAIN), exit_fraction="exit_fraction",
            epoch_panels=("hypervolume", "calib_acc_per_exit"),
            key_config=("backbone", "resnet.blocks", "resnet.width", "alexnet.width", "head", "exit_after", "epochs",
                        "exit_weight_first", "exit_weight_last"),
        ),
        selection=Selection(best=costs[0], constraints={"accuracy": ("within", 0.01)}, tie_break="expected_flops",
                            aliases={"flops": "expected_flops"},
                            description=f"the global-front point with the lowest calibration {costs[0]} among those within "
                                        "1 point of the front's best calibration accuracy"),
        hv_objectives=hv, hv_reference=(0.0,) + (1.0,) * len(costs),
        notes={**NOTES, "hypervolume": f"of ({', '.join(hv)}), reference point (0{', 1' * len(costs)})"},
        answer_metric="accuracy",
        conventions=(LATENCY_CONVENTION,),
    )


class BranchyNet(Family):
    """BranchyNet's own parts: one flat head per exit, latency, and four calibration modes."""

    levels = ("fine",)
    latency = True

    def __init__(self, objective: str, calibration: Mapping[str, Any], reference_configs) -> None:
        super().__init__(declaration(objective), calibration, reference_configs)
        self.objective = objective

    def make_loss(self, inputs: TrialInputs, n_exits: int) -> GranularLoss:
        config = inputs.config
        weights = config_exit_weights(config, n_exits)
        return GranularLoss(exit_weights=weights, lambda_fine=1.0, lambda_coarse=0.0,
                            label_smoothing=float(config.get("label_smoothing", 0.0)))

    @staticmethod
    def metrics(scores: PointScores, stats: ExitStats) -> dict[str, np.ndarray]:
        lat = scores.expected(stats.costs["latency_ms"])
        flops = scores.expected(stats.costs["flops"])
        timed = timed_sizes(stats.costs, stats.batch_of)  # a batch's images split (trainables/engine/batch_latency.py)
        if timed is None:
            raise ValueError("the exit cache states no batch sizes of its latency timings (it was made under version 2 "
                             "of the latency convention or earlier): re-run the trial")
        batched = expected_batch_ms(scores.exit_fraction, *timed)
        final = stats.acc_per_exit(0)[-1]
        return {
            "accuracy": scores.accuracy, "accuracy_drop": final - scores.accuracy,
            "risk": scores.risk if scores.risk is not None else np.full(len(lat), np.nan),
            "latency_ms": lat, "latency_ms_batched": batched,
            "latency_norm": lat / stats.references["latency_ms"],
            "expected_flops": flops, "expected_flops_norm": flops / stats.references["flops"],
            "speedup_latency": stats.plain["latency_ms"] / lat,
            "speedup_latency_batched": stats.plain["latency_ms_batched"] / batched,
            "speedup_flops": stats.plain["flops"] / flops,
            "speedup_realised": (stats.plain["latency_ms"] / lat) / (stats.plain["flops"] / flops),
            "exit_fraction": scores.exit_fraction,
        }

    def _hv_matrix(self, scores: PointScores, stats: ExitStats) -> np.ndarray:
        m = self.metrics(scores, stats)
        return np.stack([m[n] for n in self.declaration.hv_objectives], axis=1)

    def _scored(self, stats: ExitStats, thresholds: np.ndarray) -> dict[str, np.ndarray]:
        """The point metrics of the settings `thresholds`, then of the network without early exits."""
        m, has_plain = with_plain(self.metrics, stats, thresholds)
        if not has_plain:
            raise ValueError("the exit cache has no costs of the network without early exits (plain:*): re-run the trial")
        return m

    def settings(self, calib: ExitStats, seed: int) -> tuple[list[tuple[str, float, bool | None]], np.ndarray, int]:
        """Every mode's settings on calibration: (policy, mode parameter, certified) and (S, 1, K) thresholds."""
        cal = self.calibration
        entropy, correct = calib.entropy[0], calib.correct[0]
        acc = calib.acc_per_exit(0)
        tags: list[tuple[str, float, bool | None]] = []
        blocks = []
        targets = np.linspace(min(float(acc.min()), 0.98), 0.99, int(cal["targets"]))
        blocks.append(target_thresholds(entropy, correct, targets))
        tags += [("target", float(t), None) for t in targets]
        qs = np.asarray(cal["qs"], dtype=np.float64)
        blocks.append(budget_thresholds(entropy, qs)[0])
        tags += [("budget", float(q), None) for q in qs]
        decl = self.declaration
        res = calibrate(calib, lambda sc: self._hv_matrix(sc, calib), decl.maximize(decl.hv_objectives),
                        decl.hv_reference, seed=seed, **{k: cal[k] for k in _SEARCH_KEYS})
        blocks.append(res.thresholds[:, 0])
        tags += [("search", math.nan, None)] * len(res.thresholds)
        cost = calib.costs["latency_ms" if self.objective != "flops" else "flops"]
        for eps in cal["epsilons"]:
            r = risk_calibrate(entropy, correct, cost, epsilon=float(eps), delta=float(cal["delta"]), seed=seed)
            blocks.append(r.thresholds[None])
            tags.append(("risk", float(eps), bool(r.certified)))
        return tags, np.concatenate(blocks)[:, None, :], res.n_evaluated

    def evaluate(self, calib_cache: ExitCache, inputs: TrialInputs) -> Evaluation:
        calib = calib_cache.stats()
        tags, thresholds, n_eval = self.settings(calib, inputs.seed)
        m = self._scored(calib, thresholds)  # every mode's settings, and the plain network (the last row)
        obj = np.stack([m[n] for n in self.declaration.hv_objectives], axis=1)
        maximize = self.declaration.maximize(self.declaration.hv_objectives)
        front = obj[non_dominated_mask(obj, maximize)]
        hv = hypervolume(front, self.declaration.hv_reference, maximize)
        curve = {"hypervolume": hv, "calib_acc_per_exit": calib.acc_per_exit(0).tolist()}
        return Evaluation({"hypervolume": hv}, curve, (tags, thresholds, n_eval, front))

    def finish(self, evaluation: Evaluation, calib_cache: ExitCache, test_cache: ExitCache, inputs: TrialInputs) -> Outcome:
        calib, test = calib_cache.stats(), test_cache.stats()
        tags, thresholds, n_eval, front = evaluation.state
        fixed = fixed_policies(1, calib.n_exits, ("exit",))
        n_cal = len(tags)
        all_t = np.concatenate([thresholds, np.stack([t for _, t in fixed]), plain_thresholds(1, calib.n_exits)[None]])
        by_split = {}
        for split, stats in (("calibration", calib), ("test", test)):
            m = self._scored(stats, all_t[:-1])  # rows: the modes' settings, the fixed references, the plain network
            by_split[split] = (m, {"acc_per_exit": stats.acc_per_exit(0).tolist()})
        cm = by_split["calibration"][0]
        names = list(self.declaration.point_objectives)
        eligible = np.r_[np.arange(n_cal), len(all_t) - 1]  # a trial's front: its modes' points and the plain network
        on_trial_front = dict(zip(eligible.tolist(), non_dominated_mask(
            np.stack([cm[n][eligible] for n in names], axis=1), self.declaration.maximize(names))))
        is_target = np.array([t[0] == "target" for t in tags])
        ratio = np.where(is_target, cm["accuracy"][:n_cal] / cm["latency_ms"][:n_cal], -np.inf)
        best_ratio = int(np.argmax(ratio)) if is_target.any() else -1
        points = []
        counters: dict[str, int] = {}
        for i in range(len(all_t)):
            if i < n_cal:
                policy, param, certified = tags[i]
                reference = False
            elif i == len(all_t) - 1:
                policy, param, certified, reference = PLAIN, math.nan, None, False
            else:
                policy, param, certified, reference = fixed[i - n_cal][0], math.nan, None, True
            idx = counters[policy] = counters.get(policy, -1) + 1
            params = {"thresholds": all_t[i, 0].tolist(), "mode_param": None if math.isnan(param) else param,
                      "certified": certified, "best_ratio": i == best_ratio, PLAIN: policy == PLAIN}
            rows = {split: pick(m, i) | extra for split, (m, extra) in by_split.items()}
            points += point_rows(f"{policy}/{idx}", policy, reference=reference,
                                 trial_front=bool(on_trial_front.get(i, False)), params=params, by_split=rows)
        trial = {"hypervolume": evaluation.signal["hypervolume"], "settings_evaluated": n_eval,
                 "exit_flops": calib.costs["flops"].tolist(), "exit_latency_ms": calib.costs["latency_ms"].tolist(),
                 "exit_latency_ms_batched": calib.costs["latency_ms_batched"].tolist(),
                 "plain_latency_ms": calib.plain["latency_ms"], "plain_latency_ms_batched": calib.plain["latency_ms_batched"],
                 "plain_flops": calib.plain["flops"],
                 "reference_latency_ms": calib.references["latency_ms"]}
        return Outcome(points, trial, front)

    def thresholds(self, point: Mapping[str, Any], model: Any) -> np.ndarray:
        return np.asarray([point["thresholds"]], dtype=np.float64)


def family(budget: Budget, options: Mapping[str, str]) -> BranchyNet:
    return BranchyNet(options.get("objective", "latency"), budget.calibration, largest_configs(budget))


@register_space
def branchynet() -> Space:
    return Space(
        name="branchynet",
        description="BranchyNet: entropy early exits on flat labels, B-ResNet / B-AlexNet, latency and FLOPs",
        define=define,
        family=family,
        largest_configs=largest_configs,
        default_data="cifar10",
        budgets=BUDGETS,
        options={"objective": Option(("latency", "flops", "both"), "latency",
                                     "the cost that is a point objective beside accuracy")},
    )
