"""The live display's bookkeeping (no Tune needed), and that the callbacks survive pickling
(Tune stores them with the run for --resume)."""

import pickle
import time

from search.live import LiveDisplay, ProgressState, ResultsWriter


def test_progress_counts_and_best_calibrated_hypervolume():
    s = ProgressState(total_trials=5, concurrency=2)
    s.start("a")
    s.start("b")
    s.result("a", {"epoch": 1, "hypervolume": 0.9, "hv_kind": "quick"})  # per-epoch proxy: not a best
    assert s.best_hv is None
    s.result("a", {"epoch": 2, "hypervolume": 0.4, "hv_kind": "calibrated"})
    s.result("b", {"epoch": 2, "hypervolume": 0.3, "hv_kind": "calibrated"})
    assert s.best_hv == 0.4
    s.finish("a", failed=False)
    s.finish("b", failed=True)
    assert (s.done, s.failed, len(s.running)) == (1, 1, 0)
    assert s.remaining_seconds() is not None


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
