"""Engine hooks a family may use: arrays stored with every cache, and the run's options in define."""

from __future__ import annotations

import numpy as np
import optuna

from spaces import get_space
from trainables.exits import ExitCache


def test_a_caches_extras_are_saved_and_loaded_with_it(tmp_path):
    cache = ExitCache(("fine",), {"fine": np.zeros((1, 3, 2), np.float16)}, {"fine": np.array([0, 1, 0])},
                      {"flops": np.array([10.0])}, extras={"coarse_of": np.array([0, 0, 1, 1])})
    cache.save(tmp_path / "c.npz")
    back = ExitCache.load(tmp_path / "c.npz")
    assert back.extras.keys() == {"coarse_of"} and back.extras["coarse_of"].tolist() == [0, 0, 1, 1]
    assert ExitCache(("fine",), cache.logits, cache.labels, cache.costs).extras == {}


def test_define_sees_the_runs_options_when_it_takes_them():
    space = get_space("hierarchy_heads")
    budget = space.budget("smoke")
    params = {}
    for tree in ("superclass", "induced"):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(12):
            trial = study.ask()
            space.search_space(budget, {"tree": tree})(trial)
            params.setdefault(tree, set()).update(trial.params)
    assert "induced_k" in params["induced"] and "induced_k" not in params["superclass"]
    # a define without an options parameter is bound to its budget alone, as before
    assert "options" not in get_space("gran_hbn").search_space(budget).keywords
