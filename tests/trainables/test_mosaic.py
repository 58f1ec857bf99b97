"""`python3 -m trainables.data.mosaic`: mosaics of labelled images written as a multi-label CSV + folder,
each labelled with exactly the classes of its tiles (from the synthetic set, and from real CIFAR-10
when ../shared/data is here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import decode_image

from trainables.data.csv_images import quiet_image_io, read_listing
from trainables.data.mosaic import parse_classes, source_pool

ROOT = Path(__file__).resolve().parents[2]
CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"


def tiles_match(out: Path, source: str, root: str | None, grid: int) -> None:
    """Every tile of every mosaic is a source image, and the labels are the set of the tiles' classes."""
    images, labels, names = source_pool(source, root, 0)
    by_bytes = {bytes(img.numpy()): int(c) for img, c in zip(images, labels)}
    listing = read_listing(out / "labels.csv")
    with quiet_image_io():
        for name, row, caption in zip(listing.ids, listing.labels, listing.captions):
            img = decode_image(str(out / name))
            side = img.shape[-1] // grid
            classes = set()
            for r in range(grid):
                for q in range(grid):
                    tile = img[:, r * side:(r + 1) * side, q * side:(q + 1) * side].contiguous()
                    classes.add(by_bytes[bytes(tile.numpy())])
            assert set(row) == classes and caption.startswith(names[min(classes)])


def test_mosaics_of_the_synthetic_set(tmp_path):
    out = tmp_path / "m"
    p = subprocess.run([sys.executable, "-m", "trainables.data.mosaic", "--source", "synthetic", "--classes", "3-5,9",
                        "--count", "30", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    listing = read_listing(out / "labels.csv")
    assert len(listing.ids) == 30 and listing.multi_label and set(listing.classes) <= {3, 4, 5, 9}
    tiles_match(out, "synthetic", None, 2)


def test_class_lists():
    assert parse_classes("5-9", 10) == [5, 6, 7, 8, 9] and parse_classes("0,3,7-8", 10) == [0, 3, 7, 8]
    for bad in ("5-", "x", "9-12", "4"):
        with pytest.raises(ValueError):
            parse_classes(bad, 10)


@pytest.mark.real_data
def test_mosaics_of_real_cifar10(tmp_path):
    if not (CIFAR10 / "cifar10-train.npz").is_file():
        pytest.skip(f"real CIFAR-10 not present at {CIFAR10}")
    out = tmp_path / "m"
    p = subprocess.run([sys.executable, "-m", "trainables.data.mosaic", "--data-root", str(CIFAR10), "--classes", "5-9",
                        "--count", "40", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    listing = read_listing(out / "labels.csv")
    assert set(listing.classes) <= {5, 6, 7, 8, 9} and np.mean([len(r) for r in listing.labels]) > 2
    tiles_match(out, "cifar10", str(CIFAR10), 2)
    single = tmp_path / "s"  # --grid 1: the images themselves, a single-label set
    p = subprocess.run([sys.executable, "-m", "trainables.data.mosaic", "--data-root", str(CIFAR10), "--classes", "0-4",
                        "--grid", "1", "--count", "30", "--out", str(single)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert not read_listing(single / "labels.csv").multi_label
    tiles_match(single, "cifar10", str(CIFAR10), 1)
    assert torch.is_tensor(decode_image(str(single / read_listing(single / "labels.csv").ids[0])))
