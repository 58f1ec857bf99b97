"""A resumed run's pickled scheduler and searcher storage read this machine's copy of the run when
unpickled inside `restoring_into` (a bucket run resumed on another machine); outside, as pickled."""

from __future__ import annotations

import pickle
import shutil

import optuna

from search.relocate import relocated, restoring_into
from search.study import journal_path, open_storage


def test_relocated_only_inside_a_restore(tmp_path):
    assert relocated("/elsewhere/run/study.journal", "study.journal") == "/elsewhere/run/study.journal"
    with restoring_into(tmp_path / "a"):
        with restoring_into(tmp_path / "b"):
            assert relocated("/x", "scheduler/rungs.json") == str(tmp_path / "b" / "scheduler" / "rungs.json")
        assert relocated("/x", "study.journal") == str(tmp_path / "a" / "study.journal")
    assert relocated("/x", "study.journal") == "/x"


def test_the_searchers_journal_is_this_machines_copy_after_a_restore_elsewhere(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    storage = open_storage(first)
    study = optuna.create_study(storage=storage, study_name="r", directions=["minimize", "minimize"])
    study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), [0.5, 0.5])
    pickled = pickle.dumps(storage)  # as Tune keeps the searcher (its study and storage)
    second.mkdir()
    shutil.copy(journal_path(first), journal_path(second))  # what the driver pulled from the bucket
    shutil.rmtree(first)
    with restoring_into(second):
        restored = pickle.loads(pickled)
    again = optuna.load_study(study_name="r", storage=restored)
    assert [t.values for t in again.trials] == [[0.5, 0.5]]
    again.tell(again.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), [0.4, 0.6])
    assert not first.exists()
    assert len(optuna.load_study(study_name="r", storage=open_storage(second)).trials) == 2
