"""The live display's bookkeeping (no Tune needed), and that the callbacks survive pickling
(Tune stores them with the run for --resume)."""

import pickle
import time

from search.live import LiveDisplay, ProgressState, ResultsWriter


def test_progress_counts_and_best_of_the_first_objective():
    """Every report carries the same measure (each epoch and at the end), so the best of any
    report is the best so far, in the objective's own direction."""
    s = ProgressState(total_trials=5, concurrency=2, objective=("hypervolume", "max"))
    s.start("a")
    s.start("b")
    s.result("a", {"epoch": 1, "train_loss": 2.0})  # nothing of the objective: no best yet
    assert s.best is None
    s.result("a", {"epoch": 2, "hypervolume": 0.4})
    s.result("b", {"epoch": 2, "hypervolume": 0.3})
    assert s.best == 0.4 and "hypervolume 0.3" in s.last_event
    s.finish("a", failed=False)
    s.finish("b", failed=True)
    assert (s.done, s.failed, len(s.running)) == (1, 1, 0)
    assert s.remaining_seconds() is not None
    low = ProgressState(total_trials=2, concurrency=1, objective=("error", "min"))
    low.result("a", {"error": 0.3})
    low.result("b", {"error": 0.2})
    assert low.best == 0.2


def test_remaining_time_estimate():
    s = ProgressState(total_trials=6, concurrency=2)
    s.durations = [10.0, 10.0]
    s.done = 2
    # 4 trials left, 2 at a time, 10 s each -> 2 waves of 10 s
    assert abs(s.remaining_seconds() - 20.0) < 0.5
    s.running = {"x": time.time() - 4}
    assert abs(s.remaining_seconds() - 16.0) < 0.5


def test_callbacks_pickle_without_their_terminal():
    d = LiveDisplay(3, 1)
    d.setup()
    try:
        clone = pickle.loads(pickle.dumps(d))
    finally:
        d.on_experiment_end([])
    assert clone._live is None and clone.state.total == 3
    assert pickle.loads(pickle.dumps(ResultsWriter(len))).display is None
