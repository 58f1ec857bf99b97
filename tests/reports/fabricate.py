"""Fabricated run directories for the report tests, for any Declaration.

Each case writes a small RUN_DIR with `reports.schema.results_table/curves_table/write_table`:
four trials (t0 complete, t1 partial, t2 complete, t3 failed), points by policy, reference
policies, on_front flags (t1's is never drawn: it is partial), curves and spec.json. Every value
follows from a few formulas (below), so tests can compute by hand what a figure must show.

Cases: GRAN (gran_hbn's real declaration), ONE_LEVEL (a made-up one-level family with four
calibration modes, a reference policy, a bool mark and a per-exit exit-fraction vector) and SINGLE
(one point per trial, tests/fault_spaces.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from reports.schema import curves_table, results_table, write_table
from spaces.gran_hbn import DECLARATION as GRAN_DECL
from tests.fault_spaces import SINGLE as SINGLE_DECL
from trainables import atomic
from trainables.contract import Column, Declaration, ReportSpec, Selection

FAIL_REASON = "RuntimeError: loss diverged to nan at epoch 1 <script>alert(1)</script>"
REFERENCE_COST = 100e6
# trial id -> (number, status, outer objective value); t1 is partial with the best value of all
TRIALS: dict[str, tuple[int, str, float | None]] = {
    "t0": (0, "complete", 0.30),
    "t1": (1, "partial", 0.50),
    "t2": (2, "complete", 0.45),
    "t3": (3, "failed", None),
}
EPOCHS = {"complete": 5, "partial": 2, "failed": 1}
# wall clock: the run starts at START (spec.json); trial number n starts 60 n seconds later, each epoch takes 100 s
# and ends at start + 100 e; a trial writes its result one second after its last epoch
START = datetime(2025, 1, 1, tzinfo=timezone.utc)


def epoch_end(n: int, e: int) -> datetime:
    return START + timedelta(seconds=60 * n + 100 * e)
TRIAL_FRONT = {"t0": {0, 2}, "t1": {0}, "t2": {0, 1, 2}}  # point indices on the trial's own front

ONE_LEVEL_DECL = Declaration(
    yields="points",
    point=(
        Column("top1", direction="max", unit="fraction", description="answers right"),
        Column("expected_cost", direction="min", unit="FLOPs", description="mean cost per image"),
        Column("exit_share", "floats", per_exit=True, unit="fraction", description="fraction answered at each exit"),
        Column("best_ratio", "bool", description="the point with the best top1 per cost"),
    ),
    policy=(
        Column("thresholds", "floats", per_exit=True, description="per-exit entropy threshold"),
        Column("mode_param", description="the calibration mode's parameter"),
    ),
    trial=(
        Column("score", direction="max", description="the trial's search signal"),
        Column("n_points", "int", description="points calibrated"),
        Column("exit_cost", "floats", per_exit=True, unit="FLOPs", description="cost up to each exit"),
    ),
    curves=(
        Column("calib_score", direction="max", description="search signal after this epoch"),
        Column("val_top1_per_exit", "floats", per_exit=True, unit="fraction", description="each exit's top-1"),
    ),
    point_objectives=("top1", "expected_cost"),
    objectives={"score": "max"},
    report=ReportSpec(
        fronts=(("expected_cost", "top1"),), table=("top1", "expected_cost"), trial_curve=("expected_cost", "top1"),
        marks=("best_ratio",), exit_fraction="exit_share", epoch_panels=("calib_score", "val_top1_per_exit"),
        key_config=("width", "lr"),
    ),
    selection=Selection(best="top1", constraints={"expected_cost": ("max", 55e6)}, tie_break="expected_cost"),
    notes={"cost convention": "cost counted per image <b>by hand</b>"},
)


@dataclass(frozen=True)
class Case:
    name: str
    decl: Declaration
    space: str
    policies: tuple[str, ...]  # non-reference policies (index q in the formulas)
    references: tuple[str, ...]  # reference policies
    points: int  # points per non-reference policy
    on_front: dict[str, frozenset[tuple[int, int]]]  # trial -> {(policy index, point index)}
    reference_costs: dict[str, float] = field(default_factory=dict)  # spec["references"]
    reference_on_front: bool = False  # flag t0's first reference policy on_front (never drawn)
    figures: frozenset[str] = frozenset()  # the PNG files its report must write

    def pid(self, trial: str, q: int, i: int) -> str:
        return f"{trial}/{self.policies[q]}/{i}"

    @property
    def front(self) -> set[str]:
        """The point ids a report must draw on the front: complete trials' on_front points."""
        return {self.pid(t, q, i) for t, flags in self.on_front.items() if TRIALS[t][1] == "complete" for q, i in flags}


GRAN = Case("gran_hbn", GRAN_DECL, "gran_hbn", ("calibrated",), ("fixed:fine@0", "fixed:fine@2", "fixed:coarse@0"), 3,
            {"t0": frozenset({(0, 0)}), "t1": frozenset({(0, 0)}), "t2": frozenset({(0, 1), (0, 2)})},
            {"flops": REFERENCE_COST},
            figures=frozenset({"front_accuracy_vs_expected_flops.png", "front_accuracy_vs_specificity.png", "trial_curves.png",
                               "exit_fractions.png", "objective_hypervolume.png", "progress.png", "learning_curves.png"}))
ONE_LEVEL = Case("one_level", ONE_LEVEL_DECL, "made_up", ("target", "budget", "search", "risk"), ("fixed:exit@0",), 3,
                 {"t0": frozenset({(0, 0)}), "t1": frozenset({(0, 0)}), "t2": frozenset({(0, 1), (0, 2), (3, 0)})},
                 {"cost": REFERENCE_COST}, reference_on_front=True,
                 figures=frozenset({"front_top1_vs_expected_cost.png", "trial_curves.png", "exit_fractions.png",
                                    "objective_score.png", "progress.png", "learning_curves.png"}))
SINGLE = Case("single", SINGLE_DECL, "single_point", ("final",), (), 1,
              {"t0": frozenset({(0, 0)}), "t1": frozenset({(0, 0)}), "t2": frozenset({(0, 0)})},
              figures=frozenset({"front_accuracy_vs_expected_flops_norm.png", "progress.png", "learning_curves.png"}))
CASES = (GRAN, ONE_LEVEL, SINGLE)
MARKED = ("t2", 0, 1)  # the (trial, policy index, point index) whose calibration row carries every declared mark


def cost(n: int, q: int, i: int) -> float:
    """A point's cost (FLOPs): the same on both splits."""
    return (20e6 + 15e6 * i) * (1 + 0.1 * n) * (1 + 0.1 * q)


def score(n: int, q: int, i: int, split: str, k: int = 0) -> float:
    """The k-th maximised point metric on a split (test a little below calibration)."""
    v = 0.60 + 0.05 * i + 0.02 * n + 0.01 * q - 0.1 * k
    return v - 0.01 * (i + 1) if split == "test" else v


def config(n: int, decl: Declaration) -> dict[str, Any]:
    base: dict[str, Any] = {"lr": 0.01 * (n + 1), "width": 16 * (n + 1), "augment": n % 2 == 0}
    return {**{k: f"{k}-{n}" for k in decl.report.key_config}, **base}


def _point_values(decl: Declaration, n: int, q: int, i: int, split: str, marked: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    maxed = [c.name for c in decl.point if c.direction == "max" and c.kind == "float"]
    for c in decl.point:
        if c.kind == "floats":
            out[c.name] = [0.5, 0.3, 0.2]
        elif c.kind == "bool":
            out[c.name] = marked and split == "calibration"
        elif c.direction == "max":
            out[c.name] = score(n, q, i, split, maxed.index(c.name))
        elif c.direction == "min":
            out[c.name] = cost(n, q, i) / (1.0 if c.unit == "FLOPs" else REFERENCE_COST)
        else:
            out[c.name] = 0.5
    for c in decl.policy:
        out[c.name] = {"floats": [0.1234567 * (i + 1), 0.5, 1.0], "bool": False}.get(c.kind, 0.25 * i)
    return out


def _trial_values(decl: Declaration, value: float | None) -> dict[str, Any]:
    first = next(iter(decl.objectives))
    out: dict[str, Any] = {}
    for c in decl.trial:
        if c.name == first:
            out[c.name] = value
        else:
            out[c.name] = {"floats": [10e6, 30e6, 60e6], "int": 7}.get(c.kind, 1.0)
    return out


def _base(case: Case, trial: str, status: str, n: int) -> dict[str, Any]:
    done = 2 if status == "partial" else 5
    return {"run": "demo-run", "space": case.space, "dataset": "cifar100", "trial_id": trial, "trial_number": n,
            "status": status, "epochs_done": done if status != "failed" else 1, "epochs_planned": 5,
            "fidelity": (done if status != "failed" else 1) / 5, "seed": 7 + n, "config": config(n, case.decl),
            "git_rev": "abc1234+dirty", "versions_json": json.dumps({"torch": "2.5.0"}), "device": "cpu",
            "hostname": "testhost", "created_at": epoch_end(n, done if status != "failed" else 1) + timedelta(seconds=1)}


def result_rows(case: Case, all_failed: bool = False) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for trial, (n, status, value) in TRIALS.items():
        base = _base(case, trial, "failed" if all_failed else status, n)
        if status == "failed" or all_failed:
            rows.append({**base, "error": FAIL_REASON})
            continue
        trial_values = _trial_values(case.decl, value)
        points = [(q, i, p, False) for q, p in enumerate(case.policies) for i in range(case.points)]
        points += [(len(case.policies) + r, 0, p, True) for r, p in enumerate(case.references)]
        for q, i, policy, reference in points:
            pid = f"{trial}/{policy}/{i}"
            flagged = (q, i) in case.on_front.get(trial, ()) and not reference
            flagged |= reference and case.reference_on_front and trial == "t0" and policy == case.references[0]
            for split in ("calibration", "test"):
                rows.append({**base, **trial_values, **_point_values(case.decl, n, q, i, split, (trial, q, i) == MARKED),
                             "point_id": pid, "policy": policy, "reference": reference, "split": split,
                             "trial_front": not reference and i in TRIAL_FRONT[trial], "on_front": flagged})
    return rows


def curve_rows(case: Case) -> list[dict[str, Any]]:
    rows = []
    for trial, (n, status, _) in TRIALS.items():
        for e in range(1, EPOCHS[status] + 1):
            row: dict[str, Any] = {"trial_id": trial, "epoch": e, "train_loss": 2.0 / e + 0.1 * n, "lr": 0.1 * 0.8**e,
                                   "epoch_seconds": 3.0, "images_per_second": 1000.0, "evaluation_seconds": 0.1,
                                   "ended_at": epoch_end(n, e)}
            for c in case.decl.curves:
                row[c.name] = [0.1 * e, 0.12 * e, 0.15 * e] if c.kind == "floats" else 0.05 * e
            rows.append(row)
    return rows


def spec(case: Case) -> dict[str, Any]:
    return {"run": "demo-run", "space": case.space, "dataset": "cifar100", "budget": "smoke", "trials": 4, "seed": 7,
            "declaration": case.decl.to_dict(), "references": dict(case.reference_costs),
            "provenance": {"git_rev": "abc1234+dirty", "versions": {"torch": "2.5.0", "numpy": "2.1"}, "device": "cpu",
                           "hostname": "testhost", "python": "3.11.2", "started_at": START.isoformat()},
            "args": {"resume": False, "out": "runs/demo"}}


def make_run_dir(root: Path, case: Case, *, all_failed: bool = False, with_curves: bool = True,
                 with_spec: bool = True) -> Path:
    run_dir = root / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    write_table(results_table(result_rows(case, all_failed), case.decl), run_dir / "results.parquet")
    if with_curves:
        write_table(curves_table(curve_rows(case), case.decl), run_dir / "curves.parquet")
    if with_spec:
        atomic.write_json(run_dir / "spec.json", spec(case))
    return run_dir
