"""Test-only spaces, registered through EXITSEARCH_SPACES so that Ray workers see them too.

`tiny_gran`: gran_hbn's own define-by-run function and family on a tiny budget.
`tiny_branchy`: branchynet's, likewise.
`single_point`: the same networks judged by one point per trial (the final exit's accuracy and
cost): the outer search is multi-objective over that point.
`tiny_asha`: three epochs a trial, so an ASHA scheduler has something to stop.
`faulty`: gran_hbn plus a derived `fault` that makes a trial raise, diverge (a NaN loss), or
train normally, to check that one failed trial never sinks a search.
`kill_worker`: two epochs; a data-parallel trial's second worker is killed once, mid-trial.
`paced_gran`: four to eight epochs a trial, each at least PACE_S seconds longer (a sleep at its
first step), so that a fault a test sends while a trial trains lands mid-trial however fast the
machine (a smoke epoch takes well under a second).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spaces import Budget, Space, get_space, register_space
from spaces.gran_hbn import DECLARATION as GRAN
from spaces.gran_hbn import GranHBN
from spaces.gran_hbn import define as gran_define
from trainables.contract import Column, Declaration, Outcome, ReportSpec, Selection
from trainables.exits import ALWAYS, NEVER, ExitCache, ExitStats
from trainables.engine.family import Evaluation, point_rows

TINY_CAL = {"n_trials": 32, "neighbours": 4, "population": 16, "levels": 16, "max_points": 16}
TINY = Budget("smoke", epochs=1, data_size="tiny", trials=3, calibration=TINY_CAL)


def faulty_define(trial, budget):
    out = gran_define(trial, budget)
    # by the Optuna trial number, so the pattern does not depend on what the sampler draws:
    # trial 1, 4, ... raise; trial 2, 5, ... diverge; the others train normally
    return {**out, "fault": {1: "raise", 2: "nan"}.get(trial.number % 3, "none")}


class FaultyGran(GranHBN):
    def make_loss(self, inputs, n_exits: int):
        fault = inputs.config.get("fault", "none")
        if fault == "raise":
            raise RuntimeError("injected failure for the test")
        loss = super().make_loss(inputs, n_exits)
        if fault == "nan":
            return lambda *a: loss(*a) * float("nan")
        return loss


SINGLE = Declaration(
    yields="point",
    point=(Column("accuracy", direction="max", unit="fraction", description="final exit's fine accuracy"),
           Column("expected_flops_norm", direction="min", unit="ratio", description="final exit's FLOPs / largest")),
    policy=(),
    trial=(),
    curves=(Column("accuracy", direction="max"),),
    point_objectives=("accuracy", "expected_flops_norm"),
    objectives={"accuracy": "max", "expected_flops_norm": "min"},
    report=ReportSpec(fronts=(("expected_flops_norm", "accuracy"),), table=("accuracy", "expected_flops_norm")),
    selection=Selection(best="accuracy", description="best calibration accuracy"),
    answer_metric="accuracy",
)


class SinglePoint(GranHBN):
    """One operating point per trial: the last exit, fine level."""

    def _point(self, stats: ExitStats) -> dict[str, float]:
        return {"accuracy": float(stats.acc_per_exit("fine")[-1]),
                "expected_flops_norm": float(stats.normalised_cost("flops")[-1])}

    def evaluate(self, calib: ExitCache, inputs) -> Evaluation:
        p = self._point(calib.stats())
        return Evaluation(dict(p), {"accuracy": p["accuracy"]})

    def finish(self, evaluation, calib, test, inputs) -> Outcome:
        rows = point_rows("final/0", "final", reference=False, trial_front=True, params={},
                          by_split={"calibration": self._point(calib.stats()), "test": self._point(test.stats())})
        return Outcome(rows, {}, None)

    def thresholds(self, point, model):
        t = np.full((len(model.levels), model.n_exits), NEVER)
        t[0, -1] = ALWAYS  # the last exit answers at the fine level
        return t


def _space(name: str, family_cls=GranHBN, define=gran_define, decl: Declaration = GRAN, budget: Budget = TINY) -> Space:
    base = get_space("gran_hbn")
    return dataclasses.replace(
        base, name=name, description="test space", define=define, default_data="synthetic", budgets={"smoke": budget},
        family=lambda b, options: family_cls(decl, b.calibration, base.largest_configs(b)))


@register_space
def tiny_gran():
    return _space("tiny_gran")


@register_space
def single_point():
    """A space whose trial yields one operating point: the outer search is multi-objective."""
    return _space("single_point", SinglePoint, decl=SINGLE)


@register_space
def tiny_asha():
    """Three epochs a trial, so an ASHA scheduler has something to stop."""
    return _space("tiny_asha", budget=Budget("smoke", epochs=3, data_size="tiny", trials=6, calibration=TINY_CAL))


@register_space
def long_gran():
    """Five to ten epochs a trial on the smoke data: a stop in the middle of a trial has time to land."""
    return _space("long_gran", budget=Budget("smoke", epochs=10, data_size="smoke", trials=2, calibration=TINY_CAL))


PACE_S = 1.5


class PacedGran(GranHBN):
    """gran_hbn whose every epoch sleeps PACE_S seconds at its first step."""

    def make_loss(self, inputs, n_exits: int):
        import time

        loss = super().make_loss(inputs, n_exits)
        paced: set[int] = set()

        def pacing(outs, yf, yc, epoch):
            if int(epoch) not in paced:
                paced.add(int(epoch))
                time.sleep(PACE_S)
            return loss(outs, yf, yc, epoch)

        return pacing


@register_space
def paced_gran():
    """Four to eight epochs a trial, each PACE_S seconds longer: faults land mid-trial."""
    return _space("paced_gran", PacedGran, budget=Budget("smoke", epochs=8, data_size="smoke", trials=4, calibration=TINY_CAL))


@register_space
def faulty():
    return _space("faulty", FaultyGran, define=faulty_define)


@register_space
def tiny_branchy():
    base = get_space("branchynet")
    cal = {**base.budget("smoke").calibration, **TINY_CAL, "latency": {"batch_size": 32, "warmup": 1, "repeats": 3}}
    return dataclasses.replace(base, name="tiny_branchy", default_data="synthetic",
                               budgets={"smoke": Budget("smoke", epochs=1, data_size="tiny", trials=3, calibration=cal)})



class WorkerKilling(GranHBN):
    """gran_hbn whose second-rank worker (RANK=1 in a data-parallel trial) is killed (SIGKILL, as
    a lost node or an OOM kill would) at its second step of the second epoch, once per test: the
    file named by EXITSEARCH_KILL_MARK records that it happened."""

    def make_loss(self, inputs, n_exits: int):
        import os
        import signal
        from pathlib import Path

        loss = super().make_loss(inputs, n_exits)
        mark = os.environ.get("EXITSEARCH_KILL_MARK")

        def killing(outs, yf, yc, epoch):
            # past the second epoch's first step (its gradient all-reduce means the main worker has
            # reported epoch 1 with its checkpoint), once Ray Train has registered that checkpoint:
            # it writes the trial's snapshot then, under EXITSEARCH_KILL_WATCH/RUN/train/TRIAL
            if mark and epoch > 1.0 and os.environ.get("RANK") == "1" and not Path(mark).exists():
                Path(mark).write_text(f"{os.getpid()}\n")
                _wait_for_snapshot()
                os.kill(os.getpid(), signal.SIGKILL)
            return loss(outs, yf, yc, epoch)

        return killing


def _wait_for_snapshot(timeout: float = 120.0) -> None:
    import os
    import time
    from pathlib import Path

    import ray.train

    watch, trial = os.environ.get("EXITSEARCH_KILL_WATCH"), ray.train.get_context().get_experiment_name()
    deadline = time.monotonic() + timeout
    while watch and time.monotonic() < deadline:
        if list(Path(watch).glob(f"*/train/{trial}/checkpoint_manager_snapshot.json")):
            return
        time.sleep(0.5)


@register_space
def kill_worker():
    """Two epochs a trial; a data-parallel trial's second worker dies once in its second epoch."""
    return _space("kill_worker", WorkerKilling, budget=Budget("smoke", epochs=2, data_size="tiny", trials=2, calibration=TINY_CAL))
