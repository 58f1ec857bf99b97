"""Reading the official CIFAR python pickles: a safe unpickler, md5 checks, and structural checks.

Every problem is a DatasetCorrupt (or DatasetUnavailable for an unreadable file) that names the
file, says what is wrong with it and what to do (`corrupt_hint`); nothing here lets a raw pickle,
numpy or OS error through. Pickles are read with an unpickler that only accepts the numpy array
machinery the official files use, so a tampered file cannot run code.
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

from trainables.data import DatasetCorrupt, DatasetUnavailable, corrupt_hint

__all__ = ["check_labels", "class_names", "corrupt", "file_md5", "read_cifar100_meta", "read_cifar_batch", "read_pickle", "verify_md5"]


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
        fh = open(path, "rb")
    except OSError as e:
        raise DatasetUnavailable(
            f"cannot read {path} ({type(e).__name__}: {e}); check its permissions or point --data-root at a readable copy."
        ) from e
    try:
        with fh:
            obj = _ArrayOnlyUnpickler(fh, encoding="bytes").load()
    except Exception as e:  # a damaged pickle fails in many ways (EOFError, UnpicklingError, ...): all mean the same
        raise DatasetCorrupt(
            f"{path} is not a readable CIFAR pickle ({type(e).__name__}: {e}): the file is truncated or corrupt. "
            f"{corrupt_hint(path.parent)}"
        ) from e
    if not isinstance(obj, dict):
        raise corrupt(path, f"expected a pickled dict, got {type(obj).__name__}")
    return obj


def corrupt(path: Path, problem: str) -> DatasetCorrupt:
    """DatasetCorrupt naming the file, the problem and what to do."""
    return DatasetCorrupt(f"{path}: {problem}: not an official file, or a damaged one. {corrupt_hint(path.parent)}")


def file_md5(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_md5(path: Path, expected: str) -> None:
    try:
        actual = file_md5(path)
    except OSError as e:
        raise DatasetUnavailable(
            f"cannot read {path} ({type(e).__name__}: {e}); check its permissions or point --data-root at a readable copy."
        ) from e
    if actual != expected:
        raise DatasetCorrupt(
            f"{path} fails its checksum (md5 {actual}, official {expected}): a corrupt or partial download. "
            f"{corrupt_hint(path.parent)} (From Python, get_dataset(..., verify=False) skips this check for "
            "files that are deliberately not the official ones.)"
        )


def _get(d: dict[bytes, Any], key: str, path: Path) -> Any:
    # Accept str keys as well: pickles re-saved under Python 3 sometimes have them.
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise corrupt(path, f"missing key {key!r} (has {sorted(str(k) for k in d)})")


def class_names(d: dict[bytes, Any], key: str, path: Path) -> list[str]:
    """The class names under `key`: a list of bytes or str."""
    values = _get(d, key, path)
    if not isinstance(values, (list, tuple, np.ndarray)) or not all(isinstance(v, (bytes, str)) for v in values):
        raise corrupt(path, f"{key!r} should be a list of class names, got {type(values).__name__}")
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
    except UnicodeDecodeError as e:
        raise corrupt(path, f"{key!r} holds a name that is not UTF-8 ({e})") from e


def _array(d: dict[bytes, Any], key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(_get(d, key, path))
    except (ValueError, TypeError) as e:  # ragged lists and other non-arrays
        raise corrupt(path, f"{key!r} is not an array ({type(e).__name__}: {e})") from e


def read_cifar_batch(
    path: str | os.PathLike[str], label_keys: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Images (N, 3, 32, 32) uint8 and the requested int64 label arrays of one CIFAR pickle."""
    path = Path(path)
    d = read_pickle(path)
    data = _array(d, "data", path)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise corrupt(path, f"b'data' should be uint8 (N, 3072) images, got {data.dtype} {data.shape}")
    labels: dict[str, np.ndarray] = {}
    for key in label_keys:
        y = _array(d, key, path)
        if y.ndim != 1 or len(y) != len(data) or (y.size and y.dtype.kind not in "iu"):
            raise corrupt(path, f"{key!r} should be {len(data)} integer labels (one per image), got {y.dtype} {y.shape}")
        labels[key] = y.astype(np.int64)
    # Each row is R plane, G plane, B plane, each row-major: a plain reshape gives CHW.
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), labels


def read_cifar100_meta(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """(fine_label_names, coarse_label_names) from CIFAR-100's `meta` pickle."""
    path = Path(path)
    d = read_pickle(path)
    return class_names(d, "fine_label_names", path), class_names(d, "coarse_label_names", path)


def check_labels(path: Path, y: np.ndarray, n: int, what: str, hint: str | None = None) -> None:
    if y.size and (y.min() < 0 or y.max() >= n):
        problem = f"{what} labels outside [0, {n}) (range {int(y.min())}..{int(y.max())})"
        raise corrupt(path, problem) if hint is None else DatasetCorrupt(f"{path}: {problem}. {hint}")
