"""Reading a run's torch and array files (`model.pt`, a trial's `checkpoint/state.pt`, its exit
caches) without running code.

A pickle can name any callable, so unpickling a file someone else wrote can run their code.
`load_torch` reads with `torch.load(weights_only=True)`, which builds only tensors, dicts, lists,
tuples, numbers and strings; what the trials save is kept to those (trainables/engine/loop.py). A file
that asks for anything else is refused with `UnsafeFile`, naming it: it was tampered with, or
written by something other than this platform's trials (or an older version of them).
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from typing import Any

__all__ = ["UnsafeFile", "load_arrays", "load_torch", "plain_values"]


class UnsafeFile(ValueError):
    """A torch file holding objects a safe loader will not build."""


def plain_values(obj: Any) -> Any:
    """`obj` with numpy scalars and arrays turned into Python numbers and lists, recursively
    through dicts, lists and tuples (tensors and other values are kept): what `torch.save`
    writes from it `load_torch` reads back."""
    import numpy as np

    if isinstance(obj, OrderedDict):  # a state dict: keep its type and its version metadata
        out = OrderedDict((k, plain_values(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata  # type: ignore[attr-defined]
        return out
    if isinstance(obj, dict):
        return {k: plain_values(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return (tuple if isinstance(obj, tuple) else list)(plain_values(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def load_arrays(path: str | os.PathLike) -> dict[str, Any]:
    """The arrays of an .npz file, read with `allow_pickle=False`: UnsafeFile (naming `path`) when
    it holds pickled Python objects, which numpy would have to unpickle (and so could run code)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise  # a damaged file, not a refused one
        raise UnsafeFile(
            f"{os.fspath(path)} was not opened: it holds pickled Python objects, which a safe loader (numpy "
            "allow_pickle=False) will not build, so opening it could run code. This platform writes only plain "
            "arrays: the file was changed by someone, or written by another program. Do not load it; re-run the "
            "trial (or restore the file from a trusted copy)") from exc


def load_torch(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`; UnsafeFile (naming `path`) when the file holds
    anything but tensors and plain values. Other failures (missing, truncated) propagate as is."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower() and "weights_only" not in str(exc).lower():
            raise  # a damaged pickle, not a refused one
        why = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "Unsupported" in line), "")
        raise UnsafeFile(
            f"{os.fspath(path)} was not opened: it holds objects a safe loader (torch.load weights_only=True) will "
            f"not build{f' ({why})' if why else ''}, so opening it could run code. This platform's trials write "
            "only tensors and plain values: the file was changed by someone, or written by another program or an "
            "older version. Do not load it; re-run the trial (or restore the file from a trusted copy)") from exc
