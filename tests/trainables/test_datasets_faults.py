"""Damaged dataset files: every one is a DatasetCorrupt naming the file, the problem and what to do
(never a raw pickle / numpy / zipfile error), and download=True (`--download`) replaces damaged files
with a fresh copy, only once that copy is complete. Fixture files come from test_datasets' writers;
no test touches the network (the download functions are replaced)."""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.trainables.test_datasets import _idx_bytes, _pickle, write_cifar10, write_cifar10_npz, write_cifar100, write_fashion
from trainables.data import DatasetCorrupt, DatasetUnavailable, cifar, fashion_mnist, get_dataset


def _corrupt(name: str, root: Path, bad_file: Path, *fragments: str, **kwargs) -> str:
    """get_dataset(name, root) raises DatasetCorrupt whose one-line message names `bad_file`, each
    fragment and the fixes a CLI user can follow; returns the message."""
    with pytest.raises(DatasetCorrupt) as ei:
        get_dataset(name, root, **kwargs)
    msg = str(ei.value)
    assert "\n" not in msg and str(bad_file) in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    assert "--download" in msg and "--data-root" in msg, msg
    return msg


def _edit_pickle(path: Path, edit: Callable[[dict], None]) -> None:
    with open(path, "rb") as fh:
        d = pickle.load(fh)
    edit(d)
    _pickle(path, d)


def _truncate(path: Path, keep: float = 0.5) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- truncated or unreadable files


@pytest.mark.parametrize("part", ["train", "test", "meta"])
def test_cifar100_truncated_pickle(tmp_path: Path, part: str) -> None:
    folder = write_cifar100(tmp_path)
    _truncate(folder / part)
    msg = _corrupt("cifar100", tmp_path, folder / part, "truncated or corrupt", str(folder), verify=False)
    assert "verify=False" not in msg


@pytest.mark.parametrize("part", ["data_batch_1", "data_batch_5", "test_batch", "batches.meta"])
def test_cifar10_truncated_pickle(tmp_path: Path, part: str) -> None:
    folder = write_cifar10(tmp_path)
    _truncate(folder / part, 0.3)
    _corrupt("cifar10", tmp_path, folder / part, "truncated or corrupt", verify=False)


def _npy_not_npz(path: Path) -> None:
    np.save(path.with_suffix(".npy"), np.zeros(3))
    path.with_suffix(".npy").rename(path)


def _flip_middle_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", [
    lambda p: _truncate(p, 0.5), lambda p: _truncate(p, 0.99), lambda p: p.write_bytes(b""),
    lambda p: p.write_text("not a zip archive"), _npy_not_npz, _flip_middle_byte,
], ids=["half", "last-byte", "empty", "text", "npy", "bad-crc"])
def test_cifar10_npz_truncated_or_not_a_zip(tmp_path: Path, damage: Callable[[Path], None]) -> None:
    path, _, _ = write_cifar10_npz(tmp_path)
    damage(path)
    msg = _corrupt("cifar10", tmp_path, path, "unreadable CIFAR-10 npz")
    assert "cifar-10-batches-py" in msg  # --download fetches the official batches, which win over the npz


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_fashion_mnist_truncated_idx(tmp_path: Path, gz: bool, name: str) -> None:
    write_fashion(tmp_path, gz=gz)
    path = tmp_path / (f"{name}.gz" if gz else name)
    _truncate(path, 0.6)
    _corrupt("fashion_mnist", tmp_path, path, "gzip" if gz else "truncated")
    path.write_bytes(b"")
    _corrupt("fashion_mnist", tmp_path, path, "empty")


# ---------------------------------------------------------------------------- labels out of range


def test_cifar100_fine_label_100(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path)
    _edit_pickle(folder / "train", lambda d: d[b"fine_labels"].__setitem__(5, 100))
    _corrupt("cifar100", tmp_path, folder / "train", "fine labels outside [0, 100)", "0..100", verify=False)


def test_cifar100_negative_coarse_label(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path)
    _edit_pickle(folder / "test", lambda d: d[b"coarse_labels"].__setitem__(0, -1))
    _corrupt("cifar100", tmp_path, folder / "test", "coarse labels outside [0, 20)", verify=False)


def test_cifar10_label_10_in_a_batch(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    _edit_pickle(folder / "data_batch_4", lambda d: d[b"labels"].__setitem__(0, 10))
    _corrupt("cifar10", tmp_path, folder / "data_batch_4", "class labels outside [0, 10)", verify=False)


def test_cifar10_label_10_in_the_npz(tmp_path: Path) -> None:
    path, x, y = write_cifar10_npz(tmp_path)
    y = y.copy()
    y[7] = 10
    np.savez(path, x=x, y=y)
    _corrupt("cifar10", tmp_path, path, "class labels outside [0, 10)", "0..10")


def test_fashion_mnist_label_10(tmp_path: Path) -> None:
    write_fashion(tmp_path, gz=False)
    path = tmp_path / "train-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    raw[8 + 3] = 10  # the fourth label (after the 8-byte header)
    path.write_bytes(bytes(raw))
    _corrupt("fashion_mnist", tmp_path, path, "label 10 outside [0, 10)")


# ---------------------------------------------------------------------------- wrong dtype or shape


def _set(key: bytes, value: Callable[[dict], object]) -> Callable[[dict], None]:
    return lambda d: d.__setitem__(key, value(d))


@pytest.mark.parametrize("edit, fragment", [
    (_set(b"data", lambda d: d[b"data"].astype(np.float32)), "got float32 (300, 3072)"),
    (_set(b"data", lambda d: d[b"data"].astype(np.int64)), "got int64 (300, 3072)"),
    (_set(b"data", lambda d: np.zeros((300, 28 * 28), np.uint8)), "got uint8 (300, 784)"),
    (_set(b"data", lambda d: d[b"data"][:-1]), "'fine_labels' should be 299 integer labels"),
    (_set(b"fine_labels", lambda d: [[1, 2], [3]] + [0] * 298), "'fine_labels' is not an array"),
    (_set(b"fine_labels", lambda d: [0.5] * 300), "integer labels"),
], ids=["float32", "int64", "28x28", "rows", "ragged-labels", "float-labels"])
def test_cifar100_wrong_images_or_labels(tmp_path: Path, edit: Callable[[dict], None], fragment: str) -> None:
    folder = write_cifar100(tmp_path)
    _edit_pickle(folder / "train", edit)
    _corrupt("cifar100", tmp_path, folder / "train", fragment, verify=False)


@pytest.mark.parametrize("edit, fragment", [
    (_set(b"fine_label_names", lambda d: 7), "'fine_label_names' should be a list of class names"),
    (_set(b"fine_label_names", lambda d: d[b"fine_label_names"][:50]), "50 fine and 20 coarse class names"),
], ids=["not-a-list", "50-names"])
def test_cifar100_bad_meta(tmp_path: Path, edit: Callable[[dict], None], fragment: str) -> None:
    folder = write_cifar100(tmp_path)
    _edit_pickle(folder / "meta", edit)
    _corrupt("cifar100", tmp_path, folder / "meta", fragment, verify=False)


def test_cifar10_batch_of_float_images(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    _edit_pickle(folder / "test_batch", _set(b"data", lambda d: d[b"data"].astype(np.float32)))
    _corrupt("cifar10", tmp_path, folder / "test_batch", "should be uint8 (N, 3072) images, got float32", verify=False)


@pytest.mark.parametrize("make, fragment", [
    (lambda x, y: (x.astype(np.float32), y), "got float32 (500, 32, 32, 3)"),
    (lambda x, y: (x.astype(np.int64), y), "got int64 (500, 32, 32, 3)"),
    (lambda x, y: (np.zeros((500, 28, 28, 3), np.uint8), y), "got uint8 (500, 28, 28, 3)"),
    (lambda x, y: (x[:-3], y), "y should be 497 integer labels"),
    (lambda x, y: (x, y.astype(np.float32)), "integer labels (one per image), got float32"),
], ids=["float32", "int64", "28x28", "rows", "float-labels"])
def test_cifar10_npz_wrong_images_or_labels(tmp_path: Path, make: Callable, fragment: str) -> None:
    path, x, y = write_cifar10_npz(tmp_path)
    x2, y2 = make(x, y)
    np.savez(path, x=x2, y=y2)
    _corrupt("cifar10", tmp_path, path, fragment)


def test_fashion_mnist_wrong_image_shape(tmp_path: Path) -> None:
    write_fashion(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(_idx_bytes(np.zeros((60, 32, 32), np.uint8), 2051))
    _corrupt("fashion_mnist", tmp_path, path, "expected uint8 (N, 28, 28) images, got uint8 (60, 32, 32)")
    path.write_bytes(struct.pack(">I", 0x0C03) + struct.pack(">III", 60, 28, 28) + np.zeros((60, 28, 28), ">i4").tobytes())
    _corrupt("fashion_mnist", tmp_path, path, "type code 0x0c")  # int32 pixels


# ---------------------------------------------------------------------------- the checksum message


def test_checksum_message_leads_with_advice_a_cli_user_can_follow(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path)
    msg = _corrupt("cifar100", tmp_path, folder / "train", "fails its checksum", cifar.CIFAR100_MD5["train"])
    assert f"delete {folder} and rerun with --download" in msg
    # verify=False is no CLI flag: it is mentioned last, as the Python API's escape hatch
    assert msg.index("--download") < msg.index("--data-root") < msg.index("verify=False")


# ---------------------------------------------------------------------------- --download replaces damaged files


def _official(write: Callable[[Path], Path], tmp_path: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """The bytes and md5s of the files a (fake) download writes: seed 1 stands in for the official copy."""
    folder = write(tmp_path / "official")
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    return files, {name: cifar.file_md5(folder / name) for name in files}


@pytest.fixture()
def fake_cifar_download(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Path]]:
    """cifar._download replaced by writers of the seed-1 fixture files; the calls are recorded."""
    calls: list[tuple[str, Path]] = []

    def fake(kind: str, root: Path) -> None:
        calls.append((kind, root))
        (write_cifar100 if kind == "cifar100" else write_cifar10)(root, seed=1)

    monkeypatch.setattr(cifar, "_download", fake)
    return calls


def test_download_replaces_files_that_fail_their_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          fake_cifar_download: list) -> None:
    official, md5s = _official(lambda r: write_cifar100(r, seed=1), tmp_path)
    for name, md5 in md5s.items():
        monkeypatch.setitem(cifar.CIFAR100_MD5, name, md5)
    root = tmp_path / "data"
    folder = write_cifar100(root, seed=0)  # not the official bytes: fails the checksum
    damaged = _snapshot(root)
    _corrupt("cifar100", root, folder / "train", "fails its checksum")
    assert fake_cifar_download == [] and _snapshot(root) == damaged  # no --download: nothing fetched or changed

    ds = get_dataset("cifar100", root, download=True)
    assert len(fake_cifar_download) == 1 and fake_cifar_download[0][0] == "cifar100"
    assert fake_cifar_download[0][1].parent == folder  # downloaded into a temporary folder beside the files
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == official  # replaced, and nothing left behind
    assert "md5 verified" in ds.source and len(ds.test) == 200
    get_dataset("cifar100", root, download=True)
    assert len(fake_cifar_download) == 1  # good files now: no second download


def test_download_replaces_a_truncated_cifar10_batch(tmp_path: Path, fake_cifar_download: list) -> None:
    official, _ = _official(lambda r: write_cifar10(r, seed=1), tmp_path)
    folder = write_cifar10(tmp_path / "data")
    _truncate(folder / "data_batch_2")
    ds = get_dataset("cifar10", tmp_path / "data", download=True, verify=False)
    assert len(fake_cifar_download) == 1
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == official
    assert len(ds.test) == 100


def test_download_completes_a_half_extracted_cifar10(tmp_path: Path, fake_cifar_download: list) -> None:
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    _corrupt("cifar10", tmp_path, folder, "incomplete CIFAR-10", "data_batch_3", verify=False)
    get_dataset("cifar10", tmp_path, download=True, verify=False)
    assert len(fake_cifar_download) == 1 and (folder / "data_batch_3").is_file()


def test_download_fetches_official_batches_beside_a_damaged_npz(tmp_path: Path, fake_cifar_download: list) -> None:
    path, _, _ = write_cifar10_npz(tmp_path)
    _truncate(path)
    npz = path.read_bytes()
    ds = get_dataset("cifar10", tmp_path, download=True, verify=False)
    assert len(fake_cifar_download) == 1 and "pickles" in ds.source
    assert (tmp_path / "cifar-10-batches-py" / "test_batch").is_file()
    assert path.read_bytes() == npz  # the .npz is not ours to replace; the official batches win over it


@pytest.mark.parametrize("failure", ["network", "incomplete"])
def test_a_failed_download_leaves_the_damaged_files_as_they_were(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 failure: str) -> None:
    folder = write_cifar100(tmp_path)
    _truncate(folder / "train")
    before = _snapshot(tmp_path)

    def fake(kind: str, root: Path) -> None:
        write_cifar100(root, seed=1)
        if failure == "network":  # fails half-way, as a dropped connection would
            raise DatasetUnavailable(f"downloading {kind} into {root} failed: URLError: no network")
        (root / "cifar-100-python" / "test").unlink()

    monkeypatch.setattr(cifar, "_download", fake)
    with pytest.raises(DatasetUnavailable) as ei:
        get_dataset("cifar100", tmp_path, download=True, verify=False)
    assert "left as they were" in str(ei.value) and str(folder) in str(ei.value)
    assert _snapshot(tmp_path) == before  # same files, same bytes: no temporary folder either
    assert sorted(p.name for p in folder.iterdir()) == ["meta", "test", "train"]


def test_a_damaged_fresh_download_is_not_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def fake(kind: str, root: Path) -> None:
        calls.append(root)
        _truncate(write_cifar100(root) / "test")

    monkeypatch.setattr(cifar, "_download", fake)
    with pytest.raises(DatasetCorrupt, match="truncated or corrupt"):
        get_dataset("cifar100", tmp_path, download=True, verify=False)
    assert calls == [tmp_path]  # the first download found the files damaged: no loop of downloads


def test_fashion_mnist_download_replaces_damaged_idx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def fake(root: Path) -> None:  # torchvision keeps both the .gz and the extracted file
        calls.append(root)
        for gz in (True, False):
            write_fashion(root / "FashionMNIST" / "raw", gz=gz, seed=1)

    monkeypatch.setattr(fashion_mnist, "_download", fake)
    official = write_fashion(tmp_path / "official", seed=1)
    root = tmp_path / "data"
    write_fashion(root, gz=True)
    bad = root / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(gzip.decompress(bad.read_bytes())[:-5]))
    ds = get_dataset("fashion_mnist", root, download=True)
    assert len(calls) == 1 and calls[0].parent == root
    # the content is the official one (gzip stamps its own write time into the header, so compare what it holds)
    assert gzip.decompress(bad.read_bytes()) == gzip.decompress((official / bad.name).read_bytes())
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in official.iterdir())  # .gz only, as found
    assert len(ds.test) == 20
