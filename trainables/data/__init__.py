"""Datasets for the trainables: a registry of builders that return in-memory uint8 image splits.

Every builder returns a `Dataset` with three splits:

* `train`  - fitted on;
* `calib`  - validation / calibration: hyperparameters and exit thresholds are chosen here;
* `test`   - reported only, never used to choose anything.

`calib` is a stratified, seed-determined slice of the official training set (default 10%), so the
official test set stays untouched. Images stay uint8 (N, C, H, W) on the CPU; normalisation with
the per-channel `mean` / `std` (computed on `train`) and augmentation belong to the training loop.

Targets are single-label (int64 class indices, with the two-level class hierarchy) or multi-label
(a uint8 multi-hot vector per image, `Split.multi_label`); the splits of a multi-label set are
stratified on labels (iterative stratification, trainables/stratify.py), not on one class.

Builders are registered with `@register_dataset` and looked up with `get_dataset(name, ...)`.
Importing this package registers the built-in datasets: cifar10, cifar100, fashion_mnist,
synthetic (generated in-process, needs no files; the offline fallback for every test and demo) and
csv, images listed in a CSV file (trainables/data/csv_images.py). A name may carry an argument
after a colon, `KIND:ARG` (`csv:PATH?size=64`), which reaches the builder of KIND as `source=ARG`;
`canonical_dataset` checks a name and returns the form every process can use (an absolute path).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from trainables.hierarchy import Hierarchy
from trainables.registry import Registry
from trainables.stratify import multilabel_split, multilabel_subset

__all__ = [
    "DEFAULT_CALIB_FRACTION",
    "DATA_ROOT_ENV",
    "SIZES",
    "SMOKE_SIZES",
    "TINY_SIZES",
    "Dataset",
    "DatasetBuilder",
    "DatasetCorrupt",
    "DatasetUnavailable",
    "Hierarchy",
    "Split",
    "UnknownDataset",
    "as_split",
    "assemble",
    "balanced_subset",
    "canonical_dataset",
    "channel_stats",
    "corrupt_hint",
    "dataset_unavailable",
    "default_data_root",
    "describe_datasets",
    "get_dataset",
    "list_datasets",
    "multi_hot_coarse",
    "register_dataset",
    "stratified_split",
    "unavailable_hint",
]

#: Fraction of the official training set held out as the calibration split.
DEFAULT_CALIB_FRACTION = 0.1
#: Allowed values of `size`.
SIZES = ("full", "smoke", "tiny")
#: Split sizes (train, calib, test) of the class-balanced subset that size="smoke" takes of a real
#: dataset: small enough that a smoke run trains in seconds, large enough for every class to appear.
SMOKE_SIZES = (5000, 1000, 1000)
#: size="tiny": for unit tests of whole trials (seconds on one CPU core).
TINY_SIZES = (1000, 500, 500)
#: Environment variable naming the data root used when `root` is None.
DATA_ROOT_ENV = "EXITSEARCH_DATA_ROOT"


def default_data_root() -> Path:
    """`$EXITSEARCH_DATA_ROOT` if set, else ./data (relative to the working directory)."""
    return Path(os.environ.get(DATA_ROOT_ENV, "data"))


# ---------------------------------------------------------------------------- errors


class DatasetUnavailable(RuntimeError):
    """The dataset's files are not where we looked (and downloading was not asked for)."""


class UnknownDataset(KeyError, ValueError):
    """get_dataset was asked for a name nobody registered (catchable as KeyError or ValueError)."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message, wrapping it in quotes.
        return str(self.args[0]) if self.args else ""


class DatasetCorrupt(DatasetUnavailable):
    """Files are present but unreadable, truncated or fail their checksum.

    A subclass of DatasetUnavailable so that callers which turn "no data" into a friendly message
    handle both the same way.
    """


def unavailable_hint(name: str) -> str:
    """The part of every data error that says what the user can do about it."""
    return (
        f"Point --data-root at the folder that holds it, pass --download to fetch {name} "
        "(needs network access), or run offline with `--data synthetic`, "
        "which is generated in-process and needs no files."
    )


def corrupt_hint(folder: str | os.PathLike[str]) -> str:
    """The part of every damaged-file error (DatasetCorrupt) that says what the user can do about it."""
    return (
        "Rerun with --download to fetch the dataset again (the damaged files are replaced only once the new "
        f"copy is complete), or delete {folder} and rerun with --download, or point --data-root at a good copy."
    )


def dataset_unavailable(name: str, searched: Sequence[str | os.PathLike[str]], layout: str) -> DatasetUnavailable:
    """A DatasetUnavailable whose message names where we looked, the expected layout and the fixes."""
    where = ", ".join(str(p) for p in searched) or "(nowhere)"
    return DatasetUnavailable(
        f"dataset {name!r} not found. Looked in: {where}. Expected layout: {layout}. {unavailable_hint(name)}"
    )


# ---------------------------------------------------------------------------- splits


# eq=False: field-wise == on tensors is ambiguous; identity equality and hashing are what callers need.
@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset, held in memory.

    Attributes:
        images: uint8 (N, C, H, W), contiguous, on the CPU.
        fine: the targets: int64 (N,) fine-class labels, or for a multi-label dataset uint8 (N, C)
            multi-hot vectors (1 where the image holds the class).
    """

    images: torch.Tensor
    fine: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or not isinstance(self.fine, torch.Tensor):
            raise TypeError("Split.images and Split.fine must be torch tensors")
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        single = self.fine.dtype == torch.int64 and self.fine.ndim == 1
        multi = self.fine.dtype == torch.uint8 and self.fine.ndim == 2
        if not (single or multi):
            raise ValueError(f"labels must be int64 (N,) classes or uint8 (N, C) multi-hot, got {self.fine.dtype} "
                             f"{tuple(self.fine.shape)}")
        if len(self.images) != len(self.fine):
            raise ValueError(f"{len(self.images)} images but {len(self.fine)} labels")
        if self.images.device.type != "cpu" or self.fine.device.type != "cpu":
            raise ValueError("splits live on the CPU; move batches to the accelerator in the training loop")
        if not self.images.is_contiguous() or not self.fine.is_contiguous():
            raise ValueError("split tensors must be contiguous")

    def __len__(self) -> int:
        return int(self.fine.shape[0])

    @property
    def multi_label(self) -> bool:
        """The targets are multi-hot vectors (several classes per image), not one class each."""
        return self.fine.ndim == 2

    def coarse(self, hierarchy: Hierarchy) -> torch.Tensor:
        """int64 (N,) superclass labels via `hierarchy.coarse_of`; multi-label: uint8 (N, n_coarse),
        1 where the image holds a class of that superclass."""
        coarse_of = torch.as_tensor(np.array(hierarchy.coarse_of, dtype=np.int64))
        if self.multi_label:
            return multi_hot_coarse(self.fine, coarse_of, hierarchy.n_coarse)
        return coarse_of[self.fine]

    def subset(self, indices: np.ndarray | torch.Tensor | Sequence[int]) -> Split:
        """The samples at `indices`, in that order (copies, so the result is contiguous)."""
        raw = indices.numpy() if isinstance(indices, torch.Tensor) else indices
        idx = np.asarray(raw, dtype=np.int64).reshape(-1)
        # Row gathers on a flat (N, C*H*W) numpy view are several times faster than torch's
        # advanced indexing over a 4-D uint8 tensor, which matters for 50k-image splits.
        rows = self.images.numpy().reshape(len(self), -1)[idx]
        images = torch.from_numpy(rows.reshape((len(idx), *self.images.shape[1:])))
        return Split(images, torch.from_numpy(self.fine.numpy()[idx]))

    def class_counts(self, n_classes: int) -> np.ndarray:
        """int64 (n_classes,) number of samples per fine class (multi-label: holding it)."""
        if self.multi_label:
            return self.fine.numpy().sum(0, dtype=np.int64)
        return np.bincount(self.fine.numpy(), minlength=n_classes)


def multi_hot_coarse(fine: torch.Tensor, coarse_of: torch.Tensor, n_coarse: int) -> torch.Tensor:
    """uint8 (N, n_coarse) multi-hot superclasses of uint8 (N, C) multi-hot classes (on their device)."""
    member = torch.zeros(fine.shape[1], n_coarse, device=fine.device)
    member[torch.arange(fine.shape[1], device=fine.device), coarse_of.to(fine.device)] = 1.0
    return (fine.float() @ member).clamp_(max=1.0).to(torch.uint8)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset ready for training: three in-memory splits plus the class structure.

    Attributes:
        name: registry name ("cifar100", ...).
        train, calib, test: see the module docstring; nothing is ever chosen on `test`.
        hierarchy: fine -> coarse, the two levels the heads predict.
        tree: a deeper tree for hierarchical-distance metrics when one is known, else None
            (then `hierarchy` itself is the best tree available).
        mean, std: per-channel statistics of `train` in [0, 1] units (population std over pixels).
        source: where the data came from, for humans and run records.
    """

    name: str
    train: Split
    calib: Split
    test: Split
    hierarchy: Hierarchy
    tree: Hierarchy | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    def __post_init__(self) -> None:
        shapes = {tuple(s.images.shape[1:]) for s in (self.train, self.calib, self.test)}
        if len(shapes) != 1:
            raise ValueError(f"splits disagree on the image shape: {sorted(shapes)}")
        if len({s.multi_label for s in (self.train, self.calib, self.test)}) != 1:
            raise ValueError("splits disagree on single- vs multi-label targets")
        for split_name, split in (("train", self.train), ("calib", self.calib), ("test", self.test)):
            if split.multi_label:
                if split.fine.shape[1] != self.hierarchy.n_fine or (len(split) and int(split.fine.max()) > 1):
                    raise ValueError(f"{split_name} targets must be 0/1 multi-hot vectors of {self.hierarchy.n_fine} "
                                     f"classes, got shape {tuple(split.fine.shape)}")
            elif len(split) and (int(split.fine.min()) < 0 or int(split.fine.max()) >= self.hierarchy.n_fine):
                raise ValueError(f"{split_name} labels outside [0, {self.hierarchy.n_fine})")
        if self.tree is not None and self.tree.fine_names != self.hierarchy.fine_names:
            raise ValueError("tree and hierarchy must have the same fine classes in the same order")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError("mean and std need one entry per channel")

    @property
    def n_fine(self) -> int:
        return self.hierarchy.n_fine

    @property
    def multi_label(self) -> bool:
        """Multi-hot targets (several classes per image): see Split.multi_label."""
        return self.train.multi_label

    @property
    def n_coarse(self) -> int:
        return self.hierarchy.n_coarse

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        """Height of the (square) images in pixels."""
        return int(self.train.images.shape[2])

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for run records and logs."""
        return {
            "name": self.name,
            "source": self.source,
            "sizes": {"train": len(self.train), "calib": len(self.calib), "test": len(self.test)},
            "image_shape": [int(x) for x in self.train.images.shape[1:]],
            "channels": self.channels,
            "image_size": self.image_size,
            "n_fine": self.n_fine,
            "n_coarse": self.n_coarse,
            "multi_label": self.multi_label,
            "fine_names": list(self.hierarchy.fine_names),
            "coarse_names": list(self.hierarchy.coarse_names),
            "coarse_of": [int(k) for k in self.hierarchy.coarse_of],
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
            "tree": None
            if self.tree is None
            else {"n_nodes": self.tree.n_nodes, "max_depth": self.tree.max_depth,
                  "min_leaf_depth": int(self.tree.leaf_depths.min())},
        }


# ---------------------------------------------------------------------------- helpers for builders


def stratified_split(labels: np.ndarray | torch.Tensor, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into (kept, held_out), holding out `fraction` of every class.

    Per class, round(fraction * n_c) samples are held out, but at least one (and at most n_c - 1)
    when the class has two or more samples, so tiny data sets still get every class in both parts.
    Multi-hot (N, C) labels are stratified on every label by iterative stratification
    (trainables/stratify.py). Deterministic given (labels, fraction, seed); both index arrays are
    sorted ascending.
    """
    if np.ndim(labels) == 2:
        return multilabel_split(np.asarray(labels), fraction, seed)
    y = np.asarray(labels).reshape(-1)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n_c = len(idx)
        k = int(np.floor(fraction * n_c + 0.5))
        if fraction > 0 and n_c >= 2:
            k = min(max(k, 1), n_c - 1)
        held.append(rng.permutation(idx)[:k])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask).astype(np.int64), held_idx.astype(np.int64)


def balanced_subset(labels: np.ndarray | torch.Tensor, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a class-balanced subset of about `n` samples (n // n_classes per class).

    Classes with fewer samples than their quota contribute all of theirs. Multi-hot (N, C) labels:
    a label-stratified subset of about `n` (iterative stratification), which keeps each label's
    share rather than balancing the labels (an image holds several).
    """
    if np.ndim(labels) == 2:
        return multilabel_subset(np.asarray(labels), n, seed)
    y = np.asarray(labels).reshape(-1)
    classes = np.unique(y)
    if len(classes) == 0:
        return np.zeros(0, dtype=np.int64)
    quota = max(1, n // len(classes))
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(y == c))[:quota] for c in classes]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and population std of uint8 (N, C, H, W) images, in [0, 1] units.

    Uses a 256-bin histogram per channel: exact, and no float copy of the whole split.
    """
    if images.numel() == 0:
        c = int(images.shape[1])
        return (0.0,) * c, (1.0,) * c
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means: list[float] = []
    stds: list[float] = []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = hist.sum()
        mean = float((hist * values).sum() / total)
        var = float((hist * (values - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(max(var, 0.0) ** 0.5)
    return tuple(means), tuple(stds)


def check_size(size: str) -> str:
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return size


def as_split(images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> Split:
    """Split from arrays, converting to contiguous uint8 / int64 CPU tensors."""
    def tensor(a: np.ndarray | torch.Tensor, dtype: np.dtype | None = None) -> torch.Tensor:
        if isinstance(a, torch.Tensor):
            return a
        arr = np.asarray(a, dtype=dtype)
        # torch.from_numpy warns on read-only arrays (e.g. unpickled from a bytes buffer); copy those.
        return torch.from_numpy(arr if arr.flags.writeable else arr.copy())

    multi = np.ndim(labels) == 2  # multi-hot targets stay uint8
    imgs, y = tensor(images), tensor(labels, np.dtype(np.uint8 if multi else np.int64))
    return Split(imgs.to(torch.uint8).contiguous(), y.to(torch.uint8 if multi else torch.int64).contiguous())


def assemble(
    name: str,
    *,
    train_pool: Split,
    test: Split,
    hierarchy: Hierarchy,
    tree: Hierarchy | None,
    source: str,
    seed: int,
    size: str,
    calib_fraction: float = DEFAULT_CALIB_FRACTION,
    test_subset_seed: int = 0,
) -> Dataset:
    """The common tail of every real-data builder.

    Splits `train_pool` into train/calib (stratified, from `seed`), takes the class-balanced
    SMOKE_SIZES / TINY_SIZES subset of each split when size is "smoke" / "tiny", and computes
    normalisation statistics on the final train split. The subset of `test` uses the fixed
    `test_subset_seed`, so every run (whatever its seed) is reported on the same test images.
    """
    check_size(size)
    keep, held = stratified_split(train_pool.fine.numpy(), calib_fraction, seed)
    train, calib = train_pool.subset(keep), train_pool.subset(held)
    if size in ("smoke", "tiny"):
        n_train, n_calib, n_test = SMOKE_SIZES if size == "smoke" else TINY_SIZES
        # Different streams for train and calib subsets; they are disjoint anyway (disjoint parents).
        train = train.subset(balanced_subset(train.fine.numpy(), n_train, seed))
        calib = calib.subset(balanced_subset(calib.fine.numpy(), n_calib, seed + 1))
        test = test.subset(balanced_subset(test.fine.numpy(), n_test, test_subset_seed))
        source = f"{source}; {size} subset (class-balanced, up to {n_train}/{n_calib}/{n_test})"
    mean, std = channel_stats(train.images)
    return Dataset(
        name=name, train=train, calib=calib, test=test, hierarchy=hierarchy, tree=tree,
        mean=mean, std=std, source=source,
    )


# ---------------------------------------------------------------------------- registry


class DatasetBuilder(Protocol):
    __name__: str

    def __call__(
        self, root: str | Path | None, *, seed: int, download: bool, size: str, **kwargs: Any
    ) -> Dataset: ...


_REGISTRY: Registry[Callable[..., Dataset]] = Registry("dataset", unknown_error=UnknownDataset)
#: Decorator: register a builder under its function's name; a name can be registered only once.
register_dataset = _REGISTRY.register
#: Registered dataset names, sorted.
list_datasets = _REGISTRY.names


def _kind(name: str) -> tuple[str, str | None]:
    """("csv", "PATH?size=64") of "csv:PATH?size=64"; (name, None) of a plain name."""
    kind, sep, arg = name.partition(":")
    return (kind, arg) if sep else (name, None)


def canonical_dataset(name: str) -> str:
    """`name` checked and in the form every process of a run can use (a builder that takes an
    argument may make it canonical, e.g. a path absolute: a builder attribute `canonical`).
    UnknownDataset for an unknown name, or a missing or unwanted argument."""
    kind, arg = _kind(name)
    builder = _REGISTRY[kind]
    usage = getattr(builder, "usage", None)
    if (arg is None) != (usage is None):
        raise UnknownDataset(f"dataset {kind!r} is named {usage}" if usage else f"dataset {kind!r} takes no argument after ':'")
    if arg is None:
        return kind
    canonical = getattr(builder, "canonical", None)
    return f"{kind}:{canonical(arg) if canonical else arg}"


def describe_datasets() -> str:
    """The dataset names as --help shows them (with their argument, e.g. csv:PATH[?size=N])."""
    return ", ".join(getattr(_REGISTRY[n], "usage", None) or n for n in list_datasets())


def get_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    seed: int = 0,
    download: bool = False,
    size: str = "full",
    **kwargs: Any,
) -> Dataset:
    """Build the dataset registered as `name`.

    Args:
        root: where its files live (None: the builder's default, see each module).
        seed: decides the train/calib split (and, for synthetic, the data itself).
        download: allow fetching from the internet, never done otherwise: missing files, and a fresh
            copy of files that are damaged (fail their checksum or structural checks), which
            replaces them only once it is complete (trainables/data/fetch.py).
        size: "full", "smoke" (a small class-balanced subset for quick runs) or "tiny" (smaller
            still, for unit tests of whole trials).
        **kwargs: builder-specific options, e.g. verify=False to skip md5 checks on CIFAR files,
            calib_fraction=0.2.

    Raises:
        UnknownDataset (a KeyError and a ValueError): unknown name; the message lists the known ones.
        DatasetUnavailable: files missing (or DatasetCorrupt: unreadable / bad checksum).
    """
    kind, arg = _kind(name)
    builder = _REGISTRY[kind]
    check_size(size)
    if arg is not None:
        kwargs["source"] = arg
    return builder(root, seed=seed, download=download, size=size, **kwargs)


# Registration happens on import of the builder modules; they import the names above, so they
# must come last.
from trainables.data import cifar, csv_images, fashion_mnist, synthetic  # noqa: E402,F401
