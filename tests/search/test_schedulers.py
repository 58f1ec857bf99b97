"""The scheduler registry: names, checks against declared objectives, and what each factory makes."""

from __future__ import annotations

import json

import pytest

from search import schedulers


def test_registry_names_and_duplicates():
    assert schedulers.list_schedulers()[:2] == ["fifo", "asha"]
    with pytest.raises(ValueError, match="registered twice"):
        schedulers.register_scheduler("asha", "again")(lambda objectives, max_t: None)


def test_check_refuses_unknown_and_says_what_exists():
    with pytest.raises(ValueError, match=r"'pbt' is not a scheduler; choose one of fifo, asha, moasha, asha_sum"):
        schedulers.check("pbt", {"hypervolume": "max"})
    with pytest.raises(ValueError, match="direction"):
        schedulers.check("asha", {"x": "up"})


def test_fifo_is_tunes_default_and_asha_acts_on_the_first_objective():
    from ray.tune.schedulers import ASHAScheduler

    assert schedulers.make_scheduler("fifo", {"error": "min", "severity": "min"}, 4) is None
    asha = schedulers.make_scheduler("asha", {"error": "min", "severity": "min"}, 4)
    assert isinstance(asha, ASHAScheduler)
    assert asha._metric == "error" and asha._mode == "min"
    assert asha._max_t == 4


def test_grace_period_and_reduction_factor_come_from_the_budget():
    from spaces import get_space

    budget = get_space("better_mistakes").budget("smoke")
    assert (budget.grace_period, budget.reduction_factor) == (1, 2.0)  # what every space's budgets take unless they say
    objectives = {"error": "min", "severity": "min"}
    asha = schedulers.make_scheduler("asha", objectives, 30, grace_period=2, reduction_factor=3)
    assert sorted(m for m, _ in asha._brackets[0]._rungs) == [2, 6, 18] and asha._reduction_factor == 3
    for name in ("moasha", "asha_sum"):
        sched = schedulers.make_scheduler(name, objectives, 30, grace_period=2, reduction_factor=3)
        assert sorted(sched.rungs) == [2, 6, 18] and (sched.grace, sched.rf) == (2, 3.0)
    assert sorted(schedulers.make_scheduler("moasha", objectives, 4).rungs) == [1, 2]  # the defaults: 1 and 2
    assert schedulers.make_scheduler("asha", objectives, 1, grace_period=2)._max_t == 1  # a grace past max_t: no rung
    with pytest.raises(ValueError, match="grace period of at least 1 epoch and a reduction factor above 1"):
        schedulers.make_scheduler("moasha", objectives, 8, reduction_factor=1)


# -- MOASHA: the scheduler's decisions and its state (the rung rules themselves: test_rungs.py) ---------------


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def test_moasha_stops_dominated_trials_at_rungs_and_keeps_its_rungs_across_a_restore(tmp_path):
    import pickle

    from ray.tune.schedulers import TrialScheduler

    from search.moasha import MOASHA, STATE_FILE, milestones

    assert milestones(8) == [1, 2, 4] and milestones(1) == [] and milestones(30, 1, 3) == [1, 3, 9, 27]
    path = tmp_path / STATE_FILE
    sched = schedulers.make_scheduler("moasha", {"error": "min", "severity": "min"}, 8, state_dir=tmp_path)
    assert isinstance(sched, MOASHA) and sched.state_path == str(path) and sched.rule == "pareto"
    pickled = pickle.dumps(sched)  # what Tune keeps in tuner.pkl from the run's start
    assert sched.decide("z", 1, [0.5, 0.5]) == TrialScheduler.CONTINUE  # alone at its rung
    # b is dominated by z and second of two at rung 1: ceil(2 / 2) = 1 goes on, so b stops there
    assert sched.decide("b", 1, [0.6, 0.6]) == TrialScheduler.STOP and sched.stopped == {"b": 1}
    assert sched.decide("c", 1, [0.4, 0.9]) == TrialScheduler.CONTINUE  # non-dominated: always goes on
    assert sched.decide("a", 1, [0.9, 0.9]) == TrialScheduler.STOP
    assert sched.decide("z", 2, [0.3, 0.3]) == TrialScheduler.CONTINUE
    assert sched.decide("z", 3, [0.2, 0.2]) == TrialScheduler.CONTINUE  # recorded once per rung: nothing new at 3
    assert [tid for tid, _ in sched.rungs[1]] == ["z", "b", "c", "a"]  # arrival order, not alphabetical
    restored = pickle.loads(pickled)  # after a kill: the pickled scheduler reads the rungs kept since
    assert restored.rungs == sched.rungs and restored.stopped == sched.stopped
    assert [tid for tid, _ in restored.rungs[1]] == ["z", "b", "c", "a"]
    assert restored.decide("e", 1, [1.0, 1.0]) == TrialScheduler.STOP
    # a stopped trial that Tune restarts on --resume stops at its first result, whatever it reports
    assert restored.on_trial_result(None, _Trial("b"), {"epoch": 2, "error": 0.0, "severity": 0.0}) == TrialScheduler.STOP
    # a result without the objectives, the budget's last epoch, or a trial's own last epoch: never stopped
    assert restored.on_trial_result(None, _Trial("f"), {"epoch": 1, "train_loss": 1.0}) == TrialScheduler.CONTINUE
    assert restored.on_trial_result(None, _Trial("f"), {"epoch": 8, "error": 1, "severity": 1}) == TrialScheduler.CONTINUE
    assert restored.on_trial_result(None, _Trial("g"), {"epoch": 1, "fidelity": 1.0, "error": 2, "severity": 2}) \
        == TrialScheduler.CONTINUE
    assert [tid for tid, _ in restored.rungs[1]][-1] == "g"  # recorded at its rung all the same
    assert json.loads(path.read_text())["stopped"] == {"a": 1, "b": 1, "e": 1}


def test_moasha_restored_on_another_machine_reads_the_rungs_of_this_machines_copy(tmp_path):
    """A bucket run resumed elsewhere: the pickled scheduler names the first machine's copy; restored
    inside `restoring_into`, it reads (and then keeps) the rungs in this machine's copy."""
    import pickle
    import shutil

    from ray.tune.schedulers import TrialScheduler

    from search.moasha import STATE_FILE
    from search.relocate import restoring_into

    first, second = tmp_path / "first", tmp_path / "second"
    sched = schedulers.make_scheduler("moasha", {"error": "min", "severity": "min"}, 8, state_dir=first)
    pickled = pickle.dumps(sched)
    assert sched.decide("z", 1, [0.5, 0.5]) == TrialScheduler.CONTINUE
    assert sched.decide("b", 1, [0.6, 0.6]) == TrialScheduler.STOP
    (second / STATE_FILE).parent.mkdir(parents=True)
    shutil.copy(first / STATE_FILE, second / STATE_FILE)  # what the driver pulled from the bucket
    shutil.rmtree(first)  # not on this machine
    with restoring_into(second):
        restored = pickle.loads(pickled)
    assert restored.state_path == str(second / STATE_FILE)
    assert restored.rungs == sched.rungs and restored.stopped == {"b": 1}
    assert restored.decide("c", 1, [0.7, 0.7]) == TrialScheduler.STOP
    assert json.loads((second / STATE_FILE).read_text())["stopped"] == {"b": 1, "c": 1} and not first.exists()
    assert pickle.loads(pickled).state_path == str(first / STATE_FILE)  # outside a restore: as pickled


def test_moasha_maximised_objectives_and_a_resume_with_another_rule(tmp_path):
    from ray.tune.schedulers import TrialScheduler

    from search.checks import BadInput

    sched = schedulers.make_scheduler("moasha", {"hypervolume": "max"}, 4, state_dir=tmp_path)
    assert sched.decide("a", 1, [0.2]) == TrialScheduler.CONTINUE
    assert sched.decide("b", 1, [0.1]) == TrialScheduler.STOP  # lower hypervolume: worse
    assert sched.decide("c", 1, [0.3]) == TrialScheduler.CONTINUE
    with pytest.raises(BadInput, match="resume with the --scheduler the run started with"):
        schedulers.make_scheduler("asha_sum", {"hypervolume": "max"}, 4, state_dir=tmp_path)


def test_asha_sum_is_the_weighted_sum_baseline():
    from ray.tune.schedulers import TrialScheduler

    sched = schedulers.make_scheduler("asha_sum", {"error": "min", "flops": "min"}, 8)
    assert sched.rule == "weighted_sum" and sched.state_path is None
    assert sched.decide("a", 1, [0.1, 9e8]) == TrialScheduler.CONTINUE
    # non-dominated (fewer FLOPs) but second of two by the scaled sum (1 vs 1: the earlier arrival wins)
    assert sched.decide("b", 1, [0.9, 1e8]) == TrialScheduler.STOP
