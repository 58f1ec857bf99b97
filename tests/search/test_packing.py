"""The default --gpus-per-trial: the packing rule (search/packing.py) and its wiring in search.run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from search import packing
from search.packing import CONTEXT_BYTES, GIB, MAX_TRIALS_PER_GPU, SLACK, choose_packing, largest_batch_size
from search.tuner import _slots
from spaces import get_space


def test_more_memory_per_trial_packs_fewer_trials():
    ks = [choose_packing(peak * GIB, 80 * GIB, cap=100).trials_per_gpu for peak in (1, 2, 5, 10, 20, 40)]
    assert ks == sorted(ks, reverse=True) and ks[0] > ks[-1]
    # 5 GiB peak: 5 * 1.15 + 1 = 6.75 GiB a trial, 80 / 6.75 = 11.9 -> 11 (uncapped), 40 GiB -> 5
    assert choose_packing(5 * GIB, 80 * GIB, cap=100).trials_per_gpu == 11
    p = choose_packing(5 * GIB, 40 * GIB)
    assert (p.trials_per_gpu, p.limit, p.gpus_per_trial) == (5, "memory", 0.2)
    assert p.reason.startswith("5 trials per GPU (--gpus-per-trial 0.2): a trial peaks at 5.0 GiB")
    assert "of the GPU's 40.0 GiB" in p.reason
    assert SLACK == 0.15 and CONTEXT_BYTES == GIB


def test_small_trials_are_capped():
    p = choose_packing(100 * 2**20, 80 * GIB)
    assert p.trials_per_gpu == MAX_TRIALS_PER_GPU == 8 and p.limit == "cap" and p.gpus_per_trial == 0.125
    assert "capped at 8 per GPU" in p.reason
    assert choose_packing(100 * 2**20, 80 * GIB, cap=3).trials_per_gpu == 3


def test_cpus_limit_the_packing():
    p = choose_packing(1 * GIB, 80 * GIB, cpus=8, cpus_per_trial=2)
    assert (p.trials_per_gpu, p.limit) == (4, "cpu")
    assert p.reason.startswith("4 trials per GPU") and "capped by 8 CPU / 2 per trial" in p.reason
    # the CPUs are shared by every GPU's trials
    p = choose_packing(1 * GIB, 80 * GIB, gpus=4, cpus=16, cpus_per_trial=1)
    assert (p.trials_per_gpu, p.limit) == (4, "cpu") and "over 4 GPUs" in p.reason
    # fewer CPUs than one trial asks for still runs one
    assert choose_packing(1 * GIB, 80 * GIB, cpus=1, cpus_per_trial=4).trials_per_gpu == 1


def test_at_least_one_trial_even_when_it_does_not_fit():
    p = choose_packing(100 * GIB, 80 * GIB)
    assert (p.trials_per_gpu, p.gpus_per_trial, p.limit) == (1, 1.0, "exceeds")
    assert p.reason.startswith("1 trial per GPU") and "may run out of memory" in p.reason
    assert choose_packing(0, 1).trials_per_gpu == 1  # even the context alone does not fit
    with pytest.raises(ValueError):
        choose_packing(GIB, 0)


@pytest.mark.parametrize("k", range(1, MAX_TRIALS_PER_GPU + 1))
def test_gpus_per_trial_packs_exactly_k_in_rays_accounting(k):
    peak = int(((80 * GIB) / k - CONTEXT_BYTES) / (1 + SLACK)) - 2**20  # just fits k
    p = choose_packing(peak, 80 * GIB)
    assert p.trials_per_gpu == k
    assert k * p.gpus_per_trial <= 1.0 and _slots(1.0, p.gpus_per_trial) == k  # Ray places k; the tuner runs k
    assert p.record(measured=True) == {"trials_per_gpu": k, "gpus_per_trial": p.gpus_per_trial, "peak_bytes": peak,
                                       "gpu_bytes": 80 * GIB, "limit": p.limit, "reason": p.reason, "measured": True}


def test_concurrency_counts_like_ray():
    assert 1.0 // 0.2 == 4.0  # why search.tuner does not divide floats
    assert _slots(1.0, 1 / 6) == 5  # 1/6 is 0.1667 to Ray: six do not fit; hence choose_packing rounds down
    assert [_slots(1.0, choose_packing(0, k * GIB, context_bytes=GIB).gpus_per_trial) for k in range(1, 9)] \
        == list(range(1, 9))
    assert _slots(2.0, 0.2) == 10 and _slots(16, 1.5) == 10


def test_largest_batch_size_is_the_largest_searched_choice():
    assert largest_batch_size(get_space("branchynet"), get_space("branchynet").budget("smoke")) == 128
    assert largest_batch_size(get_space("branchynet"), get_space("branchynet").budget("full")) == 512
    assert largest_batch_size(get_space("better_mistakes"), get_space("better_mistakes").budget("full")) == 256


def _args(**kw):
    base = dict(budget="smoke", data_root=None, data_size="tiny", seed=0, download=False, device="auto",
                cpus_per_trial=1.0)
    return SimpleNamespace(**{**base, **kw})


def test_no_packing_without_a_gpu(monkeypatch):
    space = get_space("gran_hbn")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert packing.measured_default(space, "synthetic", {}, _args()) == (0.0, None)
    # a GPU that --device cpu does not use is not packed either
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert packing.measured_default(space, "synthetic", {}, _args(device="cpu")) == (0.0, None)


def _fake_gpu(monkeypatch, gib):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=gib * GIB))
    monkeypatch.setattr(packing.os, "cpu_count", lambda: 64)


def test_on_a_gpu_the_measured_peak_picks_the_packing_and_the_data_is_read_once(monkeypatch):
    from search import prepare

    space = get_space("gran_hbn")
    _fake_gpu(monkeypatch, 40)
    seen = {}

    def measure(space_name, budget_name, options, data, resident):
        seen.update(space=space_name, budget=budget_name, channels=data.channels, resident=resident)
        return 5 * GIB, True, 128

    monkeypatch.setattr(packing, "_measure", measure)
    lines = []
    console = SimpleNamespace(print=lambda text, **kw: lines.append(text))
    gpus, record = packing.measured_default(space, "synthetic", {}, _args(), console)
    assert gpus == 0.2 and record["trials_per_gpu"] == 5 and record["measured"] is True
    assert record["peak_bytes"] == 5 * GIB and record["gpu_bytes"] == 40 * GIB and record["limit"] == "memory"
    assert seen["space"] == "gran_hbn" and seen["channels"] == 3 and seen["resident"] > 0
    assert lines and record["reason"] in lines[0]
    # the dataset it loaded is handed to reference_costs, which then keeps nothing
    loaded = dict(prepare._HANDOVER)
    assert len(loaded) == 1
    monkeypatch.setattr("trainables.data.get_dataset", lambda *a, **k: pytest.fail("read twice"))
    monkeypatch.setattr("trainables.engine.cost.exit_flops", lambda net, c, s: [1.0, 2.0])  # FLOP counting is not the point
    from search.spec import RunSpec

    spec = RunSpec(space="gran_hbn", data="synthetic", name="x", storage="/tmp", data_size="tiny")
    assert prepare.reference_costs(space, spec)["flops"] == 2.0
    assert prepare._HANDOVER == {}


def test_a_failed_measurement_falls_back_and_says_why(monkeypatch):
    _fake_gpu(monkeypatch, 80)

    def broken(*a):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(packing, "_measure", broken)
    gpus, record = packing.measured_default(get_space("gran_hbn"), "synthetic", {}, _args())
    assert gpus == 0.25 and record["measured"] is False and record["limit"] == "fallback"
    assert "CUDA error: out of memory" in record["reason"] and record["reason"].startswith("4 trials per GPU")


def test_run_keeps_no_packing_on_a_cpu_machine(monkeypatch, tmp_path):
    """search.run without --gpus-per-trial and without CUDA: 0 GPUs, no packing record."""
    import search.tuner
    from search import run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    got = {}
    monkeypatch.setattr(search.tuner, "run_search", lambda spec, console, stop: got.update(spec=spec))
    code = run.main(["--space", "gran_hbn", "--data", "synthetic", "--storage", str(tmp_path), "--name", "r",
                     "--no-report"])
    assert code == 0
    assert got["spec"].gpus_per_trial == 0.0 and got["spec"].packing is None
    assert json.loads(json.dumps(got["spec"].to_dict()))["packing"] is None


def test_run_records_the_packing_in_its_spec(monkeypatch, tmp_path):
    import search.tuner
    from search import run

    record = {"trials_per_gpu": 4, "gpus_per_trial": 0.25, "reason": "4 trials per GPU: test", "measured": True}
    monkeypatch.setattr(packing, "measured_default", lambda *a, **k: (0.25, record))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    got = {}
    monkeypatch.setattr(search.tuner, "run_search", lambda spec, console, stop: got.update(spec=spec))
    assert run.main(["--space", "gran_hbn", "--data", "synthetic", "--storage", str(tmp_path), "--name", "r",
                     "--no-report"]) == 0
    assert got["spec"].gpus_per_trial == 0.25 and got["spec"].to_dict()["packing"] == record
    # given explicitly, nothing is measured
    monkeypatch.setattr(packing, "measured_default", lambda *a, **k: pytest.fail("measured"))
    assert run.main(["--space", "gran_hbn", "--data", "synthetic", "--storage", str(tmp_path), "--name", "r2",
                     "--gpus-per-trial", "0.5", "--no-report"]) == 0
    assert got["spec"].gpus_per_trial == 0.5 and got["spec"].packing is None


def test_the_child_measures_the_spaces_largest_networks_at_the_largest_batch(monkeypatch):
    """What the spawned child runs, here in-process on the CPU (the estimate), at a small batch
    (the largest batch size itself is test_largest_batch_size_is_the_largest_searched_choice's)."""
    from trainables.data import get_dataset
    from trainables.engine.family import DataInfo

    info = DataInfo.of(get_dataset("synthetic", None, seed=0, size="tiny"))
    monkeypatch.setattr(packing, "largest_batch_size", lambda space, budget: 4 if budget.name == "smoke" else 0)
    peak, measured, batch = packing._measure_child("gran_hbn", "smoke", {}, info, 12345, "cpu")
    assert (measured, batch) == (False, 4) and peak > 12345 + 4 * 2**20  # >= 4 parameter copies of a ~0.25 M net
