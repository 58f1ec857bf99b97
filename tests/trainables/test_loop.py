"""The shared trial loop: device-resident data, the files a trial leaves, resumption, divergence,
clean state between trials, and one signal measure from the first epoch to the last."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest
import torch

from spaces import get_space
from trainables.data import Split
from trainables.engine.device_data import DeviceLoader
from trainables.engine.family import TrialInputs
from trainables.engine.loop import LocalReporter, TrialContext, TrialDiverged, run_trial
from trainables.pareto import hypervolume

TINY_CFG = {
    "backbone": "resnet", "resnet.width": 4, "resnet.blocks": 1, "resnet.n_stages": 3, "exit_after": [0, 1, 2],
    "head": "linear", "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4, "lr_schedule": "cosine",
    "batch_size": 64, "epochs": 2, "lambda_fine": 1.0, "lambda_coarse": 1.0, "exit_weight_last": 0.6,
}
TINY_CAL = {"n_trials": 16, "neighbours": 4, "population": 8, "levels": 16, "max_points": 8}


def gran_family():
    space = get_space("gran_hbn")
    budget = space.budget("smoke")
    from spaces.gran_hbn import DECLARATION, GranHBN

    return GranHBN(DECLARATION, TINY_CAL, space.largest_configs(budget))


def tiny_ctx(tmp_path, **kw):
    d = tmp_path / "trial"
    kw.setdefault("cpu_threads", 1)
    return TrialContext(trial_dir=str(d), reporter=LocalReporter(d), data="synthetic", data_size="tiny", epochs=2, **kw)


def test_device_loader_augments_on_device_deterministically():
    from trainables.data import Split

    imgs = torch.arange(4 * 3 * 8 * 8, dtype=torch.int64).remainder(256).to(torch.uint8).view(4, 3, 8, 8)
    split = Split(imgs, torch.tensor([0, 1, 2, 3]))
    kw = dict(coarse_of=np.array([0, 0, 1, 1]), batch_size=2, device=torch.device("cpu"),
              mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))
    a = [b[0] for b in DeviceLoader(split, train=True, seed=1, **kw).epoch(0)]
    b = [b[0] for b in DeviceLoader(split, train=True, seed=1, **kw).epoch(0)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    ev = list(DeviceLoader(split, train=False, **kw).epoch())
    assert torch.equal(ev[0][0], imgs[:2].float()) and ev[1][2].tolist() == [1, 1]
    # a crop with padding keeps the shape; values come from the image or the zero padding
    assert a[0].shape == (2, 3, 8, 8) and set(a[0].unique().tolist()) <= set(range(256))


def test_data_parallel_shards_are_slices_of_the_same_global_batch():
    """Workers of a data-parallel trial see, together, exactly the batch one worker would have:
    same images, same augmentation draws, same labels; slices differ in size by at most one."""
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (23, 3, 8, 8), dtype=torch.uint8, generator=g)
    split = Split(imgs, torch.arange(23) % 4)
    kw = dict(coarse_of=np.array([0, 0, 1, 1]), batch_size=7, device=torch.device("cpu"),
              mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2), train=True, seed=3)
    for world in (2, 3):
        whole = list(DeviceLoader(split, **kw).epoch(1))
        parts = [list(DeviceLoader(split, shard=(r, world), **kw).epoch(1)) for r in range(world)]
        assert all(len(p) == len(whole) == 3 for p in parts)  # every worker takes the same number of steps
        for step, (x, yf, yc) in enumerate(whole):
            xs = [p[step] for p in parts]
            assert torch.equal(torch.cat([t[0] for t in xs]), x)
            assert torch.equal(torch.cat([t[1] for t in xs]), yf) and torch.equal(torch.cat([t[2] for t in xs]), yc)
            sizes = [len(t[0]) for t in xs]
            assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 7
    with pytest.raises(ValueError, match="shard"):
        DeviceLoader(split, shard=(2, 2), **kw)


def test_trial_writes_points_caches_front_and_checkpoint(tmp_path):
    ctx = tiny_ctx(tmp_path)
    m = run_trial(gran_family(), dict(TINY_CFG), ctx)
    d = tmp_path / "trial"
    assert 0 < m["hypervolume"] <= 1 and len(ctx.reporter.history) == 2
    status = json.loads((d / "status.json").read_text())
    assert status["status"] == "complete" and status["epochs_done"] == 2 and status["updated_at"]
    pts = json.loads((d / "points.json").read_text())
    assert {p["split"] for p in pts["points"]} == {"calibration", "test"}
    assert any(p["reference"] for p in pts["points"]) and any(not p["reference"] for p in pts["points"])
    for f in ("exit_cache_calibration.npz", "exit_cache_test.npz", "model.pt", "checkpoint/state.pt", "calibration_front.npz"):
        assert (d / f).exists(), f
    # the stored hypervolume is recomputable from the stored front
    with np.load(d / "calibration_front.npz") as z:
        hv = hypervolume(z["front"], z["reference"], z["maximize"].tolist())
        assert list(z["objectives"]) == ["accuracy", "specificity", "expected_flops_norm"]
    assert hv == pytest.approx(pts["trial"]["hypervolume"], abs=1e-12)
    # each epoch says when it ended (the report places the epochs a search spent in time)
    ended = [datetime.fromisoformat(c["ended_at"]) for c in json.loads((d / "curves.json").read_text())]
    assert len(ended) == 2 and ended[0] <= ended[1] <= datetime.fromisoformat(status["updated_at"])
    # restarted from its last checkpoint, taken after it finished (a resumed search may do so): nothing is redone
    # or reported again, it stays complete and answers with its last signal
    again = run_trial(gran_family(), dict(TINY_CFG), ctx)
    assert again == {"epoch": 2, "fidelity": 1.0, **status["signal"]} and len(ctx.reporter.history) == 2
    after = json.loads((d / "status.json").read_text())
    assert {k: v for k, v in after.items() if k != "updated_at"} == {k: v for k, v in status.items() if k != "updated_at"}


def test_per_epoch_signal_is_the_final_measure(tmp_path):
    """A scheduler compares rungs with the same measure a finished trial reports: recomputing the
    family's signal from the last epoch's calibration cache gives the reported value exactly."""
    from trainables.exits import ExitCache

    fam = gran_family()
    ctx = tiny_ctx(tmp_path)
    run_trial(fam, dict(TINY_CFG), ctx)
    d = tmp_path / "trial"
    status = json.loads((d / "status.json").read_text())
    last = ctx.reporter.history[-1]["hypervolume"]
    again = fam.evaluate(ExitCache.load(d / "exit_cache_calibration.npz"), TrialInputs(TINY_CFG, status["seed"]))
    assert again.signal["hypervolume"] == pytest.approx(last, abs=1e-12)
    curves = json.loads((d / "curves.json").read_text())
    assert [c["hypervolume"] for c in curves] == [h["hypervolume"] for h in ctx.reporter.history]


def test_trial_resumes_from_checkpoint(tmp_path):
    cfg = dict(TINY_CFG)
    ctx = tiny_ctx(tmp_path)
    run_trial(gran_family(), {**cfg, "epochs": 2}, ctx)
    # a retried trial: same directory, checkpoint after epoch 2 of 3 -> only epoch 3 runs
    state = torch.load(tmp_path / "trial" / "checkpoint" / "state.pt", weights_only=True)
    assert state["epoch"] == 1
    m = run_trial(gran_family(), {**cfg, "epochs": 3}, ctx)
    status = json.loads((tmp_path / "trial" / "status.json").read_text())
    assert status["resumed_from_epoch"] == 2 and m["epoch"] == 3
    assert len(ctx.reporter.history) == 3  # 2 from the first run + 1 resumed epoch


def test_diverging_trial_raises_with_reason(tmp_path):
    with pytest.raises(TrialDiverged, match="loss became"):
        run_trial(gran_family(), {**TINY_CFG, "lr": 1e30, "lr_schedule": "multistep"}, tiny_ctx(tmp_path))


def test_accelerate_state_does_not_leak_between_trials(tmp_path):
    """Reused workers: a second trial in the same process starts from a clean state."""
    from accelerate.state import AcceleratorState

    run_trial(gran_family(), {**TINY_CFG, "epochs": 1}, tiny_ctx(tmp_path / "a"))
    assert AcceleratorState._shared_state != {}
    torch.set_num_threads(2)
    run_trial(gran_family(), {**TINY_CFG, "epochs": 1}, tiny_ctx(tmp_path / "b", cpu_threads=1))
    assert torch.get_num_threads() == 1


def test_single_exit_network_uses_the_last_exit_weight(tmp_path):
    fam = gran_family()
    loss = fam.make_loss(TrialInputs({"exit_weight_first": 1.0, "exit_weight_last": 0.25}), 1)
    assert list(loss.exit_weights) == [0.25]
    m = run_trial(fam, {**TINY_CFG, "exit_after": [2], "epochs": 1, "exit_weight_last": 0.25}, tiny_ctx(tmp_path))
    assert np.isfinite(m["train_loss"])


def test_plateau_schedule_steps_once_an_epoch_on_the_calibration_loss(tmp_path):
    """ReduceLROnPlateau is not stepped per batch but after each epoch, with the calibration loss
    the loop records in the curves."""
    from trainables.engine.optim import make_optimizer, make_scheduler, per_epoch_schedule

    net = torch.nn.Linear(2, 2)
    cfg = {"optimizer": "sgd", "lr": 0.1, "lr_schedule": "plateau"}
    opt = make_optimizer(cfg, net.parameters())
    sched = make_scheduler(cfg, opt, epochs=10, steps_per_epoch=5)
    assert per_epoch_schedule(sched)
    for loss in (1.0, 1.0, 1.0, 1.0):  # no improvement for patience (2) + 1 epochs: x0.1
        sched.step(loss)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    ctx = tiny_ctx(tmp_path)
    run_trial(gran_family(), {**TINY_CFG, "lr_schedule": "plateau", "epochs": 2}, ctx)
    curves = json.loads((tmp_path / "trial" / "curves.json").read_text())
    assert all(c["calib_loss"] > 0 for c in curves) and curves[0]["lr"] == pytest.approx(TINY_CFG["lr"])


def test_cyclic_schedule_cycles_between_a_tenth_and_the_peak():
    from trainables.engine.optim import make_optimizer, make_scheduler, per_epoch_schedule

    net = torch.nn.Linear(2, 2)
    cfg = {"optimizer": "adam", "lr": 0.01, "lr_schedule": "cyclic", "lr_cycles": 2}
    opt = make_optimizer(cfg, net.parameters())
    sched = make_scheduler(cfg, opt, epochs=2, steps_per_epoch=10)
    assert not per_epoch_schedule(sched)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert min(lrs) == pytest.approx(0.001) and max(lrs) == pytest.approx(0.01, rel=1e-6)
    assert lrs.index(max(lrs)) == 5  # two cycles of 10 steps: up for 5, down for 5
