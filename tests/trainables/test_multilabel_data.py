"""Multi-label targets in the shared data layer: iterative stratification, multi-hot splits and
datasets, their superclass vectors, the node cache, the exit cache, and families that refuse them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.data import Dataset, Hierarchy, Split, as_split, balanced_subset, channel_stats, node_cache, stratified_split
from trainables.data_info import DataInfo
from trainables.exits import ExitCache
from trainables.stratify import iterative_stratification, multilabel_split


def skewed_labels(n: int = 2000, c: int = 20, seed: int = 0) -> np.ndarray:
    """A multi-hot matrix with labels from common (p 0.4) to rare (p 0.004), 1-3 labels an image."""
    rng = np.random.default_rng(seed)
    p = 0.4 * 0.75 ** np.arange(c)
    y = rng.random((n, c)) < p
    y[~y.any(1), 0] = True  # at least one label each
    return y.astype(np.uint8)


def test_iterative_stratification_known_cases():
    # two labels, two samples each: every part gets one of each
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.uint8)
    for seed in range(5):
        part = iterative_stratification(y, [0.5, 0.5], seed)
        assert sorted(y[part == 0].sum(0).tolist()) == [1, 1] and (part == 0).sum() == 2
    # the rarest label is placed first: a sample of the rare label B goes where B is still wanted
    y = np.array([[1, 1], [1, 0], [1, 0], [1, 0], [1, 1], [1, 0]], np.uint8)
    part = iterative_stratification(y, [0.5, 0.5], 3)
    assert y[part == 0, 1].sum() == 1 and y[part == 1, 1].sum() == 1 and (part == 0).sum() == 3
    # samples without labels fill the parts that still want samples
    y = np.zeros((10, 3), np.uint8)
    y[:5, 0] = 1
    part = iterative_stratification(y, [0.8, 0.2], 0)
    assert (part == 0).sum() == 8 and (part == 1).sum() == 2 and y[part == 1, 0].sum() == 1


def test_iterative_stratification_keeps_every_labels_share_better_than_a_random_split():
    y = skewed_labels()
    r = np.array([0.8, 0.1, 0.1])
    part = iterative_stratification(y, r, seed=1)
    sizes = np.bincount(part, minlength=3)
    assert np.all(np.abs(sizes - r * len(y)) <= 0.01 * len(y)), sizes  # sizes: within 1% of N
    want = r[:, None] * y.sum(0)[None]  # (parts, labels)
    got = np.stack([y[part == j].sum(0) for j in range(3)])
    dev_strat = np.abs(got - want).max()
    rng = np.random.default_rng(1)
    dev_random = np.mean([np.abs(np.stack([y[q == j].sum(0) for j in range(3)]) - want).max()
                          for q in (rng.choice(3, len(y), p=r) for _ in range(20))])
    assert dev_strat <= 1.0 and dev_strat < dev_random / 10, (dev_strat, dev_random)  # within a sample of its share
    # every label with at least one sample per part's share ends up in every part
    assert np.all(got[:, y.sum(0) >= 10] > 0)
    assert np.array_equal(part, iterative_stratification(y, r, seed=1))  # deterministic
    assert not np.array_equal(part, iterative_stratification(y, r, seed=2))


def test_iterative_stratification_refuses_bad_input():
    with pytest.raises(ValueError, match="multi-hot"):
        iterative_stratification(np.zeros(5), [1.0])
    with pytest.raises(ValueError, match="sum to 1"):
        iterative_stratification(np.zeros((5, 2)), [0.5, 0.2])


def test_splits_and_subsets_of_multi_hot_labels_are_label_stratified():
    y = skewed_labels(1000, 8)
    keep, held = stratified_split(y, 0.1, seed=0)
    assert np.array_equal(np.sort(np.concatenate([keep, held])), np.arange(1000))
    assert abs(len(held) - 100) <= 10 and np.all(np.diff(held) > 0)
    assert np.array_equal((keep, held)[1], multilabel_split(y, 0.1, 0)[1])
    sub = balanced_subset(y, 300, seed=0)
    assert abs(len(sub) - 300) <= 10 and np.all(np.abs(y[sub].sum(0) - 0.3 * y.sum(0)) <= 1)
    assert len(balanced_subset(y, 5000, seed=0)) == 1000
    assert len(stratified_split(np.arange(10) % 2, 0.2, 0)[1]) == 2  # single-label: as before


def multi_label_dataset(n: int = 40, c: int = 4) -> Dataset:
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(n, c, generator=g) < 0.4).to(torch.uint8)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    split = as_split(images, y.numpy())
    h = Hierarchy.from_fine_to_coarse([0, 0, 1, 1][:c], [f"c{i}" for i in range(c)], ["x", "y"])
    mean, std = channel_stats(images)
    return Dataset(name="ml", train=split, calib=split.subset(range(10)), test=split.subset(range(10, 20)),
                   hierarchy=h, tree=None, mean=mean, std=std, source="test")


def test_multi_hot_splits_datasets_and_their_superclasses():
    ds = multi_label_dataset()
    assert ds.multi_label and ds.train.multi_label and ds.describe()["multi_label"] is True
    assert ds.train.fine.dtype == torch.uint8 and ds.train.fine.shape == (40, 4)
    coarse = ds.train.coarse(ds.hierarchy)
    expect = torch.stack([ds.train.fine[:, :2].amax(1), ds.train.fine[:, 2:].amax(1)], 1)
    assert torch.equal(coarse, expect)
    assert ds.train.class_counts(4).tolist() == ds.train.fine.sum(0).tolist()
    assert DataInfo.of(ds).multi_label and DataInfo.from_plain(DataInfo.of(ds).to_plain()).multi_label
    with pytest.raises(ValueError, match="multi-hot"):
        Split(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="0/1 multi-hot vectors of 4"):
        Dataset(name="bad", train=ds.train, calib=as_split(ds.calib.images, np.full((10, 4), 2)), test=ds.test,
                hierarchy=ds.hierarchy, tree=None, mean=ds.mean, std=ds.std, source="")
    single = as_split(ds.test.images, np.zeros(10))
    with pytest.raises(ValueError, match="single- vs multi-label"):
        Dataset(name="bad", train=ds.train, calib=ds.calib, test=single, hierarchy=ds.hierarchy, tree=None,
                mean=ds.mean, std=ds.std, source="")


def test_multi_label_dataset_round_trips_through_the_node_cache(tmp_path):
    ds = multi_label_dataset()
    node_cache.write_entry(tmp_path / "e", ds)
    back = node_cache.read_entry(tmp_path / "e")
    assert back is not None and back.multi_label
    for a, b in ((ds.train, back.train), (ds.calib, back.calib), (ds.test, back.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.fine, b.fine) and b.fine.dtype == torch.uint8


def test_device_loader_batches_carry_multi_hot_targets():
    from trainables.engine.device_data import DeviceLoader

    ds = multi_label_dataset()
    loader = DeviceLoader(ds.train, coarse_of=np.array([0, 0, 1, 1]), batch_size=8, device=torch.device("cpu"),
                          mean=ds.mean, std=ds.std, train=True, seed=0)
    x, yf, yc = next(iter(loader.epoch(0)))
    assert yf.shape == (8, 4) and yc.shape == (8, 2) and yf.dtype == torch.uint8
    assert torch.equal(yc[:, 0], yf[:, :2].amax(1))


def test_exit_cache_stats_of_multi_hot_labels(tmp_path):
    logits = np.array([[[3.0, 0, 0], [0, 2.0, 0], [0, 0, 1.0]]], np.float32)  # top-1: 0, 1, 2
    labels = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], np.uint8)
    cache = ExitCache(("fine",), {"fine": logits}, {"fine": labels}, {"flops": np.array([1.0])})
    assert cache.stats().correct[0, 0].tolist() == [True, False, True]  # top-1 among the image's labels
    cache.save(tmp_path / "c.npz")
    back = ExitCache.load(tmp_path / "c.npz")
    assert back.labels["fine"].dtype == np.uint8 and np.array_equal(back.labels["fine"], labels)


def test_a_single_label_family_refuses_multi_label_data():
    from tests.trainables.test_loop import gran_family
    from trainables.engine.family import UnsuitableData

    info = DataInfo.of(multi_label_dataset())
    with pytest.raises(UnsuitableData, match="multi-label"):
        gran_family().check_data(info)
    gran_family().check_data(info._replace(multi_label=False))  # the same data, single-label: fine
