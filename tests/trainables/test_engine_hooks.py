"""Engine hooks a family may use: arrays stored with every cache, and the run's options in define."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

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


def test_fetch_initialise_input_size_and_training_seconds(tmp_path):
    """A family's fetch runs with the trial's --download, initialise on a new trial's network only (a
    resumed one takes its checkpoint's weights), input_size sets the side batches are resized to and
    FLOPs are counted at, and every cache carries the training seconds spent so far."""
    import json

    import torch

    from tests.trainables.test_loop import TINY_CFG, gran_family
    from tests.trainables.test_plans import CrashingReporter
    from spaces.gran_hbn import GranHBN
    from trainables.engine.loop import TrialContext, run_trial

    class Hooked(GranHBN):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.calls = []

        def fetch(self, download):
            self.calls.append(("fetch", download))

        def initialise(self, net, inputs):
            self.calls.append(("initialise", inputs.config["epochs"]))
            with torch.no_grad():
                next(net.parameters()).zero_()

        def input_size(self, config, data):
            return 16

    base = gran_family()
    fam = Hooked(base.declaration, base.calibration, base.reference_configs)
    d = tmp_path / "t"
    reporter = CrashingReporter(d, at=1)
    ctx = TrialContext(trial_dir=str(d), reporter=reporter, data="synthetic", data_size="tiny", download=True, cpu_threads=1)
    try:
        run_trial(fam, dict(TINY_CFG), ctx)
    except RuntimeError:
        pass
    assert fam.calls == [("fetch", True), ("initialise", 2)]
    reporter.at = None
    run_trial(fam, dict(TINY_CFG), ctx)
    assert fam.calls[2:] == [("fetch", True)]  # resumed: no second initialise
    status = json.loads((d / "status.json").read_text())
    assert status["input_size"] == 16 and status["augment"]["crop"] == "pad" and status["data_resident"] is True
    small = np.asarray(status["costs"]["flops"])
    calib = ExitCache.load(d / "exit_cache_calibration.npz")
    curves = json.loads((d / "curves.json").read_text())
    assert calib.extras["train_seconds"][0] == pytest.approx(sum(c["epoch_seconds"] for c in curves))
    plain = GranHBN(base.declaration, base.calibration, base.reference_configs)
    e = tmp_path / "plain"
    run_trial(plain, {**TINY_CFG, "epochs": 1}, TrialContext(trial_dir=str(e), reporter=CrashingReporter(e, None),
                                                             data="synthetic", data_size="tiny", cpu_threads=1))
    at32 = np.asarray(json.loads((e / "status.json").read_text())["costs"]["flops"])
    assert np.allclose(small, at32 / 4, rtol=0.05)  # convolutions at 16 px: a quarter of the FLOPs at 32 px
