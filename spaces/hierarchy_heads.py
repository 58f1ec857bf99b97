"""hierarchy_heads: flat, low-rank and hierarchical classifier heads, routing calibrated after training.

AI701 (../shared/RESEARCH.md) put a superclass head on a backbone, then one child head per
superclass of which only the chosen one runs, and factorised the flat head as features -> d ->
classes; its cost was head MACs. Its hard routing (superclass -> child head) reached 63.55% on
CIFAR-100 against the flat head's 74.3%. Here the routing is a post-training parameter: when the
superclass head is unsure (normalised entropy above a threshold t), the child heads of the top-k
superclasses run and the answer maximises p(superclass) x p(child | superclass)
(trainables/hierarchy_heads/routing.py). Every trial caches every head's outputs on the
calibration split and scores every (t, k) there (train once, calibrate many), so each trial
yields a front of accuracy against head MACs; test is only scored.

Searched: the backbone (ResNet-9, width; or the CIFAR ResNet, width and depth), the head (flat;
low-rank with rank d and an optional ReLU; hierarchical with flat or low-rank child heads), the
training of a hierarchical head (joint: superclass and child losses with weights and start / ramp
epochs; or staged: superclass head and backbone first, then the child heads on the frozen
backbone, as the research did), an early-stopping patience, and optimiser and schedule.

Cost of an image as executed: head MACs = the superclass head's plus those of every child head
that ran for it (a flat or low-rank head: its own); total FLOPs = the backbone's + 2 per head MAC.

Superclasses are the dataset's own (`--tree superclass`), or `--tree induced`: a hierarchical head
first trains a flat probe head (with the backbone), then `induced_k` groups are induced from the
probe's class weight vectors (average-linkage clustering on cosine distance;
trainables/hierarchy_heads/induce.py), and the superclass and child heads train on that grouping;
the grouping is stored with the trial (`induced_groups`, and in every cache and model.pt).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from spaces import register_space
from spaces._base import Budget, Option, Space
from spaces._training import suggest_training
from trainables.contract import Column, Declaration, Outcome, ReportSpec, Selection
from trainables.exits import ALWAYS, NEVER, ExitCache
from trainables.engine.family import DataInfo, Evaluation, Family, TrialInputs, pick, point_rows
from trainables.losses import ramp
from trainables.pareto import hypervolume, non_dominated_mask
from trainables.engine.plan import Plan, Stage, StopRule

BUDGETS = {
    "smoke": Budget("smoke", epochs=4, data_size="smoke", trials=4, calibration={"levels": 24, "max_points": 32, "max_k": 3}),
    "full": Budget("full", epochs=30, data_size="full", trials=32, calibration={"levels": 64, "max_points": 96, "max_k": 5}),
}
RESNET9_WIDTHS = {"smoke": [8], "full": [32, 64]}
RESNET_WIDTHS = {"smoke": [8], "full": [32, 64]}
RESNET_BLOCKS = {"smoke": (1, 1), "full": (1, 2)}
RANKS = {"smoke": [4, 8], "full": [16, 32, 64, 128]}
BATCH_SIZES = {"smoke": [64, 128], "full": [128, 256, 512]}
SCHEDULES = ("onecycle", "cosine", "multistep")  # one-cycle: how ResNet-9 is trained
STOP_PATIENCE = (0, 2)  # 0: no early stopping
INDUCED_K = {"smoke": [2, 3], "full": [4, 10, 20]}  # groups induced (clipped to the number of classes)


def define(trial, budget: Budget, options: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Define-by-run: only suggest_* calls; returns the derived constants. With `--tree induced` a
    hierarchical head searches how many groups are induced and how long the flat probe trains."""
    b = budget.name
    induced = (options or {}).get("tree") == "induced"
    backbone = trial.suggest_categorical("backbone", ["resnet9", "resnet"])
    if backbone == "resnet9":
        trial.suggest_categorical("resnet9.width", RESNET9_WIDTHS[b])
    else:
        trial.suggest_categorical("resnet.width", RESNET_WIDTHS[b])
        trial.suggest_int("resnet.blocks", *RESNET_BLOCKS[b])
        trial.suggest_int("resnet.n_stages", 3, 4)
    head = trial.suggest_categorical("head", ["flat", "lowrank", "hier"])
    if head == "lowrank":
        trial.suggest_categorical("rank", RANKS[b])
    if head == "hier":
        child = trial.suggest_categorical("child_head", ["flat", "lowrank"])
        if child == "lowrank":
            trial.suggest_categorical("child_rank", RANKS[b])
    if head != "flat":
        trial.suggest_categorical("nonlinear", [False, True])
    if head == "hier" and induced:  # a probe stage, then the routed heads: two epochs at least
        epochs = trial.suggest_int("epochs", max(2, math.ceil(budget.epochs / 2)), max(2, budget.epochs))
        trial.suggest_categorical("induced_k", INDUCED_K[b])
        trial.suggest_int("probe_epochs", 1, max(1, epochs // 2))
        # routed stage: every parameter (joint) or the superclass and child heads on the frozen backbone (staged)
        trial.suggest_categorical("training", ["joint", "staged"])
    else:
        epochs = trial.suggest_int("epochs", max(1, math.ceil(budget.epochs / 2)), budget.epochs)
    if head == "hier" and not induced:
        # staged needs an epoch for each stage; a one-epoch trial trains jointly (no `training` key)
        training = trial.suggest_categorical("training", ["joint", "staged"]) if epochs >= 2 else "joint"
        if training == "joint":
            ramp_max = max(0, epochs // 3)
            trial.suggest_float("lambda_fine", 0.5, 2.0)
            trial.suggest_float("lambda_coarse", 0.25, 2.0)
            trial.suggest_int("fine_start_epoch", 0, ramp_max)
            trial.suggest_int("fine_ramp_epochs", 0, ramp_max)
        else:
            trial.suggest_int("child_epochs", 1, max(1, epochs // 2))  # of `epochs`, the child heads' stage
    trial.suggest_categorical("stop_patience", list(STOP_PATIENCE))
    lr = suggest_training(trial, BATCH_SIZES[b], schedules=SCHEDULES)
    return {"lr": lr}


def largest_configs(budget: Budget) -> list[dict[str, Any]]:
    b = budget.name
    head = {"head": "hier", "child_head": "flat", "induced_k": max(INDUCED_K[b])}  # induced_k: read with --tree induced
    return [{"backbone": "resnet9", "resnet9.width": max(RESNET9_WIDTHS[b]), **head},
            {"backbone": "resnet", "resnet.width": max(RESNET_WIDTHS[b]), "resnet.blocks": RESNET_BLOCKS[b][1],
             "resnet.n_stages": 4, **head}]


COST_CONVENTION = (
    "head MACs per image as executed: the superclass head's plus every child head that ran for that image (a flat "
    "or low-rank head: its own), counted from the linear layers (in x out, biases not counted); total FLOPs = the "
    "backbone's (torch.utils.flop_counter at batch 1) + 2 per head MAC; expected values are means over the split's "
    "images; normalised FLOPs divide by the space's largest network's, relative head MACs by the flat head's on the "
    "same backbone"
)

DECLARATION = Declaration(
    yields="points",
    point=(
        Column("accuracy", direction="max", unit="fraction", description="fine-class answers right"),
        Column("head_macs", direction="min", unit="MACs", description="mean head multiply-accumulates per image, as executed"),
        Column("expected_flops", direction="min", unit="FLOPs", description="mean total FLOPs per image, as executed"),
        Column("expected_flops_norm", direction="min", unit="ratio", description="expected FLOPs / the space's largest network's"),
        Column("head_macs_rel", direction="min", unit="ratio", description="head MACs / the flat head's on this backbone"),
        Column("answer_superclass_accuracy", unit="fraction", description="answers in the label's superclass"),
        Column("child_accuracy", unit="fraction",
               description="answers right among those in the right superclass (child accuracy given a correct superclass)"),
        Column("multi_head_fraction", unit="fraction", description="images for which more than one child head ran"),
    ),
    policy=(
        Column("routing_threshold", description="normalised superclass entropy above which the top-k child heads run "
                                                "(2: hard routing; -1: k heads for every image; unused by a flat head)"),
        Column("routing_k", description="child heads run for an unsure image (unused by a flat head)"),
        Column("flat_head", "bool", description="a flat or low-rank head (no routing): the reference the routed heads are read against"),
    ),
    trial=(
        Column("hypervolume", direction="max",
               description="hypervolume of the trial's calibration front (its search signal); trials/<id>/calibration_front.npz"),
        Column("head_type", "str", description="flat, lowrank, or hier/<child head>"),
        Column("tree", "str", description="the superclasses routed on: superclass (the dataset's), induced, "
               "or none (a flat head routes on no tree)"),
        Column("induced_groups", "str", description="an induced tree's groups of class names (JSON), empty otherwise"),
        Column("superclass_accuracy", unit="fraction", description="the superclass head's top-1 accuracy on calibration "
                                                                    "(a flat head: the superclass its probabilities imply)"),
        Column("flat_head_macs", unit="MACs", description="MACs of a flat head on this backbone (features x classes)"),
        Column("backbone_flops", unit="FLOPs", description="FLOPs per image of the backbone"),
        Column("settings_evaluated", "int", description="routing settings scored on calibration"),
    ),
    curves=(
        Column("hypervolume", direction="max", description="calibration-front hypervolume after this epoch"),
        Column("accuracy", direction="max", unit="fraction", description="best calibration accuracy over routing settings"),
        Column("superclass_accuracy", direction="max", unit="fraction", description="superclass head's calibration accuracy"),
    ),
    point_objectives=("accuracy", "head_macs", "expected_flops"),
    objectives={"hypervolume": "max"},
    report=ReportSpec(
        fronts=(("head_macs", "accuracy"), ("expected_flops", "accuracy")),
        table=("accuracy", "head_macs", "expected_flops", "answer_superclass_accuracy", "child_accuracy", "multi_head_fraction"),
        trial_curve=("head_macs", "accuracy"),
        marks=("flat_head",),
        epoch_panels=("hypervolume", "accuracy", "superclass_accuracy"),
        key_config=("backbone", "head", "child_head", "rank", "child_rank", "training", "epochs", "optimizer"),
    ),
    selection=Selection(best="accuracy", tie_break="head_macs", aliases={"macs": "head_macs", "flops": "expected_flops"},
                        description="the global-front point with the best calibration accuracy; ties to fewer head MACs"),
    hv_objectives=("accuracy", "head_macs_rel", "expected_flops_norm"),
    # FLOPs reference 2, not 1: the space's largest network (normalised FLOPs 1) still scores by its accuracy
    hv_reference=(0.0, 4.0, 2.0),
    answer_metric="accuracy",
    notes={
        "cost convention": COST_CONVENTION,
        "routing": "trainables/hierarchy_heads/routing.py: entropy threshold and k, calibrated on the calibration split's "
                   "cached head outputs; test only scored",
        "hypervolume": "of (accuracy, head MACs / flat head's, expected FLOPs / largest network's), reference (0, 4, 2)",
    },
)


def _child_loss(fine_joint, coarse, y_fine, y_coarse):
    """Cross-entropy of the true superclass's child head: -log p(c | s(c))."""
    import torch

    logp_s = torch.log_softmax(coarse.float(), dim=-1)
    return -(fine_joint.float().gather(1, y_fine[:, None]) - logp_s.gather(1, y_coarse[:, None])).mean()


class HierarchyHeads(Family):
    """One backbone and one head per trial; routing of a hierarchical head calibrated on its cache."""

    levels = ("fine", "coarse")

    def __init__(self, declaration: Declaration, calibration: Mapping[str, Any], reference_configs=(),
                 tree: str = "superclass") -> None:
        super().__init__(declaration, calibration, reference_configs)
        self.tree = tree
        self._features: dict[str, int] = {}

    def induced(self, config: Mapping[str, Any]) -> bool:
        return self.tree == "induced" and config.get("head") == "hier"

    def build_model(self, config: Mapping[str, Any], data: DataInfo):
        from trainables.hierarchy_heads.model import build_hierarchy_heads_net

        return build_hierarchy_heads_net(config, data.channels, data.coarse_of, induced=self.induced(config))

    def heads(self, config: Mapping[str, Any], data: DataInfo, grouping) -> dict[str, Any]:
        """The head's MACs (per child head, too) on a grouping, and the flat head's on the same backbone."""
        from trainables.hierarchy_heads.model import Heads

        key = json.dumps(dict(config), sort_keys=True, default=str)
        if key not in self._features:
            self._features[key] = self.build_model(config, data).feature_channels
        F = self._features[key]
        head = Heads(config["head"], F, [int(g) for g in grouping], rank=int(config.get("rank", 0)),
                     nonlinear=bool(config.get("nonlinear", False)), child=config.get("child_head", "flat"),
                     child_rank=int(config.get("child_rank", 0)))
        return {**head.macs(), "all": head.all_macs(), "flat": F * data.n_fine, "hier": head.hierarchical}

    def cache_extras(self, net: Any, data: DataInfo) -> dict[str, np.ndarray]:
        """The grouping the heads route on (an induced one once induced) and the backbone's FLOPs."""
        if getattr(net, "_backbone_flops", None) is None:
            import torch

            from trainables.engine.cost import count_flops

            x = torch.zeros(1, data.channels, data.image_size, data.image_size, device=next(net.parameters()).device)
            net._backbone_flops, _ = count_flops(torch.nn.Sequential(*net.stages), x)
        return {"coarse_of": np.asarray(net.head.coarse_of, dtype=np.int64),
                "backbone_flops": np.asarray([net._backbone_flops], dtype=np.float64)}

    def plan(self, inputs: TrialInputs) -> Plan:
        config = inputs.config
        epochs = int(config["epochs"])
        patience = int(config.get("stop_patience", 0))
        stop = (lambda metric: StopRule(metric, "max", patience)) if patience else (lambda metric: None)
        heads_only = ("head.coarse", "head.children_heads")
        if self.induced(config):
            probe = min(int(config.get("probe_epochs", 1)), epochs - 1)
            return Plan((Stage("probe", probe, trains=("stages", "head.probe"), stop=stop("accuracy")),
                         Stage("routed", epochs - probe, trains=heads_only if config.get("training") == "staged" else None,
                               stop=stop("accuracy"))))
        if config.get("head") == "hier" and config.get("training") == "staged":
            child = min(int(config.get("child_epochs", 1)), epochs - 1)
            return Plan((Stage("superclass", epochs - child, trains=("stages", "head.coarse"), stop=stop("superclass_accuracy")),
                         Stage("children", child, trains=("head.children_heads",), stop=stop("accuracy"))))
        return Plan((Stage("train", epochs, stop=stop("accuracy")),))

    def stage_done(self, stage: Stage, net: Any, calib: ExitCache | None, inputs: TrialInputs) -> None:
        """After an induced head's probe stage: group the classes by the probe's weight vectors (the
        same weights on every worker, so the same grouping)."""
        if stage.name != "probe":
            return
        from trainables.hierarchy_heads.induce import induce_groups, weight_similarity

        weights = net.head.probe.weight.detach().float().cpu().numpy()
        net.head.set_grouping(induce_groups(weight_similarity(weights), net.head.coarse.out_features).tolist())

    def make_loss(self, inputs: TrialInputs, n_exits: int):
        import torch.nn.functional as F

        config = inputs.config
        smoothing = float(config.get("label_smoothing", 0.0))
        stage = inputs.stage.name if inputs.stage is not None else "train"

        def fine_ce(outputs, y_fine, y_coarse, epoch):
            return F.cross_entropy(outputs[-1][0].float(), y_fine, label_smoothing=smoothing)

        if config.get("head") != "hier" or stage == "probe":
            return fine_ce
        if stage == "routed":  # -log p(s(y)) - log p(y | s(y)) on the induced grouping: the joint's NLL
            return lambda outputs, y_fine, y_coarse, epoch: F.nll_loss(outputs[-1][0].float(), y_fine)
        if stage == "superclass":
            return lambda outputs, y_fine, y_coarse, epoch: F.cross_entropy(outputs[-1][1].float(), y_coarse,
                                                                            label_smoothing=smoothing)
        if stage == "children":
            return lambda outputs, y_fine, y_coarse, epoch: _child_loss(*outputs[-1], y_fine, y_coarse)
        lf, lc = float(config.get("lambda_fine", 1.0)), float(config.get("lambda_coarse", 1.0))
        start, ramp_epochs = float(config.get("fine_start_epoch", 0)), float(config.get("fine_ramp_epochs", 0))

        def joint(outputs, y_fine, y_coarse, epoch):
            fine, coarse = outputs[-1]
            return (lc * F.cross_entropy(coarse.float(), y_coarse, label_smoothing=smoothing)
                    + ramp(epoch, lf, start, ramp_epochs) * _child_loss(fine, coarse, y_fine, y_coarse))

        return joint

    def _settings(self, cache: ExitCache, inputs: TrialInputs, thresholds: np.ndarray | None = None):
        """Every routing setting's metrics on a split (thresholds from this split when not given)."""
        from trainables.hierarchy_heads.routing import route_top_k, score_settings, thresholds_grid

        data, config = inputs.data, inputs.config
        grouping = np.asarray(cache.extras.get("coarse_of", data.coarse_of), dtype=np.int64)
        n_groups = int(grouping.max()) + 1
        heads = self.heads(config, data, grouping)
        fine, coarse = cache.logits["fine"][-1], cache.logits["coarse"][-1]
        y = cache.labels["fine"]
        backbone = float(cache.extras["backbone_flops"][0]) if "backbone_flops" in cache.extras \
            else float(cache.costs["flops"][-1]) - 2 * heads["all"]
        probing = inputs.stage is not None and inputs.stage.name == "probe"
        if heads["hier"] and not probing:
            max_k = int(self.calibration.get("max_k", 3))
            routed = route_top_k(fine, coarse, grouping, [*range(1, max_k + 1), n_groups], heads["coarse"], heads["children"])
            if thresholds is None:
                thresholds = thresholds_grid(routed.entropy, int(self.calibration.get("levels", 32)))
            m = score_settings(routed, thresholds, y, grouping)
        else:  # one flat answer (a flat or low-rank head, or an induced head's probe while it trains)
            label = np.asarray(fine, dtype=np.float32).argmax(1)
            acc, sup = float((label == y).mean()), float((grouping[label] == grouping[y]).mean())
            macs = float(heads["flat"]) if probing else float(heads["head"])
            m = {"threshold": np.array([ALWAYS]), "k": np.array([1.0]), "accuracy": np.array([acc]),
                 "answer_superclass_accuracy": np.array([sup]), "child_accuracy": np.array([acc / sup if sup else np.nan]),
                 "head_macs": np.array([macs]), "multi_head_fraction": np.array([0.0])}
        m["expected_flops"] = backbone + 2 * m["head_macs"]
        m["expected_flops_norm"] = m["expected_flops"] / float(cache.references.get("flops") or cache.costs["flops"][-1])
        m["head_macs_rel"] = m["head_macs"] / float(heads["flat"])
        superclass = float((np.asarray(coarse, dtype=np.float32).argmax(1) == grouping[y]).mean())
        return m, thresholds, {"backbone_flops": backbone, "flat_head_macs": float(heads["flat"]),
                               "superclass_accuracy": superclass, "grouping": grouping}

    def _front(self, m: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
        names = DECLARATION.hv_objectives
        pts = np.stack([m[n] for n in names], axis=1)
        maximize = DECLARATION.maximize(names)
        keep = non_dominated_mask(pts, maximize)
        # settings that give the same scores (e.g. k = 1 at any threshold) stand once on the front
        _, first = np.unique(pts[keep], axis=0, return_index=True)
        keep[np.flatnonzero(keep)[np.setdiff1d(np.arange(keep.sum()), first)]] = False
        return keep, pts, hypervolume(pts[keep], DECLARATION.hv_reference, maximize)

    def evaluate(self, calib: ExitCache, inputs: TrialInputs) -> Evaluation:
        m, thresholds, extra = self._settings(calib, inputs)
        keep, pts, hv = self._front(m)
        curve = {"hypervolume": hv, "accuracy": float(np.max(m["accuracy"])), "superclass_accuracy": extra["superclass_accuracy"]}
        return Evaluation({"hypervolume": hv}, curve, (m, thresholds, extra, keep, pts))

    def finish(self, evaluation: Evaluation, calib: ExitCache, test: ExitCache, inputs: TrialInputs) -> Outcome:
        config = inputs.config
        m_cal, thresholds, extra, keep, pts = evaluation.state
        m_test, _, _ = self._settings(test, inputs, thresholds)
        hier = config.get("head") == "hier"
        n_groups = int(extra["grouping"].max()) + 1
        on_front = np.flatnonzero(keep)
        # the calibration front, thinned evenly along accuracy to the budget's number of stored points
        front = on_front[np.argsort(m_cal["accuracy"][on_front], kind="stable")]
        max_points = int(self.calibration.get("max_points", 32))
        if len(front) > max_points:
            front = front[np.unique(np.linspace(0, len(front) - 1, max_points).round().astype(int))]
        chosen = [(int(i), True) for i in front]
        if hier:  # hard routing and every child head: read against, not chosen
            for ref in (int(np.flatnonzero((m_cal["threshold"] >= 1) & (m_cal["k"] == 1))[0]),
                        int(np.flatnonzero((m_cal["threshold"] < 0) & (m_cal["k"] == n_groups))[0])):
                if ref not in front:
                    chosen.append((ref, False))
        names = [c.name for c in DECLARATION.point]
        points = []
        for j, (i, on) in enumerate(chosen):
            if on:
                policy = "routed" if hier else str(config["head"])
            else:
                policy = "hard_routing" if m_cal["threshold"][i] >= 1 else "all_heads"
            by_split = {s: pick({n: m[n] for n in names}, i) for s, m in (("calibration", m_cal), ("test", m_test))}
            points += point_rows(f"{policy}/{j}", policy, reference=not on, trial_front=on,
                                 params={"routing_threshold": float(m_cal["threshold"][i]), "routing_k": float(m_cal["k"][i]),
                                         "flat_head": not hier},
                                 by_split=by_split)
        head_type = f"hier/{config.get('child_head', 'flat')}" if hier else str(config["head"])
        groups = ""
        if self.induced(config):
            names_of = inputs.data.fine_names
            groups = json.dumps([[names_of[c] for c in np.flatnonzero(extra["grouping"] == g)] for g in range(n_groups)])
        trial = {"hypervolume": evaluation.signal["hypervolume"], "head_type": head_type,
                 "tree": ("induced" if self.induced(config) else "superclass") if hier else "none", "induced_groups": groups,
                 "superclass_accuracy": extra["superclass_accuracy"], "flat_head_macs": extra["flat_head_macs"],
                 "backbone_flops": extra["backbone_flops"], "settings_evaluated": int(len(m_cal["accuracy"]))}
        return Outcome(points, trial, pts[keep])

    def thresholds(self, point: Mapping[str, Any], model: Any) -> np.ndarray:
        t = np.full((len(model.levels), model.n_exits), NEVER)
        t[0, -1] = ALWAYS  # one exit, answered fine
        return t

    def predictor(self, point: Mapping[str, Any], checkpoint: Any, device: str = "cpu"):
        from trainables.hierarchy_heads.predictor import RoutedHeads

        return RoutedHeads.from_checkpoint(checkpoint, self.build_model, float(point.get("routing_threshold", ALWAYS)),
                                           int(point.get("routing_k", 1)), device)


def family(budget: Budget, options: Mapping[str, str]) -> HierarchyHeads:
    return HierarchyHeads(DECLARATION, budget.calibration, largest_configs(budget), tree=options.get("tree", "superclass"))


@register_space
def hierarchy_heads() -> Space:
    return Space(
        name="hierarchy_heads",
        description="Superclass head then routed child heads, low-rank heads; routing calibrated after training",
        define=define,
        family=family,
        largest_configs=largest_configs,
        default_data="cifar100",
        budgets=BUDGETS,
        options={"tree": Option(("superclass", "induced"), "superclass",
                                "the superclasses a hierarchical head routes on: the dataset's own, or k groups induced "
                                "from a flat probe head trained first")},
    )
