"""`--scheduler moasha` (and `asha_sum`): asynchronous successive halving over every declared objective,
as a Ray Tune `TrialScheduler`.

Tune's own schedulers take one metric; this one takes the space's declared outer objectives
(name -> max | min, in order: `Declaration.objectives`) and decides at each rung with the pure
rules of search/rungs.py: `pareto` (non-dominated sorting, then an epsilon-net; a trial that no
other trial at its rung dominates always goes on) for `moasha`, or `weighted_sum` (each objective
scaled to [0, 1] over the rung, summed) for the `asha_sum` baseline. Rungs sit at
`grace_period * reduction_factor**k` epochs of the trial's whole training plan, below `max_t`
(the budget's epochs), as in ASHA with one bracket; the time is the trial's own `epoch` (its
position in its plan), so a retried or resumed trial is placed by what it trained.

Spaces whose trials yield many operating points (gran_hbn, branchynet, hierarchy_heads) declare one
outer objective, the hypervolume of the trial's calibration front. There MOASHA ranks on that
scalar, which is ASHA's rule; we chose this over ranking a per-epoch vector such as (calibration
hypervolume, cost) because (1) the hypervolume already is the trial's whole accuracy-cost front
summarised, cost included, so a cost axis beside it counts cost twice; (2) a trial's cost does not
move with its epochs (its architecture fixes it), so with a cost axis the cheapest trials would be
non-dominated at every rung and could never be stopped, whatever they learn; (3) a scheduler that
ranks on what the sampler optimises does not pull the search two ways. Spaces judged on one point
(better_mistakes: top-1 error, mistake severity, FLOPs) are ranked on the vector.

State (the rungs, each a list of (trial id, vector) in arrival order, and where each stopped trial
stopped) is kept as JSON in the run directory (`scheduler/rungs.json`, rewritten atomically at every
decision), so a search resumed after a kill goes on with its rungs intact: Tune restores the
scheduler it pickled when the run started (tuner.pkl), which reads the file when unpickled. The
file sits in a folder because a restored Tune copies the run directory's top-level *.json and
*.pkl files into its staging folder and writes them back at every experiment snapshot
(ray/tune/execution/experiment_state.py, `sync_down_experiment_state`): a top-level state file
would be put back as it was when the search resumed. A
trial the scheduler stopped stays stopped: should Tune restart it on a resume (a stop decided just
before the kill), its first result is answered STOP. The pickled scheduler names the run directory
of the machine that started the run; restored on another machine (a bucket run), it reads and keeps
its rungs in this machine's copy, which the driver pulled from the bucket first (search/relocate.py).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from search.relocate import relocated
from search.rungs import RULES, as_minimisation, goes_on

__all__ = ["MOASHA", "STATE_FILE", "milestones"]

STATE_FILE = "scheduler/rungs.json"  # in a folder: see the module docstring
_log = logging.getLogger(__name__)


def milestones(max_t: int, grace_period: int = 1, reduction_factor: float = 2.0) -> list[int]:
    """The rungs' epochs: ceil(grace * rf**k) for every k whose value is below max_t."""
    out, t = [], float(grace_period)
    while t < max_t:
        out.append(int(math.ceil(t)))
        t *= reduction_factor
    return sorted(set(out))


class MOASHA(FIFOScheduler):
    """Asynchronous successive halving whose rung decisions rank objective vectors (search/rungs.py)."""

    def __init__(self, objectives: Mapping[str, str], max_t: int, grace_period: int = 1, reduction_factor: float = 2.0,
                 rule: str = "pareto", state_path: str | Path | None = None, time_attr: str = "epoch") -> None:
        super().__init__()
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be above 1, got {reduction_factor}")
        if grace_period < 1:
            raise ValueError(f"grace_period must be at least 1 epoch, got {grace_period}")
        if rule not in RULES:
            raise ValueError(f"rule {rule!r} is not one of {', '.join(RULES)}")
        self.objectives = dict(objectives)
        self.max_t, self.grace, self.rf, self.rule, self.time_attr = int(max_t), int(grace_period), float(reduction_factor), \
            rule, time_attr
        self.rungs: dict[int, list[tuple[str, list[float]]]] = {m: [] for m in milestones(self.max_t, self.grace, self.rf)}
        self.stopped: dict[str, int] = {}  # trial id -> the rung (epochs) where it stopped
        self.state_path = str(state_path) if state_path is not None else None
        self._load(restoring=False)

    # -- state --------------------------------------------------------------------------------------

    def __setstate__(self, d: dict[str, Any]) -> None:
        # Tune restores the scheduler it pickled when the run started: the rungs since then are in the file
        self.__dict__.update(d)
        if self.state_path:
            self.state_path = relocated(self.state_path, STATE_FILE)
        self._load(restoring=True)

    def _load(self, restoring: bool) -> None:
        if not self.state_path:
            return
        try:
            text = Path(self.state_path).read_text()
        except FileNotFoundError:
            if restoring:  # e.g. the run directory was moved since the run started
                _log.warning("resuming without %s: the scheduler goes on with the rungs it started with", self.state_path)
            return
        self.load_state(json.loads(text))

    def _keep(self) -> None:
        if self.state_path:
            from trainables.atomic import write_json

            write_json(self.state_path, self.state())

    def state(self) -> dict[str, Any]:
        return {"rule": self.rule, "objectives": [[m, d] for m, d in self.objectives.items()], "max_t": self.max_t,
                "grace_period": self.grace, "reduction_factor": self.rf, "time_attr": self.time_attr,
                "rungs": {str(m): [[tid, v] for tid, v in r] for m, r in self.rungs.items()}, "stopped": self.stopped}

    def load_state(self, d: Mapping[str, Any]) -> None:
        objectives = {str(m): str(v) for m, v in d["objectives"]}
        if objectives != self.objectives or d["rule"] != self.rule:
            from search.checks import BadInput

            raise BadInput(f"{self.state_path}: its rungs rank {list(objectives)} by the {d['rule']} rule, this search "
                           f"{list(self.objectives)} by the {self.rule} rule: resume with the --scheduler the run "
                           "started with")
        self.max_t, self.grace, self.rf = int(d["max_t"]), int(d["grace_period"]), float(d["reduction_factor"])
        self.time_attr = str(d["time_attr"])
        self.rungs = {int(m): [(str(tid), [float(x) for x in v]) for tid, v in r] for m, r in d["rungs"].items()}
        self.stopped = {str(k): int(v) for k, v in d["stopped"].items()}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as fh:
            json.dump(self.state(), fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as fh:
            self.load_state(json.load(fh))

    # -- decisions ----------------------------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # the objectives come from the space's declaration, not from Tune's single metric

    def _vector(self, result: Mapping[str, Any]) -> list[float] | None:
        try:
            return [float(result[m]) for m in self.objectives]
        except (KeyError, TypeError, ValueError):
            return None

    def decide(self, trial_id: str, epoch: float, vector: list[float], final: bool = False) -> str:
        """Record the trial at the highest rung it reached and has not been recorded at; CONTINUE or
        STOP (`final`: the trial's own last epoch, recorded for the others' sake but never stopped)."""
        for milestone in sorted(self.rungs, reverse=True):
            recorded = self.rungs[milestone]
            if epoch < milestone or any(tid == trial_id for tid, _ in recorded):
                continue
            recorded.append((trial_id, [float(x) for x in vector]))
            pts = as_minimisation([v for _, v in recorded], list(self.objectives.values()))
            on = final or goes_on(pts, len(recorded) - 1, self.rf, self.rule)
            if not on:
                self.stopped[trial_id] = milestone
            self._keep()
            return TrialScheduler.CONTINUE if on else TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if trial.trial_id in self.stopped:
            return TrialScheduler.STOP  # stopped before a kill, restarted by Tune on --resume
        vector = self._vector(result)
        t = result.get(self.time_attr, result.get("training_iteration"))
        if vector is None or t is None or float(t) >= self.max_t:
            return TrialScheduler.CONTINUE  # no signal in this result, or its last epoch: it ends by itself
        # a trial whose plan is shorter than the budget's ends by itself at fidelity 1: complete, not stopped
        final = float(result.get("fidelity") or 0.0) >= 1.0
        return self.decide(trial.trial_id, float(t), vector, final=final)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        return None

    def debug_string(self) -> str:
        rungs = ", ".join(f"{m}: {len(r)}" for m, r in sorted(self.rungs.items()))
        return f"Using MOASHA ({self.rule}) over {list(self.objectives)}: {len(self.stopped)} stopped; trials per rung {{{rungs}}}"
