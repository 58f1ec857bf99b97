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

Pickles are read with an unpickler that only accepts the numpy array machinery the official files
use, so a tampered file cannot run code.

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

import codecs
import hashlib
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy._core.multiarray as _np_multiarray
import numpy._core.numeric as _np_numeric
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
    dataset_unavailable,
    default_data_root,
    register_dataset,
    stratified_split,
    unavailable_hint,
)
from trainables.data.hierarchy import Hierarchy

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
_CIFAR10_LAYOUT = (
    f"ROOT/{CIFAR10_DIR}/{{data_batch_1..5,test_batch,batches.meta}} "
    f"(the extracted cifar-10-python.tar.gz), or ROOT/{CIFAR10_NPZ} (x: N x 32 x 32 x 3 uint8, y: labels)"
)


# ---------------------------------------------------------------------------- file reading


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy arrays need; anything else is refused."""

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        # Protocol-2 pickles written by Python 3 encode bytes objects through codecs.encode.
        ("_codecs", "encode"): codecs.encode,
        ("numpy", "dtype"): np.dtype,
        # Old pickles (the official files are Python 2 era) name numpy.core; numpy 2 moved it to
        # numpy._core. Map both to the real objects so no deprecated module is imported.
        ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
        ("numpy.core.multiarray", "scalar"): _np_multiarray.scalar,
        ("numpy._core.multiarray", "scalar"): _np_multiarray.scalar,
        ("numpy.core.numeric", "_frombuffer"): _np_numeric._frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _np_numeric._frombuffer,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: not part of a CIFAR pickle"
            ) from None


def read_pickle(path: str | os.PathLike[str]) -> dict[bytes, Any]:
    """Load an official CIFAR pickle (a dict with bytes keys).

    Raises:
        DatasetCorrupt: the file is not a readable pickle of a dict (truncated, garbage, tampered).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            obj = _ArrayOnlyUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as e:
        raise DatasetCorrupt(
            f"{path} is not a readable CIFAR pickle ({type(e).__name__}: {e}); the file is probably truncated "
            f"or corrupt: delete it and fetch it again. {unavailable_hint('it')}"
        ) from e
    if not isinstance(obj, dict):
        raise DatasetCorrupt(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def file_md5(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _verify_md5(path: Path, expected: str) -> None:
    actual = file_md5(path)
    if actual != expected:
        raise DatasetCorrupt(
            f"{path} fails its checksum (md5 {actual}, official {expected}): a corrupt or partial download. "
            "Delete it and fetch it again (--download), or pass verify=False if this is deliberately not "
            "the official file."
        )


def _get(d: dict[bytes, Any], key: str, path: Path) -> Any:
    # Accept str keys as well: pickles re-saved under Python 3 sometimes have them.
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DatasetCorrupt(f"{path}: missing key {key!r} (has {sorted(str(k) for k in d)})")


def _names(values: Sequence[Any]) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def read_cifar_batch(
    path: str | os.PathLike[str], label_keys: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Images (N, 3, 32, 32) uint8 and the requested int64 label arrays of one CIFAR pickle."""
    path = Path(path)
    d = read_pickle(path)
    data = np.asarray(_get(d, "data", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetCorrupt(f"{path}: b'data' should be uint8 (N, 3072), got {data.dtype} {data.shape}")
    labels: dict[str, np.ndarray] = {}
    for key in label_keys:
        y = np.asarray(_get(d, key, path))
        if y.ndim != 1 or len(y) != len(data) or (y.size and y.dtype.kind not in "iu"):
            raise DatasetCorrupt(f"{path}: {key!r} should be {len(data)} integer labels, got {y.dtype} {y.shape}")
        labels[key] = y.astype(np.int64)
    # Each row is R plane, G plane, B plane, each row-major: a plain reshape gives CHW.
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), labels


def read_cifar100_meta(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """(fine_label_names, coarse_label_names) from CIFAR-100's `meta` pickle."""
    path = Path(path)
    d = read_pickle(path)
    return _names(_get(d, "fine_label_names", path)), _names(_get(d, "coarse_label_names", path))


def _check_labels(path: Path, y: np.ndarray, n: int, what: str) -> None:
    if y.size and (y.min() < 0 or y.max() >= n):
        raise DatasetCorrupt(f"{path}: {what} labels outside [0, {n}) (range {int(y.min())}..{int(y.max())})")


def _candidates(root: Path, dataset: str) -> list[Path]:
    """Folders that may hold a dataset's files: root itself and root/<dataset>."""
    return [root, root / dataset]


def _resolve_root(root: str | os.PathLike[str] | None) -> Path:
    return Path(root).expanduser() if root is not None else default_data_root()


def _locate(kind: str, base: Path, find, download: bool, names: list[str], layout: str):
    """find(base), downloading first when asked and nothing is there; a clear error if still absent."""
    found = find(base)
    if found is None and download:
        _download(kind, base)
        found = find(base)
    if found is None:
        searched = [p / n for n in names for p in _candidates(base, kind)]
        raise dataset_unavailable(kind, searched, layout)
    return found


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
            except ValueError as e:
                raise DatasetCorrupt(f"{WORDNET_TREE} does not fit the CIFAR-100 classes in {folder}: {e}") from e
            return tree, f"; tree from {path}"
    return None, ""


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
    folder = _locate("cifar100", base, _find_cifar100, download, [CIFAR100_DIR], _CIFAR100_LAYOUT)
    if verify:
        for f, md5 in CIFAR100_MD5.items():
            _verify_md5(folder / f, md5)

    fine_names, coarse_names = read_cifar100_meta(folder / "meta")
    parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for part in ("train", "test"):
        path = folder / part
        x, labels = read_cifar_batch(path, ("fine_labels", "coarse_labels"))
        _check_labels(path, labels["fine_labels"], len(fine_names), "fine")
        _check_labels(path, labels["coarse_labels"], len(coarse_names), "coarse")
        parts[part] = (x, labels["fine_labels"], labels["coarse_labels"])

    # The superclass map is read off the data; it must be a function fine -> coarse.
    fine_all = np.concatenate([parts[p][1] for p in parts])
    coarse_all = np.concatenate([parts[p][2] for p in parts])
    fine_to_coarse = np.full(len(fine_names), -1, dtype=np.int64)
    pairs = np.unique(np.stack([fine_all, coarse_all], axis=1), axis=0)
    for f, c in pairs.tolist():
        if fine_to_coarse[f] not in (-1, c):
            raise DatasetCorrupt(
                f"{folder}: fine class {fine_names[f]!r} appears with two superclasses "
                f"({coarse_names[fine_to_coarse[f]]!r} and {coarse_names[c]!r})"
            )
        fine_to_coarse[f] = c
    unseen = [fine_names[f] for f in np.flatnonzero(fine_to_coarse < 0)]
    if unseen:
        raise DatasetCorrupt(f"{folder}: fine classes with no samples, so no known superclass: {unseen}")
    try:
        hierarchy = Hierarchy.from_fine_to_coarse(fine_to_coarse, fine_names, coarse_names)
    except ValueError as e:
        raise DatasetCorrupt(f"{folder}: inconsistent labels: {e}") from e
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
    official = (*CIFAR10_TRAIN_BATCHES, "test_batch", "batches.meta")
    for base in _candidates(root, "cifar10"):
        for d in (base / CIFAR10_DIR, base):
            if any((d / f).is_file() for f in official):
                return "batches", d
    for base in _candidates(root, "cifar10"):
        if (base / CIFAR10_NPZ).is_file():
            return "npz", base / CIFAR10_NPZ
    return None


def _load_cifar10_batches(folder: Path, verify: bool) -> tuple[Split, Split]:
    official = (*CIFAR10_TRAIN_BATCHES, "test_batch", "batches.meta")
    missing = [f for f in official if not (folder / f).is_file()]
    if missing:
        # A half-extracted archive should not silently train on fewer batches.
        raise DatasetCorrupt(f"{folder}: incomplete CIFAR-10, missing {missing}. {unavailable_hint('cifar10')}")
    if verify:
        for f in official:
            _verify_md5(folder / f, CIFAR10_MD5[f])
    meta_path = folder / "batches.meta"
    names = _names(_get(read_pickle(meta_path), "label_names", meta_path))
    if tuple(names) != CIFAR10_CLASSES:
        # Our superclasses are defined on the official class order; anything else would mislabel.
        raise DatasetCorrupt(
            f"{meta_path}: label_names {names} are not the official CIFAR-10 classes {list(CIFAR10_CLASSES)}"
        )
    xs, ys = [], []
    for f in CIFAR10_TRAIN_BATCHES:
        x, labels = read_cifar_batch(folder / f, ("labels",))
        _check_labels(folder / f, labels["labels"], 10, "class")
        xs.append(x)
        ys.append(labels["labels"])
    x_test, labels = read_cifar_batch(folder / "test_batch", ("labels",))
    _check_labels(folder / "test_batch", labels["labels"], 10, "class")
    return as_split(np.concatenate(xs), np.concatenate(ys)), as_split(x_test, labels["labels"])


def _load_cifar10_npz(path: Path) -> Split:
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise DatasetCorrupt(
            f"{path}: unreadable CIFAR-10 npz ({type(e).__name__}: {e}); expected arrays x and y"
        ) from e
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise DatasetCorrupt(f"{path}: x should be uint8 (N, 32, 32, 3) HWC, got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
        raise DatasetCorrupt(f"{path}: y should be {len(x)} integer labels, got {y.dtype} {y.shape}")
    y = y.astype(np.int64)
    _check_labels(path, y, 10, "class")
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
    found = _locate("cifar10", base, _find_cifar10, download, [CIFAR10_DIR, CIFAR10_NPZ], _CIFAR10_LAYOUT)

    kind, path = found
    if kind == "batches":
        pool, test = _load_cifar10_batches(path, verify)
        pool_calib_fraction = calib_fraction
        source = (
            f"CIFAR-10 official python pickles in {path} (md5 {'verified' if verify else 'not checked'}); "
            f"calib = stratified {calib_fraction:.0%} of the official train set (seed {seed}); "
            "test = official test batch"
        )
    else:
        everything = _load_cifar10_npz(path)
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
