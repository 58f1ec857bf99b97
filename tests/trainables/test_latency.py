"""Latency as dynamic inference runs it (issue 16): each exit is timed with the predictor itself
answering there, in sequence; the network without early exits runs no early head; timings are
interleaved rounds reported at a robust statistic; and on a small trained network a point's
predicted latency, at batch 1 and batched, holds against its predictor timed end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainables.engine.cost import LatencyProfile, interleaved_rounds, latency_calls, measure_latency, robust_ms
from trainables.exits import answer_at
from trainables.models import build_early_exit_net

NET = {"backbone": "resnet", "resnet.width": 4, "resnet.blocks": 1, "resnet.n_stages": 3, "exit_after": [0, 1, 2],
       "head": "conv", "head_hidden": 8}


class Data:
    """The little of a DataInfo the measurement reads."""

    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def names(self, level):
        return [f"c{i}" for i in range(10)]


def test_interleaved_rounds_time_every_call_once_a_round_in_a_rotating_order():
    calls, order = [], []
    fns = [lambda i=i: calls.append(i) for i in range(3)]

    def timer(fn):
        fn()
        order.append(calls[-1])
        return float(calls[-1] + 1)

    ms = interleaved_rounds(fns, timer, rounds=4, warmup=2)
    assert calls[:6] == [0, 1, 2, 0, 1, 2]  # warm-up: each call twice, untimed
    assert order == [0, 1, 2, 1, 2, 0, 2, 0, 1, 0, 1, 2]  # every round starts one call further on
    assert ms.shape == (4, 3) and (ms == [1.0, 2.0, 3.0]).all()  # each call's time lands in its own column


def test_the_reported_figure_ignores_a_busy_spell():
    """Other work only slows a call down: a quarter of the rounds caught in a busy spell does not
    move the figure, where the mean would move by half."""
    quiet = np.full((12, 1), 2.0) + np.linspace(0, 0.1, 12)[:, None]
    busy = quiet.copy()
    busy[[2, 7, 11]] *= 3.0
    assert robust_ms(busy)[0] == pytest.approx(robust_ms(quiet)[0], rel=0.03)
    assert busy.mean() > 1.4 * quiet.mean()


def test_each_exit_is_timed_with_the_predictor_answering_there():
    """What runs for 'exit k' is the predictor with every image answering at k: the stages and
    heads up to k, nothing after; the plain network runs every stage and the last heads only."""
    from trainables.dynamic import DynamicClassifier

    torch.manual_seed(0)
    net = build_early_exit_net(NET, 3, {"fine": 10})
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    ran: list[int] = []
    for k, heads in enumerate(net.heads):
        heads.register_forward_hook(lambda m, i, o, k=k: ran.append(k))
    K = net.n_exits
    for k in range(K):
        ran.clear()
        pred = DynamicClassifier(net, answer_at(1, K, k), Data.mean, Data.std, {"fine": Data().names(0)}).predict(images)
        assert set(pred.exit.tolist()) == {k} and ran == list(range(k + 1))
    ran.clear()
    plain = DynamicClassifier(net, answer_at(1, K, K - 1), Data.mean, Data.std, {"fine": Data().names(0)},
                              without_exits=True, exit_costs={"flops": [1.0, 2.0, 3.0]})
    pred = plain.predict(images)
    assert ran == [K - 1] and set(pred.exit.tolist()) == {K - 1}
    with torch.no_grad():  # the plain network answers as the last exit does
        assert np.array_equal(pred.label, net(((images.float() - 127.5) / 63.75))[-1][0].argmax(-1).numpy())

    net.train()
    prof = measure_latency(net, Data(), images, batch_size=4, warmup=1, repeats=3)
    assert net.training  # the trial's training mode is given back
    assert prof.rounds_ms.shape == (3, 2, K + 1) and (prof.rounds_ms > 0).all()
    assert prof.exit_ms.shape == prof.exit_ms_batched.shape == (K,) and prof.plain_ms > 0 and prof.batch_size == 4
    both = prof.pooled(prof._replace(rounds_ms=prof.rounds_ms * 10))
    assert len(both.rounds_ms) == 6 and both.describe()["rounds"] == 6
    only_one = measure_latency(net, Data(), images[:1], batch_size=1, warmup=1, repeats=2)
    assert np.array_equal(only_one.exit_ms, only_one.exit_ms_batched)  # batch 1 is timed once


def test_a_profile_gives_the_lower_quartile_of_its_rounds():
    rounds = np.arange(1.0, 9.0)[:, None, None] * np.ones((8, 2, 3))
    prof = LatencyProfile(rounds, 4, "cpu", 1)
    assert prof.exit_ms == pytest.approx([2.75, 2.75]) and prof.plain_ms == pytest.approx(2.75)


# -- the prediction holds against the predictor, on a small trained network ---------------------------------

#: Tolerance on predicted / measured. The prediction is the engine's: the predictor timed answering
#: at each exit (`latency_calls`, the calls the trial's measurement makes), weighted by where the
#: images leave. Each of those calls is timed right next to the predictor call it predicts (an
#: image's own call, or a batch's), in interleaved rounds, and every call's figure is the lower
#: quartile over rounds, so a busy spell of the 2 shared cores touches both sides alike. What is left
#: is the noise of ~1 ms calls on a shared machine and, batched, the linear model's error (a stage run
#: on fewer samples costs proportionally less); the error issue 16 found (segments timed alone and
#: added up: 13% to 110% short) fails it.
TOLERANCE = 0.15
ROUNDS = 21


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small branchynet trial, trained and measured as the engine does (2 epochs, tiny synthetic data)."""
    from spaces import get_space
    from spaces.branchynet import BranchyNet
    from trainables.engine.loop import LocalReporter, TrialContext, run_trial

    space = get_space("branchynet")
    cal = {**space.budget("smoke").calibration, "n_trials": 16, "neighbours": 4, "population": 8, "levels": 16,
           "max_points": 8, "latency": {"batch_size": 64, "warmup": 2, "repeats": 5}}
    cfg = {**NET, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4, "lr_schedule": "cosine", "batch_size": 64,
           "epochs": 2, "exit_weight_first": 1.0, "exit_weight_last": 0.6}
    family = BranchyNet("latency", cal, [cfg])
    d = tmp_path_factory.mktemp("latency") / "trial"
    run_trial(family, cfg, TrialContext(trial_dir=str(d), reporter=LocalReporter(d), data="synthetic", data_size="tiny",
                                        epochs=2, cpu_threads=1))
    return family, d


def test_predicted_latency_holds_against_the_predictor(trained):
    """For the trial's plain network and two front points with a real mix of exits: the latency the
    engine's measurement predicts for a set of test images (each image's time to its exit), at batch
    1 and in batches whose samples leave at their exits, against the point's `predict` timed on them."""
    import functools

    from trainables.data import get_dataset
    from trainables.dynamic import data_info
    from trainables.engine.cost import Timer
    from trainables.safe_load import load_torch

    family, d = trained
    points = [p for p in json.loads((d / "points.json").read_text())["points"] if p["split"] == "calibration"]
    mixed = sorted((p for p in points if p["trial_front"] and max(p["exit_fraction"]) < 0.9), key=lambda p: p["latency_ms"])
    assert mixed, "no front point with a real mix of exits to check"
    chosen = [next(p for p in points if p["plain"]), *mixed[:2]]
    data = data_info(load_torch(d / "model.pt"))
    images = get_dataset("synthetic", size="tiny").test.images
    singles, batches = [images[i: i + 1] for i in range(30)], [images[i: i + 64] for i in range(0, 192, 64)]
    torch.set_num_threads(1)  # as the trial ran
    calls, pairs = [], []  # pairs: per point, (its call's column, the columns of the calls predicting it, their weights)
    for row in chosen:
        clf = family.predictor(row, d / "model.pt")
        engine = latency_calls(clf.model, data, images, batch_size=64)  # what the trial times: [batch 1, batched] x [exits, plain]
        K = engine.n_exits
        for batched, inputs in ((False, singles), (True, batches)):
            for x in inputs:
                exits = clf.predict(x).exit
                ks = [K] if row["plain"] else sorted(set(exits.tolist()))
                weights = [1.0] if row["plain"] else [float(np.mean(exits == k)) for k in ks]
                pairs.append((row["point_id"], batched, len(calls), [len(calls) + 1 + i for i in range(len(ks))], weights))
                calls += [functools.partial(clf.predict, x), *(engine.calls[(K + 1) * batched + k] for k in ks)]
    ms = robust_ms(interleaved_rounds(calls, Timer(torch.device("cpu")), ROUNDS, warmup=2))
    report = []
    for row in chosen:
        ratio = []
        for batched in (False, True):
            mine = [(ms[c], float(np.dot(ms[cols], w))) for pid, b, c, cols, w in pairs if pid == row["point_id"] and b == batched]
            measured, predicted = np.mean(mine, axis=0)
            ratio.append(round(predicted / measured, 3))
        report.append((row["point_id"], [round(f, 2) for f in row["exit_fraction"]], *ratio))
    print("LATENCY REPORT", report)
    for _, _, r1, rb in report:
        assert abs(r1 - 1) <= TOLERANCE and abs(rb - 1) <= TOLERANCE, report
