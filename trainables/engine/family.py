"""What a family supplies to the shared trial loop (trainables/engine/loop.py).

The loop owns the infrastructure every family needs: device-resident uint8 data and on-device
augmentation, Accelerate, the training plan's stages (what trains, optimiser, schedule, epochs,
stop rule with best-epoch restore; trainables/engine/plan.py), precision from the config
(trainables/engine/precision.py), checkpoints and resumption mid-stage, reporting to the outer search,
divergence, the FLOP count (and, when asked, the latency) of every exit, and the caching of every
exit's outputs on the calibration and test splits. A family supplies only what is its own; every
hook gets one `TrialInputs` (config as the current stage reads it, seed, DataInfo, stage):

* `build_model(config, data)`  its network (one with `n_exits`, `levels` and `segments()`, e.g.
  an EarlyExitNet with the family's answer levels);
* `input_size(config, data)`  (optional) the side of the images its network sees (by default the
  dataset's own; batches are resized to it on the device, and FLOPs are counted at it);
* `augmentation(inputs)`  (optional) how its training batches are augmented on the device
  (trainables/engine/augment.py; by default pad-crop and flip);
* `fetch(download)`  (optional) make sure what its options name beyond the dataset (pretrained
  weights) is on this machine, fetching it only when the run says --download: before any trial
  starts, and again at the start of every trial (a cluster node fetches its own copy);
* `initialise(net, inputs)`  (optional) a new trial's freshly built network before it trains (e.g.
  pretrained weights loaded into it; a resumed trial takes its checkpoint's weights instead);
* `plan(inputs)`  (optional) its training plan; by default one stage of `epochs`;
* `make_loss(inputs, n_exits)`  its loss for the stage, called as loss(outputs, y_fine, y_coarse, epoch);
* `evaluate(calib, inputs)`  the trial's signal from the calibration split's cached outputs,
  computed the same way after every epoch and at the end, so a scheduler compares like with like;
* `stage_done(stage, net, calib, inputs)`  (optional) after a stage of several ends;
* `cache_extras(net, data)`  (optional) arrays the calibration needs beside the outputs (e.g. an
  induced class grouping), stored in every cache;
* `finish(evaluation, calib, test, inputs)`  the operating points (chosen on calibration, scored
  on test) and the trial's declared values;
* `thresholds(point, model)`  the exit thresholds (levels x exits) of a stored point, and
  `predictor(point, checkpoint, device)`  the predictor of a stored point (by default the
  early-exit cascade at those thresholds, or the network without early exits for a point whose
  `plain` column is set; trainables/predictor.py);
* `check(data)`  (optional) refuse a dataset the family cannot use, before any trial starts; a
  multi-label dataset is refused unless the family says it takes multi-hot targets (`multi_label`).

`data` (DataInfo) is what the family may know of the dataset: shapes, class names, the
two-level hierarchy and, where the dataset has one, a deeper class tree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from trainables.contract import Declaration, Outcome
from trainables.data_info import DataInfo
from trainables.exits import ExitCache
from trainables.engine.augment import Augment
from trainables.engine.plan import Plan, Stage, one_stage

__all__ = ["DataInfo", "Evaluation", "Family", "TrialInputs", "UnsuitableData", "pick", "point_rows"]


class UnsuitableData(ValueError):
    """The dataset, or a file the run's options name, cannot serve this family with these options
    (e.g. no deeper class tree, multi-label targets, missing pretrained weights): exit 2."""


class TrialInputs(NamedTuple):
    """What a family's hooks know of the trial: nothing here is infrastructure."""

    config: Mapping[str, Any]  # the searched config (in a stage: as the stage reads it)
    seed: int = 0  # the trial's seed
    data: DataInfo | None = None
    stage: Stage | None = None  # the stage being trained (None outside training, e.g. recalibration)

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)


class Evaluation(NamedTuple):
    signal: dict[str, float]  # reported to the outer search each epoch; holds the declared objectives
    curve: dict[str, Any]  # the declared per-epoch curve values
    state: Any = None  # what finish() reuses (e.g. the calibration it already ran)


class Family(ABC):
    """A family's own parts; one instance per (space, budget, options)."""

    #: answer levels of every exit, in the order its policy tries them ("fine", "coarse")
    levels: tuple[str, ...] = ("fine",)
    #: measure every exit's latency on the trial's device (costs "latency_ms", "latency_ms_batched")
    latency: bool = False
    #: its losses and metrics take multi-label (multi-hot) targets; else a multi-label dataset is refused
    multi_label: bool = False

    def __init__(self, declaration: Declaration, calibration: Mapping[str, Any],
                 reference_configs: Sequence[Mapping[str, Any]] = ()) -> None:
        self.declaration = declaration
        self.calibration = dict(calibration)  # the budget's calibration settings
        self.reference_configs = [dict(c) for c in reference_configs]  # the space's largest networks

    def outputs(self, data: DataInfo) -> dict[str, int]:
        return {level: data.n_classes(level) for level in self.levels}

    def build_model(self, config: Mapping[str, Any], data: DataInfo):
        from trainables.models import build_early_exit_net

        return build_early_exit_net(config, data.channels, self.outputs(data))

    def check(self, data: DataInfo) -> None:
        """Raise UnsuitableData (what is wrong, what to do) when this family cannot use the data."""

    def check_data(self, data: DataInfo) -> None:
        """What the engine calls before any trial starts: multi-label targets only for a family that
        takes them, then the family's own `check`."""
        if data.multi_label and not self.multi_label:
            raise UnsuitableData(f"the dataset is multi-label (several classes per image), but {type(self).__name__} "
                                 "answers one class per image: use a single-label dataset, or a space whose family "
                                 "takes multi-label targets")
        self.check(data)

    def fetch(self, download: bool) -> None:
        """Make sure what the run's options name beyond the dataset (e.g. pretrained weights) is on this
        machine, fetching it only when `download`; else raise UnsuitableData naming what is missing and
        what to do. Nothing by default."""

    def initialise(self, net: Any, inputs: TrialInputs) -> None:
        """A new trial's network, built, before it trains (not a resumed one): as built by default."""

    def input_size(self, config: Mapping[str, Any], data: DataInfo) -> int:
        """The side in pixels of the images the network sees: by default the dataset's own."""
        return int(data.image_size)

    def augmentation(self, inputs: TrialInputs) -> Augment:
        """How the trial's training batches are augmented on the device: by default pad-crop and flip."""
        return Augment()

    def plan(self, inputs: TrialInputs) -> Plan:
        """The trial's training plan; by default one stage of the config's `epochs`."""
        return one_stage(int(inputs.config["epochs"]))

    def stage_done(self, stage: Stage, net: Any, calib: ExitCache | None, inputs: TrialInputs) -> None:
        """Called after `stage` ends (its best weights restored, if its stop rule said so), on every
        worker of a data-parallel trial with the main worker's weights; `calib` (the stage's last
        calibration outputs) only on the main worker, None on the others. A change to the network
        made here must follow from the weights alone, so that every worker makes the same."""

    def cache_extras(self, net: Any, data: DataInfo) -> dict[str, np.ndarray]:
        """What calibration needs of the trained network beside its outputs (stored in every cache,
        so evaluate, finish and a later recalibration read it there): none by default."""
        return {}

    def predictor(self, point: Mapping[str, Any], checkpoint: Any, device: str = "cpu"):
        """The predictor of a stored point (a results row) from its trial's model.pt path: the cascade
        at the point's thresholds, or for the plain point (trainables/exits/plain.py) the network
        without early exits."""
        from trainables.dynamic import DynamicClassifier
        from trainables.exits import PLAIN

        return DynamicClassifier.from_checkpoint(checkpoint, self.build_model, lambda model: self.thresholds(point, model),
                                                 device, without_exits=bool(point.get(PLAIN)))

    @abstractmethod
    def make_loss(self, inputs: TrialInputs, n_exits: int) -> Callable[..., Any]: ...

    @abstractmethod
    def evaluate(self, calib: ExitCache, inputs: TrialInputs) -> Evaluation: ...

    @abstractmethod
    def finish(self, evaluation: Evaluation, calib: ExitCache, test: ExitCache, inputs: TrialInputs) -> Outcome: ...

    @abstractmethod
    def thresholds(self, point: Mapping[str, Any], model: Any) -> np.ndarray:
        """(len(model.levels), model.n_exits) thresholds of a stored operating point (a results row)."""


def pick(values: Mapping[str, np.ndarray], i: int) -> dict[str, Any]:
    """Setting i's values as plain Python (floats, or lists of floats for per-exit vectors)."""
    out: dict[str, Any] = {}
    for name, v in values.items():
        x = np.asarray(v)[i]
        out[name] = [float(e) for e in x] if np.ndim(x) else (x.item() if isinstance(x, np.generic) else x)
    return out


def point_rows(point_id: str, policy: str, *, reference: bool, trial_front: bool, params: Mapping[str, Any],
               by_split: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of one operating point, one per split (same id, policy and parameters)."""
    return [{"point_id": point_id, "policy": policy, "reference": reference, "trial_front": trial_front,
             "split": split, **params, **values} for split, values in by_split.items()]
