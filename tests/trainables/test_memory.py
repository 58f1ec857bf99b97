"""A trial's peak memory (trainables/engine/memory.py): the CPU estimate here, the CUDA measurement where a GPU is."""

from __future__ import annotations

import pytest
import torch

from spaces import get_space
from trainables.data import get_dataset
from trainables.engine.family import DataInfo
from trainables.engine.memory import dataset_bytes, training_peak

SMALL = {"backbone": "resnet", "resnet.width": 4, "resnet.blocks": 1, "resnet.n_stages": 3, "exit_after": [0, 2],
         "head": "linear"}


@pytest.fixture(scope="module")
def setup():
    space = get_space("gran_hbn")
    budget = space.budget("smoke")
    ds = get_dataset("synthetic", None, seed=0, size="tiny")
    return space.family(budget, space.resolve_options({})), DataInfo.of(ds), ds


def test_dataset_bytes_are_every_split_on_the_device(setup):
    _, _, ds = setup
    n = len(ds.train.fine) + len(ds.calib.fine) + len(ds.test.fine)
    assert dataset_bytes(ds) == n * (ds.channels * ds.image_size**2 + 16)


def test_cpu_estimate_grows_with_the_batch_and_exceeds_the_parameters(setup):
    family, data, _ = setup
    small = training_peak(family, data, 8, configs=[SMALL], device="cpu")
    large = training_peak(family, data, 32, configs=[SMALL], device="cpu", dataset_bytes=1000)
    assert not small.measured and small.batch_size == 8
    parts = small.per_config[0]
    assert parts["grads"] == parts["params"]
    assert 2 * parts["params"] <= parts["optimizer"] < 2 * parts["params"] + 4096  # Adam: two states (and a step)
    assert small.peak_bytes > 4 * parts["params"] and parts["activations"] > 0
    assert large.per_config[0]["params"] == parts["params"]
    # activations scale with the batch: 4x the images, about 4x the saved bytes
    assert 3 * parts["activations"] < large.per_config[0]["activations"] <= 4 * parts["activations"] + 1024
    assert large.peak_bytes == large.per_config[0]["peak"] + 1000 > small.peak_bytes


def test_the_largest_of_the_reference_networks_counts(setup):
    family, data, _ = setup
    wider = {**SMALL, "resnet.width": 8}
    est = training_peak(family, data, 8, configs=[SMALL, wider], device="cpu")
    assert est.peak_bytes == max(p["peak"] for p in est.per_config) == est.per_config[1]["peak"]
    with pytest.raises(ValueError):
        training_peak(family, data, 8, configs=[], device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="measuring the real peak needs a CUDA device")
def test_cuda_measures_the_real_peak(setup):
    family, data, _ = setup
    small = training_peak(family, data, 64, configs=[SMALL], device="cuda")
    large = training_peak(family, data, 512, configs=[SMALL], device="cuda", dataset_bytes=10**6)
    assert small.measured and large.measured
    params = sum(p.numel() * 4 for p in family.build_model(SMALL, data).parameters())
    assert small.peak_bytes > 4 * params  # parameters, gradients, Adam's two states, and activations
    assert large.peak_bytes > small.peak_bytes + 10**6
    assert torch.cuda.memory_allocated() < 2**20  # nothing left behind
