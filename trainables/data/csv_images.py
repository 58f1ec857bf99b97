"""Images listed in a CSV file (the research's layout), decoded once per node at a chosen size.

`--data csv:PATH` (or `csv:PATH?size=N`) reads PATH, a CSV whose first line is the header
`ImageID,Labels,Caption`: per image its file name, its space-separated class ids, and an optional
caption, which may hold commas and quotes (quoted as CSV does, or not: what follows the second
comma is the caption). Image names are resolved against `--data-root`, by default the CSV's own
folder. Class ids are whole numbers that need not be contiguous (the research's 18 classes are
numbered 1-19 with one missing): the classes are the ids seen, in increasing order, named by their
id. A CSV where some image has two or more labels is a multi-label dataset (multi-hot targets);
one where every image has exactly one is single-label. There is no class hierarchy: every class
sits in one superclass, "all".

Everything is checked before anything is decoded, and a fault is a `CsvInvalid` (a
DatasetUnavailable: the CLI exits 2 having written nothing) naming the file, the line and the fix:
a missing or unreadable CSV, a wrong header, an empty image name, a label that is not a whole
number, an image without labels, a label given twice, an image listed twice, fewer than two
classes or ten images, image files missing under the root, an image that cannot be decoded.

Splits: a fixed 10% of the images (stratified, the same whatever the seed) is `test`, 10% of the
rest (stratified from the run's seed) `calib`, the remainder `train`; stratified on the class, or
for a multi-label set on every label (iterative stratification). `--data-size smoke|tiny` takes
the usual subsets of each split, and only their images are decoded.

Decoding: torchvision.io, as RGB, resized (bilinear, antialiased) to N x N pixels: `?size=N`, by
default the images' own side when they are all square and of one size, else 224 (images that are
not square are stretched to the square; augmentation crops later, on the device). The node cache
(trainables/data/node_cache.py) keeps the decoded uint8 arrays, keyed on the CSV and every image
file it lists, so a node decodes them once.

`write_listing` writes the same layout (the mosaic command, predictions of a front point).
"""

from __future__ import annotations

import contextlib
import csv as csvlib
import io
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainables.data import (
    DEFAULT_CALIB_FRACTION,
    SMOKE_SIZES,
    TINY_SIZES,
    Dataset,
    DatasetUnavailable,
    as_split,
    balanced_subset,
    channel_stats,
    check_size,
    register_dataset,
    stratified_split,
)
from trainables.hierarchy import Hierarchy

__all__ = ["DEFAULT_SIZE", "HEADER", "CsvInvalid", "Listing", "canonical", "csv", "decode_images", "parse_source",
           "quiet_image_io", "read_listing", "source_files", "write_listing"]

HEADER = ("ImageID", "Labels", "Caption")
DEFAULT_SIZE = 224  # decoded side of images that are not all square and of one size
MIN_IMAGES = 10
TEST_FRACTION = 0.1
_TEST_SEED = 0  # the test split is the same whatever the run's seed
_MAX_NAMED = 5  # missing files named in an error


class CsvInvalid(DatasetUnavailable):
    """The CSV, or an image it lists, cannot be used: the message names the file, line and fix."""


@dataclass(frozen=True)
class CsvSource:
    path: Path
    size: int | None  # decoded side in pixels; None: the images' own (see the module docstring)


def parse_source(arg: str) -> CsvSource:
    """`PATH` or `PATH?size=N` (the part of `csv:...` after the colon)."""
    path, sep, query = arg.rpartition("?")
    size = None
    if sep and query.startswith("size="):
        text = query[len("size="):]
        if not text.isdigit() or not 8 <= int(text) <= 2048:
            raise CsvInvalid(f"csv:{arg}: size must be a whole number of pixels from 8 to 2048, got {text!r}")
        size = int(text)
    else:
        path = arg
    if not path:
        raise CsvInvalid("csv: give the CSV's path, --data csv:PATH (optionally csv:PATH?size=N)")
    return CsvSource(Path(path).expanduser(), size)


def canonical(arg: str) -> str:
    """The argument with its path absolute (a worker's working directory is not the driver's)."""
    src = parse_source(arg)
    return str(src.path.resolve()) + (f"?size={src.size}" if src.size else "")


@dataclass(frozen=True)
class Listing:
    """A CSV's rows: image names, their class ids, captions, and the line each came from."""

    path: Path
    ids: list[str]
    labels: list[tuple[int, ...]]
    captions: list[str]
    lines: list[int]

    @property
    def classes(self) -> list[int]:
        return sorted({c for row in self.labels for c in row})

    @property
    def multi_label(self) -> bool:
        return any(len(row) > 1 for row in self.labels)

    def targets(self) -> np.ndarray:
        """int64 (N,) class indices (into `classes`), or uint8 (N, C) multi-hot for a multi-label CSV."""
        index = {c: i for i, c in enumerate(self.classes)}
        if not self.multi_label:
            return np.array([index[row[0]] for row in self.labels], dtype=np.int64)
        y = np.zeros((len(self.ids), len(index)), dtype=np.uint8)
        for i, row in enumerate(self.labels):
            y[i, [index[c] for c in row]] = 1
        return y


def _rows(text: str):
    """(line number, fields) of every non-blank record; fields past the second are the caption's."""
    reader = csvlib.reader(io.StringIO(text))
    for fields in reader:
        if not fields or all(not f.strip() for f in fields):
            continue
        caption = ",".join(fields[2:])  # an unquoted caption with commas comes in pieces
        yield reader.line_num, [*fields[:2], caption] if len(fields) > 2 else fields


def read_listing(path: str | os.PathLike[str], *, labelled: bool = True) -> Listing:
    """The rows of a CSV in the layout above, every one checked (CsvInvalid names the first fault).
    `labelled=False` reads a listing whose Labels may be empty (predictions of unlabelled images)."""
    path = Path(path)
    where = f"the CSV {path}"
    if not path.is_file():
        raise CsvInvalid(f"{where} does not exist: give the path of a CSV in the layout {','.join(HEADER)} "
                         "(python3 -m trainables.data.mosaic writes one), as --data csv:PATH")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CsvInvalid(f"{where} cannot be read ({exc}): it must be a UTF-8 text file in the layout {','.join(HEADER)}") from exc
    rows = _rows(text)
    first = next(rows, None)
    if first is None or [f.strip() for f in first[1][:3]] not in (list(HEADER), list(HEADER[:2])):
        got = ",".join(first[1]) if first else "an empty file"
        raise CsvInvalid(f"{where}, line {first[0] if first else 1}: the first line must be the header "
                         f"{','.join(HEADER)} (Caption may be left out), got {got!r}")
    ids: list[str] = []
    labels: list[tuple[int, ...]] = []
    captions: list[str] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    for line, fields in rows:
        at = f"{where}, line {line}"
        if len(fields) < 2:
            raise CsvInvalid(f"{at}: expected ImageID,Labels[,Caption], got {','.join(fields)!r}")
        name, text_labels = fields[0].strip(), fields[1].split()
        if not name:
            raise CsvInvalid(f"{at}: the ImageID (image file name) is empty")
        if name in seen:
            raise CsvInvalid(f"{at}: image {name!r} is listed twice (lines {seen[name]} and {line}): list each image "
                             "once, with all its labels")
        row: list[int] = []
        for t in text_labels:
            if not t.isdigit():
                raise CsvInvalid(f"{at}: label {t!r} of image {name!r} is not a whole number: Labels are space-separated "
                                 "class ids, e.g. '1 4 7'")
            if int(t) in row:
                raise CsvInvalid(f"{at}: label {int(t)} is given twice for image {name!r}")
            row.append(int(t))
        if labelled and not row:
            raise CsvInvalid(f"{at}: image {name!r} has no label: give each image its class ids, space-separated")
        seen[name] = line
        ids.append(name)
        labels.append(tuple(row))
        captions.append(fields[2] if len(fields) > 2 else "")
        lines.append(line)
    listing = Listing(path, ids, labels, captions, lines)
    if labelled:
        if len(ids) < MIN_IMAGES:
            raise CsvInvalid(f"{where} lists {len(ids)} image(s): a dataset needs at least {MIN_IMAGES} (train, "
                             "calibration and test splits are taken from it)")
        if len(listing.classes) < 2:
            raise CsvInvalid(f"{where} has one class ({listing.classes[0]}): a classifier needs two or more")
    return listing


def write_listing(path: str | os.PathLike[str], ids: Sequence[str], labels: Sequence[Sequence[int]],
                  captions: Sequence[str] | None = None) -> None:
    """Write a CSV in the layout above (captions quoted as CSV needs), atomically."""
    from trainables.atomic import atomic_write

    def _w(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csvlib.writer(fh)
            w.writerow(HEADER)
            for i, (name, row) in enumerate(zip(ids, labels)):
                w.writerow([name, " ".join(str(int(c)) for c in row), captions[i] if captions else ""])

    atomic_write(Path(path), _w)


def image_root(src: CsvSource, root: str | os.PathLike[str] | None) -> Path:
    return (Path(root).expanduser() if root is not None else src.path.parent).resolve()


def image_files(listing: Listing, root: Path) -> list[Path]:
    """Every listed image's path under `root`; CsvInvalid naming the missing ones."""
    paths = [root / name for name in listing.ids]
    missing = [listing.ids[i] for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        named = ", ".join(missing[:_MAX_NAMED]) + (f" and {len(missing) - _MAX_NAMED} more" if len(missing) > _MAX_NAMED else "")
        raise CsvInvalid(f"{len(missing)} of the {len(paths)} images listed in {listing.path} are not under {root}: {named}. "
                         "Point --data-root at their folder (default: the CSV's own folder), or fix the CSV")
    return paths


def common_side(paths: Sequence[Path]) -> int | None:
    """The side of the images when they are all square and of one size (headers only), else None."""
    from PIL import Image

    sides = set()
    for p in paths:
        try:
            with Image.open(p) as im:
                w, h = im.size
        except Exception:
            return None  # decode_images names the file that cannot be read
        if w != h:
            return None
        sides.add(w)
        if len(sides) > 1:
            return None
    return sides.pop() if sides else None


def decode_images(paths: Sequence[Path], size: int, listing: Listing | None = None,
                  rows: Sequence[int] | None = None) -> torch.Tensor:
    """uint8 (N, 3, size, size): every image decoded as RGB (torchvision.io) and resized, antialiased."""
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2.functional import resize

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)

    def one(i: int) -> None:
        try:
            img = decode_image(read_file(str(paths[i])), mode=ImageReadMode.RGB)
        except Exception as exc:
            line = f" (line {listing.lines[rows[i]]} of {listing.path})" if listing is not None and rows is not None else ""
            raise CsvInvalid(f"image {paths[i]}{line} cannot be decoded ({type(exc).__name__}: {exc}): replace it, or "
                             "remove its row from the CSV") from exc
        if img.shape[-2:] != (size, size):
            img = resize(img, [size, size], antialias=True)
        out[i] = img

    with quiet_image_io(), ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        list(pool.map(one, range(len(paths))))
    return out


@contextlib.contextmanager
def quiet_image_io():
    """torchvision 0.29 warns on every image decoded or encoded that torchvision.io's codecs will
    move to TorchCodec (not installed here): said once in this docstring, not once per image."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                                category=DeprecationWarning)
        yield


def source_files(arg: str, root: str | os.PathLike[str] | None) -> tuple[str, list[Path]]:
    """(the images' root, the CSV and every image file it lists): what the node cache keys an entry
    on. A CSV that cannot be read lists only itself (building the dataset then says what is wrong)."""
    src = parse_source(arg)
    base = image_root(src, root)
    try:
        listing = read_listing(src.path)
    except DatasetUnavailable:
        return str(base), [src.path.resolve()]
    return str(base), [src.path.resolve(), *(base / name for name in listing.ids)]


def _splits(y: np.ndarray, seed: int, size: str, calib_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train, calib and test (see the module docstring)."""
    pool, test = stratified_split(y, TEST_FRACTION, _TEST_SEED)
    keep, held = stratified_split(y[pool], calib_fraction, seed)
    train, calib = pool[keep], pool[held]
    if size in ("smoke", "tiny"):
        n_train, n_calib, n_test = SMOKE_SIZES if size == "smoke" else TINY_SIZES
        train = train[balanced_subset(y[train], n_train, seed)]
        calib = calib[balanced_subset(y[calib], n_calib, seed + 1)]
        test = test[balanced_subset(y[test], n_test, _TEST_SEED)]
    return train, calib, test


@register_dataset
def csv(root: str | os.PathLike[str] | None = None, *, seed: int = 0, download: bool = False, size: str = "full",
        source: str = "", calib_fraction: float = DEFAULT_CALIB_FRACTION, verify: bool = True) -> Dataset:
    """Images listed in the CSV `source` (`PATH` or `PATH?size=N`); see the module docstring.
    `download` and `verify` are accepted for a uniform builder signature and ignored."""
    check_size(size)
    src = parse_source(source)
    listing = read_listing(src.path)
    base = image_root(src, root)
    paths = image_files(listing, base)
    y = listing.targets()
    parts = _splits(y, seed, size, calib_fraction)
    used = np.concatenate(parts)
    side = src.size or common_side([paths[i] for i in used]) or DEFAULT_SIZE
    images = decode_images([paths[i] for i in used], side, listing, used.tolist())
    offsets = np.cumsum([0, *(len(p) for p in parts)])
    train, calib, test = (as_split(images[a:b], y[idx]) for a, b, idx in zip(offsets[:-1], offsets[1:], parts))
    names = [str(c) for c in listing.classes]
    hierarchy = Hierarchy.from_fine_to_coarse([0] * len(names), names, ["all"])
    mean, std = channel_stats(train.images)
    kind = "multi-label" if listing.multi_label else "single-label"
    subset = f"; {size} subset" if size != "full" else ""
    return Dataset(name=f"csv:{canonical(source)}", train=train, calib=calib, test=test, hierarchy=hierarchy, tree=None,
                   mean=mean, std=std,
                   source=f"{src.path.resolve()} ({len(listing.ids)} images under {base}, {len(names)} classes, {kind}; "
                          f"decoded at {side}x{side} px{subset})")


csv.usage = "csv:PATH[?size=N]"  # type: ignore[attr-defined]  # how --help names it (trainables.data.describe_datasets)
csv.canonical = canonical  # type: ignore[attr-defined]
