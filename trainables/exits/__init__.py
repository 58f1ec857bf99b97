"""Exit policies, cached exit outputs, and threshold calibration without retraining.

* `cache`  - ExitCache (every exit's logits on a split, saved as .npz) and ExitStats (entropies
             and correctness per level, exit and sample), `normalised_entropy`;
* `policy` - the exit rule written once (`cascade_step`), its exact evaluation
             (`apply_policy`, `evaluate_dense`) and the fast bitset evaluator, fixed policies;
* `search` - the inner multi-objective Optuna search over thresholds (`calibrate`);
* `modes`  - closed-form one-level rules: BranchyNet's target accuracy, MSDNet's exit budget;
* `risk`   - per-exit thresholds with a finite-sample guarantee (Learn-then-Test);
* `plain`  - the network without early exits as an operating point of every trial.
"""

from __future__ import annotations

from trainables.exits.cache import ExitCache, ExitStats, normalised_entropy
from trainables.exits.policy import (
    ALWAYS,
    NEVER,
    BitsetEvaluator,
    PointScores,
    answer_at,
    apply_policy,
    cascade_step,
    evaluate_dense,
    fixed_policies,
)
from trainables.exits.plain import PLAIN, PLAIN_COLUMN, plain_metrics, plain_thresholds, with_plain
from trainables.exits.search import CalibrationResult, calibrate, thin_front

__all__ = [
    "ALWAYS",
    "NEVER",
    "PLAIN",
    "PLAIN_COLUMN",
    "BitsetEvaluator",
    "CalibrationResult",
    "ExitCache",
    "ExitStats",
    "PointScores",
    "answer_at",
    "apply_policy",
    "calibrate",
    "cascade_step",
    "evaluate_dense",
    "fixed_policies",
    "normalised_entropy",
    "plain_metrics",
    "plain_thresholds",
    "thin_front",
    "with_plain",
]
