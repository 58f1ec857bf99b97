"""`--data csv:PATH`: the research's CSV layout read and checked (good and bad files), images decoded
at a chosen size, splits stratified, the node cache keyed on the CSV and its images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import write_png

from trainables.data import DatasetUnavailable, UnknownDataset, canonical_dataset, get_dataset, node_cache
from trainables.data.csv_images import CsvInvalid, common_side, read_listing, write_listing

HEADER = "ImageID,Labels,Caption\n"


def write_images(folder: Path, n: int, side: int = 12, seed: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    names = []
    for i in range(n):
        name = f"{i}.png"
        write_png(torch.randint(0, 256, (3, side, side), dtype=torch.uint8, generator=g), str(folder / name))
        names.append(name)
    return names


def multi_label_rows(n: int) -> list[str]:
    """Class ids 1, 2, 4, 5 (3 is missing), one to three an image, captions with commas and quotes."""
    rows = []
    for i in range(n):
        labels = [[1], [2, 4], [4], [5, 1, 2], [1, 5]][i % 5]
        caption = ['"A man, a dog"', 'plain words', 'A "quoted" word, and a comma', '', '"He said ""hi"""'][i % 5]
        rows.append(f"{i}.png,{' '.join(map(str, labels))},{caption}\n")
    return rows


@pytest.fixture
def multi_csv(tmp_path) -> Path:
    write_images(tmp_path / "imgs", 60)
    path = tmp_path / "imgs" / "train.csv"
    path.write_text(HEADER + "".join(multi_label_rows(60)))
    return path


def test_the_layout_is_read_with_captions_holding_commas_and_quotes(multi_csv):
    listing = read_listing(multi_csv)
    assert listing.ids[:3] == ["0.png", "1.png", "2.png"] and listing.labels[1] == (2, 4)
    assert listing.captions[:5] == ["A man, a dog", "plain words", 'A "quoted" word, and a comma', "", 'He said "hi"']
    assert listing.classes == [1, 2, 4, 5] and listing.multi_label and listing.lines[0] == 2
    y = listing.targets()
    assert y.dtype == np.uint8 and y.shape == (60, 4) and y[3].tolist() == [1, 1, 0, 1]


def test_a_multi_label_csv_becomes_a_dataset(multi_csv, tmp_path, monkeypatch):
    monkeypatch.setenv(node_cache.CACHE_ENV, "off")
    ds = get_dataset(f"csv:{multi_csv}?size=8", seed=1)
    assert ds.multi_label and ds.hierarchy.fine_names == ["1", "2", "4", "5"] and ds.hierarchy.coarse_names == ["all"]
    assert ds.train.images.shape[1:] == (3, 8, 8) and ds.image_size == 8
    assert len(ds.train) + len(ds.calib) + len(ds.test) == 60 and len(ds.test) == 6
    assert ds.test.fine.sum(0).min() >= 1  # stratified: every class in the test split
    same = get_dataset(f"csv:{multi_csv}?size=8", seed=2)
    assert torch.equal(ds.test.images, same.test.images)  # the test split does not move with the seed
    assert not torch.equal(ds.calib.images, same.calib.images)
    native = get_dataset(f"csv:{multi_csv}", seed=1)  # all square, one size: decoded at their own 12 px
    assert native.image_size == 12
    # the test images are the files themselves (no resize at their own size)
    from torchvision.io import decode_image
    listing = read_listing(multi_csv)
    first = decode_image(str(multi_csv.parent / listing.ids[0]))
    assert any(torch.equal(first, img) for img in native.test.images) or any(torch.equal(first, img) for img in native.train.images)


def test_a_single_label_csv_and_a_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv(node_cache.CACHE_ENV, "off")
    names = write_images(tmp_path / "elsewhere", 30, side=10)
    path = tmp_path / "labels.csv"
    path.write_text("ImageID,Labels\n" + "".join(f"{n},{7 + 3 * (i % 3)}\n" for i, n in enumerate(names)))
    with pytest.raises(CsvInvalid, match="not under"):
        get_dataset(f"csv:{path}")  # the images are not next to the CSV
    ds = get_dataset(f"csv:{path}?size=16", tmp_path / "elsewhere")
    assert not ds.multi_label and ds.train.fine.dtype == torch.int64 and ds.hierarchy.fine_names == ["7", "10", "13"]
    assert np.bincount(ds.test.fine.numpy()).tolist() == [1, 1, 1]


def test_images_of_several_sizes_are_stretched_to_one_side(tmp_path):
    write_images(tmp_path, 2, side=12)
    write_png(torch.zeros(3, 10, 14, dtype=torch.uint8), str(tmp_path / "wide.png"))
    assert common_side([tmp_path / "0.png", tmp_path / "1.png"]) == 12
    assert common_side([tmp_path / "0.png", tmp_path / "wide.png"]) is None  # -> the default side (224)


def test_the_node_cache_keys_on_the_csv_and_its_images(multi_csv, tmp_path, monkeypatch):
    monkeypatch.setenv(node_cache.CACHE_ENV, str(tmp_path / "cache"))
    name = f"csv:{multi_csv}?size=8"
    calls = []

    def build():
        calls.append(1)
        return get_dataset(name)

    a = node_cache.load(name, None, size="full", seed=0, download=False, build=build)
    b = node_cache.load(name, None, size="full", seed=0, download=False, build=build)
    assert len(calls) == 1 and torch.equal(a.train.fine, b.train.fine) and b.multi_label
    write_images(multi_csv.parent, 1, seed=9)  # an image file changed: decoded again
    node_cache.load(name, None, size="full", seed=0, download=False, build=build)
    assert len(calls) == 2


def test_names_are_made_canonical(multi_csv, monkeypatch):
    monkeypatch.chdir(multi_csv.parent)
    assert canonical_dataset("csv:train.csv?size=32") == f"csv:{multi_csv}?size=32"
    assert canonical_dataset("synthetic") == "synthetic"
    with pytest.raises(UnknownDataset, match="csv:PATH"):
        canonical_dataset("csv")
    with pytest.raises(UnknownDataset, match="takes no argument"):
        canonical_dataset("synthetic:x")
    with pytest.raises(DatasetUnavailable, match="size must be"):
        canonical_dataset("csv:train.csv?size=big")


def test_write_listing_reads_back(tmp_path):
    write_listing(tmp_path / "out.csv", ["a.png", "b.png"], [[3, 1], []], ['say "x", then y', ""])
    back = read_listing(tmp_path / "out.csv", labelled=False)
    assert back.labels == [(3, 1), ()] and back.captions == ['say "x", then y', ""]


BAD = {
    "missing file": (None, "does not exist"),
    "empty file": ("", "the first line must be the header"),
    "wrong header": ("image,labels\n0.png,1\n", "the first line must be the header ImageID,Labels,Caption"),
    "empty image name": (HEADER + ",1,x\n", "line 2: the ImageID (image file name) is empty"),
    "one field": (HEADER + "0.png\n", "line 2: expected ImageID,Labels[,Caption]"),
    "label not a number": (HEADER + "0.png,1 cat,x\n", "line 2: label 'cat' of image '0.png' is not a whole number"),
    "negative label": (HEADER + "0.png,-1,x\n", "label '-1' of image '0.png' is not a whole number"),
    "no label": (HEADER + "0.png,,x\n", "line 2: image '0.png' has no label"),
    "label twice": (HEADER + "0.png,2 2,x\n", "label 2 is given twice for image '0.png'"),
    "image twice": (HEADER + "0.png,1,x\n1.png,2\n0.png,2,y\n", "line 4: image '0.png' is listed twice (lines 2 and 4)"),
    "one class": (HEADER + "".join(f"{i}.png,3\n" for i in range(12)), "has one class (3)"),
    "too few images": (HEADER + "0.png,1\n1.png,2\n", "lists 2 image(s): a dataset needs at least 10"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_csv_files_are_refused_naming_the_fault(case, tmp_path):
    text, message = BAD[case]
    path = tmp_path / "labels.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(CsvInvalid, match=re.escape(message)) as exc:
        read_listing(path)
    assert str(path) in str(exc.value)


def test_missing_and_undecodable_images_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv(node_cache.CACHE_ENV, "off")
    names = write_images(tmp_path, 12)
    path = tmp_path / "labels.csv"
    path.write_text(HEADER + "".join(f"{n},{i % 2}\n" for i, n in enumerate(names + ["gone.png"])))
    with pytest.raises(CsvInvalid, match=r"1 of the 13 images listed in .* are not under .*: gone.png\. Point --data-root"):
        get_dataset(f"csv:{path}?size=8")
    (tmp_path / "gone.png").write_bytes(b"not a png")
    with pytest.raises(CsvInvalid, match=r"gone.png \(line 14 of .*\) cannot be decoded"):
        get_dataset(f"csv:{path}?size=8")
