"""Fashion-MNIST from the official IDX files, with a clothing-type superclass per class.

Files (gzipped or not; a file is treated as gzip when it starts with the gzip magic bytes):
`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
`t10k-labels-idx1-ubyte`, optionally with `.gz`. Looked for in `root`, `root/fashion-mnist`,
`root/fashion_mnist` and `root/FashionMNIST/raw` (where torchvision's download puts them). With
root None: `/usr/share/datasets/fashion-mnist` (Debian package `dataset-fashion-mnist`), then the
same folders under `default_data_root()`.

IDX is parsed here (magic 2051 for images, 2049 for labels; big-endian sizes) and checked for
structure: magic, dimensions, exact length (a truncated file is an error, not fewer images), label
range and matching counts. There is no md5 check: the files may be recompressed by a packager
(e.g. Debian), which changes the .gz checksum but not the content, and the structural checks catch
truncation and corruption that matter. With download=True (`--download`), files that fail those
checks are downloaded again and replaced once the new copy is complete (trainables/data/fetch.py).

Images are returned as (N, 1, 28, 28) uint8; models handle the channel count. Splits: 54k train /
6k calib (stratified 10% of the official training set, from `seed`) / 10k official test.

Superclasses (by what the garment is, which is also what it looks like at low resolution):

* tops     = T-shirt/top, pullover, coat, shirt
* bottoms  = trouser
* dresses  = dress
* footwear = sandal, sneaker, ankle boot
* bags     = bag

Single-class superclasses are deliberate: trousers, dresses and bags have no sibling class, and
lumping them with tops would make the coarse task as hard as the fine one (shirt/coat/pullover/
T-shirt are the hard confusions; they all stay within "tops").
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from trainables.data import (
    DEFAULT_CALIB_FRACTION,
    Dataset,
    DatasetCorrupt,
    DatasetUnavailable,
    as_split,
    assemble,
    check_size,
    corrupt_hint,
    dataset_unavailable,
    default_data_root,
    register_dataset,
    unavailable_hint,
)
from trainables.data.fetch import refetch
from trainables.hierarchy import Hierarchy

__all__ = [
    "DEBIAN_DIR",
    "FASHION_CLASSES",
    "FASHION_COARSE",
    "FASHION_FINE_TO_COARSE",
    "IDX_FILES",
    "fashion_mnist",
    "read_idx",
]

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_COARSE = ("tops", "bottoms", "dresses", "footwear", "bags")
FASHION_FINE_TO_COARSE = (0, 1, 0, 2, 0, 3, 0, 3, 4, 3)

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
# IDX type codes -> numpy dtypes; multi-byte values are big-endian.
_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_LAYOUT = (
    "ROOT/{train-images-idx3-ubyte,train-labels-idx1-ubyte,t10k-images-idx3-ubyte,t10k-labels-idx1-ubyte}[.gz] "
    f"(the four official IDX files; default ROOT {DEBIAN_DIR}, from the Debian package dataset-fashion-mnist)"
)


def read_idx(path: str | os.PathLike[str], expected_magic: int | None = None) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into an array of its declared shape.

    Raises:
        DatasetCorrupt: bad gzip stream, wrong magic, unknown type code, or a length that does not
            match the header (truncated or with trailing bytes).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise DatasetUnavailable(
            f"cannot read {path} ({type(e).__name__}: {e}); check its permissions or point --data-root at a readable copy."
        ) from e
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise _corrupt(path, f"unreadable gzip stream ({type(e).__name__}: {e}), a truncated or damaged download") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise _corrupt(path, f"not an IDX file (starts with {raw[:4].hex() or 'nothing: the file is empty'})")
    code, ndim = raw[2], raw[3]
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise _corrupt(path, f"IDX magic {magic} (type code 0x{code:02x}, {ndim} dimensions), expected {expected_magic}")
    if code not in _IDX_DTYPES:
        raise _corrupt(path, f"unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _corrupt(path, f"truncated IDX header: {len(raw)} bytes, {ndim} dimensions need {header}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "has trailing bytes"
        raise _corrupt(path, f"IDX file {state}: {len(raw)} bytes, header {shape} implies {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def _corrupt(path: Path, problem: str) -> DatasetCorrupt:
    """DatasetCorrupt naming the file, the problem and what to do."""
    return DatasetCorrupt(f"{path}: {problem}. {corrupt_hint(path.parent)}")


def _dirs(root: str | os.PathLike[str] | None) -> list[Path]:
    bases = [Path(root).expanduser()] if root is not None else [default_data_root()]
    dirs = [DEBIAN_DIR] if root is None else []
    for b in bases:
        dirs += [b, b / "fashion-mnist", b / "fashion_mnist", b / "FashionMNIST" / "raw"]
    return dirs


def _find(dirs: list[Path]) -> dict[str, Path] | None:
    for d in dirs:
        files: dict[str, Path] = {}
        for key, name in IDX_FILES.items():
            for candidate in (d / f"{name}.gz", d / name):
                if candidate.is_file():
                    files[key] = candidate
                    break
        if len(files) == len(IDX_FILES):
            return files
    return None


def _download(root: Path) -> None:
    try:
        import torchvision.datasets as tvd  # lazy: slow to import and only needed here
        root.mkdir(parents=True, exist_ok=True)
        tvd.FashionMNIST(str(root), train=True, download=True)
    except Exception as e:  # network errors come in many types; all mean the same to the user
        raise DatasetUnavailable(f"downloading fashion_mnist into {root} failed: {type(e).__name__}: {e}. "
                                 f"{unavailable_hint('fashion_mnist')}") from e


def _load(files: dict[str, Path], part: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = files[f"{part}_images"], files[f"{part}_labels"]
    x = read_idx(images, IMAGES_MAGIC)
    y = read_idx(labels, LABELS_MAGIC)
    if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
        raise _corrupt(images, f"expected uint8 (N, 28, 28) images, got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or y.dtype != np.uint8:
        raise _corrupt(labels, f"expected {len(x)} uint8 labels (one per image in {images.name}), got {y.dtype} {y.shape}")
    if y.size and y.max() >= len(FASHION_CLASSES):
        raise _corrupt(labels, f"label {int(y.max())} outside [0, {len(FASHION_CLASSES)})")
    return x[:, None], y.astype(np.int64)


def _load_all(files: dict[str, Path]) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    return _load(files, "train"), _load(files, "test")


@register_dataset
def fashion_mnist(
    root: str | os.PathLike[str] | None,
    *,
    seed: int = 0,
    download: bool = False,
    size: str = "full",
    verify: bool = True,
    calib_fraction: float = DEFAULT_CALIB_FRACTION,
) -> Dataset:
    """Fashion-MNIST, 10 -> 5 classes, (N, 1, 28, 28) uint8: 54k / 6k / 10k official test.

    `verify` is accepted so callers can pass it to every dataset alike; the structural checks
    described in the module docstring always run (there is no md5 check to switch off).
    """
    check_size(size)
    dirs = _dirs(root)
    files = _find(dirs)
    fetched = False
    if files is None and download:
        _download(Path(root).expanduser() if root is not None else default_data_root())
        files, fetched = _find(dirs), True
    if files is None:
        raise dataset_unavailable("fashion_mnist", dirs, _LAYOUT)
    try:
        (x_train, y_train), (x_test, y_test) = _load_all(files)
    except DatasetCorrupt:
        if not download or fetched:
            raise
        # damaged files and --download: a fresh copy (torchvision keeps both the .gz and the raw
        # file in FashionMNIST/raw) replaces each damaged file in the form it was found
        refetch("fashion_mnist", _download, files["train_images"].parent,
                {f"FashionMNIST/raw/{p.name}": p for p in files.values()})
        try:
            (x_train, y_train), (x_test, y_test) = _load_all(files)
        except DatasetCorrupt as e:
            raise DatasetCorrupt(f"fashion_mnist was downloaded again, and the fresh copy is unusable too: {e}") from e
    hierarchy = Hierarchy.from_fine_to_coarse(FASHION_FINE_TO_COARSE, FASHION_CLASSES, FASHION_COARSE)
    folder = files["train_images"].parent
    source = (
        f"Fashion-MNIST official IDX files in {folder}; calib = stratified {calib_fraction:.0%} of the official "
        f"train set (seed {seed}); test = official t10k set"
    )
    return assemble(
        "fashion_mnist", train_pool=as_split(x_train, y_train), test=as_split(x_test, y_test),
        hierarchy=hierarchy, tree=None, source=source, seed=seed, size=size, calib_fraction=calib_fraction,
    )
