"""What `search.load.load_operating_point` returns: the predictor of a stored operating point.

Each family supplies the predictor of its points (`Family.predictor`): the early-exit cascade at a
point's thresholds (trainables/dynamic.py), routed hierarchy heads, thresholded multi-label
answers... All of them take uint8 images and answer with a `Prediction`: per image a class index
at some answer level, the level, (for networks with exits) the exit that answered, and per image
the cost of what actually ran for it (`Prediction.cost`: a sample that leaves early, or runs one
child head of many, costs what it executed, not the network's worst case). The
contract suite (tests/spaces/test_contract.py) checks, for every registered space, that the
default point's predictor reproduces the accuracy stored for it on the calibration split, through
`answer_accuracy` and the metric the family's Declaration names (`answer_metric`).

Pure: numpy only (a predictor's own module imports torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["Prediction", "Predictor", "answer_accuracy", "expected_cost"]


@dataclass
class Prediction:
    label: np.ndarray  # (N,) int64: class index at the level answered
    level: np.ndarray  # (N,) int64: answer level index (0 = the first level, e.g. fine)
    exit: np.ndarray  # (N,) int64: exit index that answered (0 for a network without exits)
    name: list[str]  # class name of each answer at its level
    # cost name -> (N,) what actually executed for each image (e.g. "flops": the FLOPs of the stages
    # and heads that ran for it); a point's expected cost is the mean over its images (`expected_cost`)
    cost: dict[str, np.ndarray] = field(default_factory=dict)
    # a multi-label answer: (N, n_classes) bool, every class the image is said to hold (`label` is then
    # its most probable class); None for one class per image
    labels: np.ndarray | None = None

    @property
    def fine(self) -> np.ndarray:
        """(N,) bool: answered at the first (finest) level."""
        return self.level == 0


class Predictor(Protocol):
    levels: tuple[str, ...]  # the answer levels, in the order of Prediction.level ("fine", "coarse")
    point: dict[str, Any]  # the operating point's results rows, by split (set by search.load)

    def predict(self, images: Any) -> Prediction: ...


def answer_accuracy(pred: Prediction, levels: Sequence[str], fine: np.ndarray, coarse_of: Sequence[int]) -> float:
    """Fraction of answers right at the level they were given (fine: the class; coarse: its superclass)."""
    fine = np.asarray(fine, dtype=np.int64)
    truth = {"fine": fine, "coarse": np.asarray(coarse_of, dtype=np.int64)[fine]}
    right = np.zeros(len(fine), dtype=bool)
    for j, level in enumerate(levels):
        at = pred.level == j
        right[at] = pred.label[at] == truth[level][at]
    return float(right.mean()) if len(right) else float("nan")


def expected_cost(pred: Prediction, name: str = "flops") -> float:
    """Mean over the predicted images of what executed for each (the expected cost of a point)."""
    per_sample = np.asarray(pred.cost[name], dtype=np.float64)
    if per_sample.shape != pred.label.shape:
        raise ValueError(f"cost {name!r} has shape {per_sample.shape}, not one value per image {pred.label.shape}")
    return float(per_sample.mean()) if len(per_sample) else float("nan")
