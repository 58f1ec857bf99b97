"""The node-local memory-mapped dataset cache (trainables/data/node_cache.py) and load_data on top of it."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import trainables.engine.device_data as device_data
from trainables.data import Dataset, get_dataset, node_cache
from trainables.engine.device_data import DeviceLoader, load_data
from tests.trainables.test_datasets import write_cifar10


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "node-cache"
    monkeypatch.setenv(node_cache.CACHE_ENV, str(where))
    monkeypatch.setattr(device_data, "_DATA_CACHE", {})
    return where


def assert_same(a: Dataset, b: Dataset) -> None:
    for s in ("train", "calib", "test"):
        x, y = getattr(a, s), getattr(b, s)
        assert x.images.dtype == y.images.dtype == torch.uint8 and x.fine.dtype == y.fine.dtype == torch.int64
        assert torch.equal(x.images, y.images) and torch.equal(x.fine, y.fine), s
    assert a.hierarchy == b.hierarchy and a.tree == b.tree
    assert (a.name, a.mean, a.std, a.source) == (b.name, b.mean, b.std, b.source)


@functools.cache
def fresh_synthetic() -> Dataset:
    """synthetic at size "tiny", decoded once for the whole module (the builder is the slow part)."""
    return get_dataset("synthetic", seed=0, size="tiny")


class Counting:
    """A build function that counts its calls (synthetic: hands out the one decoded copy)."""

    def __init__(self, name: str, root: Path | None = None, **kw) -> None:
        self.name, self.root, self.kw, self.calls = name, root, kw, 0

    def __call__(self) -> Dataset:
        self.calls += 1
        if self.name == "synthetic":
            return fresh_synthetic()
        return get_dataset(self.name, self.root, seed=0, size="tiny", **self.kw)

    def load(self, download: bool = False) -> Dataset:
        return node_cache.load(self.name, self.root, size="tiny", seed=0, download=download, build=self)


def entries(where: Path) -> list[Path]:
    return sorted(p for p in where.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_synthetic_round_trip_maps_the_files_and_skips_the_decoder(cache: Path) -> None:
    build = Counting("synthetic")
    first = build.load()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable array" warning from torch
        second = build.load()
    assert build.calls == 1
    [entry] = entries(cache)
    assert sorted(p.name for p in entry.iterdir()) == sorted(
        [f"{s}_{p}.npy" for s in ("train", "calib", "test") for p in ("images", "fine")] + ["meta.json"])
    fresh = get_dataset("synthetic", seed=0, size="tiny")  # decoded afresh here
    assert_same(first, fresh)
    assert_same(second, fresh)
    # the tensors are views of the mapped files, not copies
    assert isinstance(np.load(entry / "train_images.npy", mmap_mode="r"), np.memmap)
    assert second.train.images.untyped_storage().data_ptr() != fresh.train.images.untyped_storage().data_ptr()


def test_writes_into_a_mapped_split_stay_private(cache: Path) -> None:
    build = Counting("synthetic")
    ds = build.load()
    ds.train.images[0].fill_(7)  # copy-on-write: neither a crash nor a change to the file
    assert_same(build.load(), fresh_synthetic())


def test_cifar10_fixture_round_trip_and_load_data(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    write_cifar10(root)
    calls: list[tuple] = []
    real = device_data.get_dataset

    def decode(name, root, **kw):
        calls.append((name, kw))
        return real(name, root, verify=False, **kw)  # fixture files: not the official md5s

    monkeypatch.setattr(device_data, "get_dataset", decode)
    ds = load_data("cifar10", str(root), size="full", download=False, seed=3)
    device_data._DATA_CACHE.clear()  # a fresh worker process on the same node
    again = load_data("cifar10", str(root), size="full", download=False, seed=3)
    assert len(calls) == 1 and again is not ds
    fresh = real("cifar10", root, seed=3, size="full", verify=False)
    assert_same(again, fresh)
    # the first training batch a trial sees is the same either way
    kw = dict(coarse_of=np.asarray(fresh.hierarchy.coarse_of), batch_size=64, device=torch.device("cpu"),
              mean=fresh.mean, std=fresh.std, train=True, seed=5)
    a, b = next(DeviceLoader(again.train, **kw).epoch(1)), next(DeviceLoader(fresh.train, **kw).epoch(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_changed_source_files_rebuild(cache: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    folder = write_cifar10(root, seed=0)
    build = Counting("cifar10", root, verify=False)
    before = build.load()
    write_cifar10(root, seed=1)  # same names, other label order
    os.utime(folder / "data_batch_1", ns=(1, 1))  # even a same-size rewrite in the same tick changes the mtime
    after = build.load()
    assert build.calls == 2 and len(entries(cache)) == 2
    assert not torch.equal(before.train.fine, after.train.fine)
    assert_same(after, get_dataset("cifar10", root, seed=0, size="tiny", verify=False))
    (root / "cifar10-train.npz").write_bytes(b"")  # a file the builder may read appears: a new key too
    build.load()
    assert build.calls == 3


@pytest.mark.parametrize("damage", ["truncate", "delete", "meta", "shape"])
def test_damaged_entry_is_rebuilt(cache: Path, damage: str) -> None:
    build = Counting("synthetic")
    build.load()
    [entry] = entries(cache)
    npy = entry / "train_images.npy"
    if damage == "truncate":
        npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    elif damage == "delete":
        (entry / "test_fine.npy").unlink()
    elif damage == "meta":
        (entry / "meta.json").write_text("{not json")
    else:
        meta = json.loads((entry / "meta.json").read_text())
        np.save(entry / "calib_fine.npy", np.zeros(3, dtype=np.int64))  # a whole file, of the wrong length
        (entry / "meta.json").write_text(json.dumps(meta))
    assert_same(build.load(), fresh_synthetic())
    assert build.calls == 2
    assert node_cache.read_entry(entries(cache)[0]) is not None


def _race(where: str, start: float, direct: bool, q) -> None:
    os.environ[node_cache.CACHE_ENV] = where
    ds = _RACE_DATA

    def build() -> Dataset:
        time.sleep(0.2)  # both processes are inside at once
        return ds

    while time.time() < start:
        time.sleep(0.005)
    if direct:  # two writers without the lock: atomic rename alone
        node_cache.write_entry(Path(where) / "entry", ds)
        got = node_cache.read_entry(Path(where) / "entry")
    else:
        got = node_cache.load("synthetic", None, size="tiny", seed=0, download=False, build=build)
    # numpy, not torch, in a forked child: torch's thread pool does not survive a fork
    q.put(got is not None and all(np.array_equal(getattr(got, s).images.numpy(), getattr(ds, s).images.numpy())
                                  and np.array_equal(getattr(got, s).fine.numpy(), getattr(ds, s).fine.numpy())
                                  for s in ("train", "calib", "test")))


_RACE_DATA: Dataset | None = None


@pytest.mark.parametrize("direct", [False, True], ids=["load", "write_entry"])
def test_two_processes_writing_at_once_both_end_with_a_valid_entry(cache: Path, direct: bool) -> None:
    global _RACE_DATA
    _RACE_DATA = fresh_synthetic()
    ctx = multiprocessing.get_context("fork")  # fork: the children need no fresh torch import
    q = ctx.Queue()
    start = time.time() + 0.3
    procs = [ctx.Process(target=_race, args=(str(cache), start, direct, q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    assert [q.get(timeout=5), q.get(timeout=5)] == [True, True]
    [entry] = entries(cache)
    assert_same(node_cache.read_entry(entry), _RACE_DATA)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # the loser's temp copy is gone


def test_off_switch_decodes_every_time(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(node_cache.CACHE_ENV, "off")
    assert node_cache.cache_dir() is None
    build = Counting("synthetic")
    build.load()
    build.load()
    assert build.calls == 2 and not cache.exists()


def test_default_directory_is_node_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(node_cache.CACHE_ENV, raising=False)
    import tempfile
    assert node_cache.cache_dir() == Path(tempfile.gettempdir()) / f"exitsearch-node-cache-{os.getuid()}"


def test_unusable_cache_directory_falls_back_to_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(node_cache.CACHE_ENV, str(tmp_path / "a-file" / "cache"))
    build = Counting("synthetic")
    with pytest.warns(UserWarning, match="node data cache"):
        ds = build.load()
    assert build.calls == 1
    assert_same(ds, fresh_synthetic())


def test_download_builds_first_then_caches_under_the_fetched_files(cache: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    build = Counting("cifar10", root, verify=False)

    def fetch_then_build() -> Dataset:  # stands in for get_dataset(download=True) fetching the archive
        write_cifar10(root)
        return build()

    first = node_cache.load("cifar10", root, size="tiny", seed=0, download=True, build=fetch_then_build)
    assert build.calls == 1
    assert_same(build.load(download=False), first)  # the files now there name the entry
    assert build.calls == 1


def test_unknown_dataset_is_not_cached(cache: Path) -> None:
    calls = []
    ds = fresh_synthetic()
    node_cache.load("someone_elses", None, size="tiny", seed=0, download=False, build=lambda: calls.append(1) or ds)
    assert calls == [1] and not cache.exists()
