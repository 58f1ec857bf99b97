"""CIFAR-10 and CIFAR-100 from their official python-pickle layouts (and a CIFAR-10 .npz form).

Layouts looked for, under `root` or `root/<dataset name>/` (root None: `default_data_root()`):

* CIFAR-100: `cifar-100-python/{train,test,meta}`; pickles with bytes keys b'data' (N x 3072
  uint8: 1024 red, then green, then blue values, each a row-major 32x32 plane), b'fine_labels',
  b'coarse_labels', b'filenames'; `meta` has b'fine_label_names' and b'coarse_label_names'.
  We read the pickles ourselves because torchvision's CIFAR100 drops the coarse labels.
* CIFAR-10: `cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}` (b'data', b'labels';
  b'label_names'), or `cifar10-train.npz` (x: (50000, 32, 32, 3) uint8 HWC, y: labels), the
  official training batches only. With the .npz there is no official test set, so a fixed
  stratified 10% of it (the same whatever the seed) becomes `test`, and another 10% `calib`
  (40k / 5k / 5k); `source` says so.

Checksums: the official files are checked against the md5s torchvision publishes when
`verify=True` (the default), so a corrupt or partial download fails loudly instead of training on
garbage. Pass `verify=False` (get_dataset(..., verify=False)) for files that are not the official
ones, e.g. test fixtures. The .npz has no official checksum; it is checked for shape and labels.
Every file is also checked for structure (dtype, shape, label range, matching counts).

Damaged files and download=True (`--download`): when the files are found but fail their checksum
or structural checks, the official archive is downloaded again and replaces them once the new copy
is complete (trainables/data/fetch.py); without download=True the error says how to fix it. A
damaged cifar10-train.npz is not replaced: the official batches are fetched next to it and, as
always, win over the .npz.

Pickles are read with an unpickler that only accepts the numpy array machinery the official files
use, so a tampered file cannot run code (trainables/data/cifar_files.py).

Superclasses. CIFAR-100 has its official 20 superclasses (from the coarse labels; we check every
fine class maps to exactly one). If a `wordnet-hierarchy.txt` (Barz & Denzler, WACV 2019) sits in
the root or next to the pickles it becomes `Dataset.tree`, for hierarchical-distance metrics.
CIFAR-10 has no official hierarchy; we use three superclasses:

* vehicle    = airplane, automobile, ship, truck
* mammal     = cat, deer, dog, horse
* non_mammal = bird, frog

Animal vs vehicle is the obvious first cut; splitting the six animals into four-legged furry
mammals vs bird/frog gives a coarse task that is easier than the fine one (cat/dog and
deer/horse are the classic confusions and fall within one superclass) while keeping three
superclasses, so a coarse head still has something to learn. No deeper tree is claimed
(`tree` is None).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.data import (
    DEFAULT_CALIB_FRACTION,
    Dataset,
    DatasetCorrupt,
    DatasetUnavailable,
    Split,
    as_split,
    assemble,
    check_size,
    corrupt_hint,
    dataset_unavailable,
    default_data_root,
    register_dataset,
    stratified_split,
    unavailable_hint,
)
from trainables.data.cifar_files import (
    check_labels,
    class_names,
    corrupt,
    file_md5,
    read_cifar100_meta,
    read_cifar_batch,
    read_pickle,
    verify_md5,
)
from trainables.data.fetch import refetch
from trainables.hierarchy import Hierarchy

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_COARSE",
    "CIFAR10_FINE_TO_COARSE",
    "CIFAR100_MD5",
    "CIFAR10_MD5",
    "NPZ_TEST_FRACTION",
    "cifar10",
    "cifar100",
    "file_md5",
    "read_cifar100_meta",
    "read_cifar_batch",
    "read_pickle",
]

CIFAR100_DIR = "cifar-100-python"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_NPZ = "cifar10-train.npz"
WORDNET_TREE = "wordnet-hierarchy.txt"

#: Official md5 sums (as published with torchvision's CIFAR datasets).
CIFAR100_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_COARSE = ("vehicle", "mammal", "non_mammal")
CIFAR10_FINE_TO_COARSE = (0, 0, 2, 1, 1, 1, 2, 1, 0, 0)

#: Share of cifar10-train.npz carved out as the test split (its seed is fixed, see module doc).
NPZ_TEST_FRACTION = 0.1
_NPZ_TEST_SEED = 0

_CIFAR100_LAYOUT = f"ROOT/{CIFAR100_DIR}/{{train,test,meta}} (the extracted cifar-100-python.tar.gz)"
CIFAR10_FILES = (*CIFAR10_TRAIN_BATCHES, "test_batch", "batches.meta")
_CIFAR10_LAYOUT = (
    f"ROOT/{CIFAR10_DIR}/{{data_batch_1..5,test_batch,batches.meta}} "
    f"(the extracted cifar-10-python.tar.gz), or ROOT/{CIFAR10_NPZ} (x: N x 32 x 32 x 3 uint8, y: labels)"
)


# ---------------------------------------------------------------------------- locating and fetching


def _candidates(root: Path, dataset: str) -> list[Path]:
    """Folders that may hold a dataset's files: root itself and root/<dataset>."""
    return [root, root / dataset]


def _resolve_root(root: str | os.PathLike[str] | None) -> Path:
    return Path(root).expanduser() if root is not None else default_data_root()


def _locate(kind: str, base: Path, find, download: bool, names: list[str], layout: str) -> tuple[Any, bool]:
    """(find(base), whether it was just downloaded): downloads first when asked and nothing is there;
    a clear error if still absent."""
    found = find(base)
    fetched = False
    if found is None and download:
        _download(kind, base)
        found, fetched = find(base), True
    if found is None:
        searched = [p / n for n in names for p in _candidates(base, kind)]
        raise dataset_unavailable(kind, searched, layout)
    return found, fetched


def _refetch(kind: str, folder: Path, names: Sequence[str]) -> None:
    """Download `kind` again and replace the files `names` in `folder` with the new copy's."""
    sub = CIFAR100_DIR if kind == "cifar100" else CIFAR10_DIR
    refetch(kind, lambda tmp: _download(kind, tmp), folder, {f"{sub}/{n}": folder / n for n in names})


def _load_or_refetch(kind: str, folder: Path, names: Sequence[str], load: Callable[[], Any], may_refetch: bool) -> Any:
    """load(); when it finds the files damaged and may_refetch (download=True and nothing was just
    downloaded), replace them with a fresh download of the official archive and load again."""
    try:
        return load()
    except DatasetCorrupt:
        if not may_refetch:
            raise
    _refetch(kind, folder, names)
    try:
        return load()
    except DatasetCorrupt as e:
        raise DatasetCorrupt(f"{kind} was downloaded again, and the fresh copy is unusable too: {e}") from e


def _download(kind: str, root: Path) -> None:
    """Fetch and extract the official archive with torchvision (only ever on download=True)."""
    try:
        import torchvision.datasets as tvd  # lazy: slow to import and only needed here
    except ImportError as e:  # pragma: no cover - torchvision is a dependency
        raise DatasetUnavailable(f"--download needs torchvision ({e}). {unavailable_hint(kind)}") from e
    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[kind]
    root.mkdir(parents=True, exist_ok=True)
    try:
        cls(str(root), train=True, download=True)
    except Exception as e:  # network errors come in many types; all mean the same to the user
        raise DatasetUnavailable(
            f"downloading {kind} into {root} failed: {type(e).__name__}: {e}. {unavailable_hint(kind)}"
        ) from e


# ---------------------------------------------------------------------------- CIFAR-100


def _find_cifar100(root: Path) -> Path | None:
    for base in _candidates(root, "cifar100"):
        for d in (base / CIFAR100_DIR, base):
            if all((d / f).is_file() for f in ("train", "test", "meta")):
                return d
    return None


def _cifar100_tree(root: Path, folder: Path, hierarchy: Hierarchy) -> tuple[Hierarchy | None, str]:
    for d in dict.fromkeys([root, folder, folder.parent]):  # ordered, de-duplicated
        path = d / WORDNET_TREE
        if path.is_file():
            try:
                tree = Hierarchy.from_indented_file(
                    path, hierarchy.fine_names, coarse_of=hierarchy.coarse_of, coarse_names=hierarchy.coarse_names
                )
            except (ValueError, OSError) as e:
                # not part of the official archive, so --download cannot fix it
                raise DatasetCorrupt(
                    f"{path} does not fit the CIFAR-100 classes in {folder}: {e}. Fix or remove {path} "
                    "(it is optional: without it there is no deeper tree)."
                ) from e
            return tree, f"; tree from {path}"
    return None, ""


def _read_cifar100(folder: Path, verify: bool) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], Hierarchy]:
    """({part: (images, fine labels)}, hierarchy) from the official files in `folder`, all checked."""
    if verify:
        for f, md5 in CIFAR100_MD5.items():
            verify_md5(folder / f, md5)

    fine_names, coarse_names = read_cifar100_meta(folder / "meta")
    if len(fine_names) != 100 or len(coarse_names) != 20:
        raise corrupt(folder / "meta", f"{len(fine_names)} fine and {len(coarse_names)} coarse class names, "
                                        "CIFAR-100 has 100 and 20")
    parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for part in ("train", "test"):
        path = folder / part
        x, labels = read_cifar_batch(path, ("fine_labels", "coarse_labels"))
        check_labels(path, labels["fine_labels"], len(fine_names), "fine")
        check_labels(path, labels["coarse_labels"], len(coarse_names), "coarse")
        parts[part] = (x, labels["fine_labels"], labels["coarse_labels"])

    # The superclass map is read off the data; it must be a function fine -> coarse.
    fine_all = np.concatenate([parts[p][1] for p in parts])
    coarse_all = np.concatenate([parts[p][2] for p in parts])
    fine_to_coarse = np.full(len(fine_names), -1, dtype=np.int64)
    pairs = np.unique(np.stack([fine_all, coarse_all], axis=1), axis=0)
    for f, c in pairs.tolist():
        if fine_to_coarse[f] not in (-1, c):
            raise corrupt(
                folder / "test",
                f"fine class {fine_names[f]!r} appears with two superclasses "
                f"({coarse_names[fine_to_coarse[f]]!r} and {coarse_names[c]!r}) across {folder}/{{train,test}}",
            )
        fine_to_coarse[f] = c
    unseen = [fine_names[f] for f in np.flatnonzero(fine_to_coarse < 0)]
    if unseen:
        raise corrupt(folder / "train", f"fine classes with no samples in train or test, so no known superclass: {unseen}")
    try:
        hierarchy = Hierarchy.from_fine_to_coarse(fine_to_coarse, fine_names, coarse_names)
    except ValueError as e:
        raise corrupt(folder / "meta", f"inconsistent labels: {e}") from e
    return {p: (x, fine) for p, (x, fine, _) in parts.items()}, hierarchy


@register_dataset
def cifar100(
    root: str | os.PathLike[str] | None,
    *,
    seed: int = 0,
    download: bool = False,
    size: str = "full",
    verify: bool = True,
    calib_fraction: float = DEFAULT_CALIB_FRACTION,
) -> Dataset:
    """CIFAR-100: 45k train / 5k calib (stratified from `seed`) / 10k official test, 100 -> 20 classes."""
    check_size(size)
    base = _resolve_root(root)
    folder, fetched = _locate("cifar100", base, _find_cifar100, download, [CIFAR100_DIR], _CIFAR100_LAYOUT)
    parts, hierarchy = _load_or_refetch(
        "cifar100", folder, tuple(CIFAR100_MD5), lambda: _read_cifar100(folder, verify), download and not fetched
    )
    tree, tree_note = _cifar100_tree(base, folder, hierarchy)

    source = (
        f"CIFAR-100 official python pickles in {folder} (md5 {'verified' if verify else 'not checked'}); "
        f"calib = stratified {calib_fraction:.0%} of the official train set (seed {seed}); "
        f"test = official test set{tree_note}"
    )
    return assemble(
        "cifar100",
        train_pool=as_split(parts["train"][0], parts["train"][1]),
        test=as_split(parts["test"][0], parts["test"][1]),
        hierarchy=hierarchy, tree=tree, source=source, seed=seed, size=size, calib_fraction=calib_fraction,
    )


# ---------------------------------------------------------------------------- CIFAR-10


def _cifar10_hierarchy() -> Hierarchy:
    return Hierarchy.from_fine_to_coarse(CIFAR10_FINE_TO_COARSE, CIFAR10_CLASSES, CIFAR10_COARSE)


def _find_cifar10(root: Path) -> tuple[str, Path] | None:
    """("batches", folder) for the official layout (even if incomplete), ("npz", file), or None."""
    for base in _candidates(root, "cifar10"):
        for d in (base / CIFAR10_DIR, base):
            if any((d / f).is_file() for f in CIFAR10_FILES):
                return "batches", d
    for base in _candidates(root, "cifar10"):
        if (base / CIFAR10_NPZ).is_file():
            return "npz", base / CIFAR10_NPZ
    return None


def _load_cifar10_batches(folder: Path, verify: bool) -> tuple[Split, Split]:
    missing = [f for f in CIFAR10_FILES if not (folder / f).is_file()]
    if missing:
        # A half-extracted archive should not silently train on fewer batches.
        raise DatasetCorrupt(f"{folder}: incomplete CIFAR-10, missing {missing}. {corrupt_hint(folder)}")
    if verify:
        for f in CIFAR10_FILES:
            verify_md5(folder / f, CIFAR10_MD5[f])
    meta_path = folder / "batches.meta"
    names = class_names(read_pickle(meta_path), "label_names", meta_path)
    if tuple(names) != CIFAR10_CLASSES:
        # Our superclasses are defined on the official class order; anything else would mislabel.
        raise corrupt(meta_path, f"label_names {names} are not the official CIFAR-10 classes {list(CIFAR10_CLASSES)}")
    xs, ys = [], []
    for f in CIFAR10_TRAIN_BATCHES:
        x, labels = read_cifar_batch(folder / f, ("labels",))
        check_labels(folder / f, labels["labels"], 10, "class")
        xs.append(x)
        ys.append(labels["labels"])
    x_test, labels = read_cifar_batch(folder / "test_batch", ("labels",))
    check_labels(folder / "test_batch", labels["labels"], 10, "class")
    return as_split(np.concatenate(xs), np.concatenate(ys)), as_split(x_test, labels["labels"])


def _npz_hint(path: Path) -> str:
    return (f"Rerun with --download to fetch the official CIFAR-10 batches ({path.parent / CIFAR10_DIR}; they are "
            f"used instead of the .npz), replace {path} with a good copy, or point --data-root at another folder.")


def _load_cifar10_npz(path: Path) -> Split:
    def bad(problem: str) -> DatasetCorrupt:
        return DatasetCorrupt(f"{path}: {problem}. {_npz_hint(path)}")

    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            x, y = z["x"], z["y"]
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile, zlib.error) as e:
        # TypeError: np.load returns an ndarray (no context manager) for a plain .npy file
        raise bad(f"unreadable CIFAR-10 npz, truncated or not an .npz of arrays x and y ({type(e).__name__}: {e})") from e
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise bad(f"x should be uint8 (N, 32, 32, 3) HWC images, got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
        raise bad(f"y should be {len(x)} integer labels (one per image), got {y.dtype} {y.shape}")
    y = y.astype(np.int64)
    check_labels(path, y, 10, "class", _npz_hint(path))
    # HWC -> CHW, the layout of the official pickles and of every model here (torch's permuting
    # copy is about 3x faster than numpy's on 150 MB).
    return as_split(torch.from_numpy(x).permute(0, 3, 1, 2), y)


@register_dataset
def cifar10(
    root: str | os.PathLike[str] | None,
    *,
    seed: int = 0,
    download: bool = False,
    size: str = "full",
    verify: bool = True,
    calib_fraction: float = DEFAULT_CALIB_FRACTION,
) -> Dataset:
    """CIFAR-10, 10 -> 3 classes: 45k / 5k / 10k official, or 40k / 5k / 5k from cifar10-train.npz."""
    check_size(size)
    base = _resolve_root(root)
    (kind, path), fetched = _locate("cifar10", base, _find_cifar10, download, [CIFAR10_DIR, CIFAR10_NPZ], _CIFAR10_LAYOUT)
    may_refetch = download and not fetched
    if kind == "npz":
        try:
            everything = _load_cifar10_npz(path)
        except DatasetCorrupt:
            if not may_refetch:
                raise
            # the .npz is not ours to replace: fetch the official batches beside it; they win from now on
            _refetch("cifar10", path.parent / CIFAR10_DIR, CIFAR10_FILES)
            kind, path, may_refetch = "batches", path.parent / CIFAR10_DIR, False
    if kind == "batches":
        folder = path
        pool, test = _load_or_refetch(
            "cifar10", folder, CIFAR10_FILES, lambda: _load_cifar10_batches(folder, verify), may_refetch
        )
        pool_calib_fraction = calib_fraction
        source = (
            f"CIFAR-10 official python pickles in {path} (md5 {'verified' if verify else 'not checked'}); "
            f"calib = stratified {calib_fraction:.0%} of the official train set (seed {seed}); "
            "test = official test batch"
        )
    else:
        # The test carve-out uses a fixed seed: it stands in for the official test set, so it must
        # be the same images for every run, whatever seed the run uses for its train/calib split.
        keep, held = stratified_split(everything.fine.numpy(), NPZ_TEST_FRACTION, _NPZ_TEST_SEED)
        pool, test = everything.subset(keep), everything.subset(held)
        # calib_fraction is of the whole file, like on the official layout (40k / 5k / 5k).
        pool_calib_fraction = calib_fraction / (1.0 - NPZ_TEST_FRACTION)
        source = (
            f"CIFAR-10 official training images from {path} (no official test set there): "
            f"test = fixed stratified {NPZ_TEST_FRACTION:.0%} of it (seed {_NPZ_TEST_SEED}), "
            f"calib = stratified {calib_fraction:.0%} (seed {seed}), train = the rest"
        )
    return assemble(
        "cifar10", train_pool=pool, test=test, hierarchy=_cifar10_hierarchy(), tree=None,
        source=source, seed=seed, size=size, calib_fraction=pool_calib_fraction,
    )
