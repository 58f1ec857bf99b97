"""A decoded dataset written once per node as .npy files and memory-mapped by every trial there.

The first process on a node that asks for a dataset decodes it (`get_dataset`: CIFAR pickles,
IDX files, synthetic generation) and writes its six arrays plus a JSON of the rest into
`<cache dir>/<key>/`; every later process, in any worker, maps those files (`np.load(mmap_mode="c")`)
and so shares the kernel's page cache instead of reading and decoding the dataset again.

* Directory: `$EXITSEARCH_NODE_CACHE`, else `<tempdir>/exitsearch-node-cache-<uid>` (node-local).
  `EXITSEARCH_NODE_CACHE=off` turns the cache off (decode in every process, as before).
* Key: name, resolved root, size, seed, a fingerprint of every file the builder may read (path,
  size, mtime, inode; absent files count too), a hash of the trainables/data sources and
  FORMAT_VERSION, so a changed dataset or loader is never served stale.
* Writing: into a temp dir next to the entry, then one rename; a per-dataset file lock (fcntl) lets
  one process decode while the others wait. A writer that loses a race discards its copy.
* A damaged entry (missing file, wrong shape or size, unreadable JSON) is dropped and rebuilt;
  an unwritable cache directory falls back to the decoded dataset, with a warning.
* Mapping mode "c" (copy-on-write): pages are shared read-only; a stray in-place write would stay
  private to its process instead of corrupting the file or crashing on a read-only mapping.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.data import Dataset, Hierarchy, Split, default_data_root

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: atomic rename alone keeps entries whole
    fcntl = None

__all__ = ["CACHE_ENV", "FORMAT_VERSION", "cache_dir", "entry_key", "from_arrays", "load", "read_entry",
           "source_files", "to_arrays", "write_entry"]

CACHE_ENV = "EXITSEARCH_NODE_CACHE"
FORMAT_VERSION = 1
_OFF = {"off", "0", "false", "no", "none"}
_SPLITS = ("train", "calib", "test")


# ---------------------------------------------------------------------------- pure helpers


def cache_dir() -> Path | None:
    """Where entries live on this node, or None when the cache is turned off."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in _OFF:
        return None
    return Path(value).expanduser() if value else Path(tempfile.gettempdir()) / f"exitsearch-node-cache-{os.getuid()}"


def source_files(name: str, root: str | os.PathLike[str] | None) -> tuple[str | None, list[Path]] | None:
    """(resolved root, every file the builder `name` may read); None for a dataset this cache does not know."""
    if name == "synthetic":
        return None, []  # generated from (seed, size) alone
    if name.startswith("csv:"):  # the CSV and every image file it lists
        from trainables.data.csv_images import source_files as csv_files
        return csv_files(name[len("csv:"):], root)
    base = (Path(root).expanduser() if root is not None else default_data_root()).resolve()
    if name == "cifar10":
        from trainables.data.cifar import CIFAR10_DIR, CIFAR10_FILES, CIFAR10_NPZ
        dirs = [base, base / "cifar10"]
        files = [d / f for b in dirs for d in (b / CIFAR10_DIR, b) for f in CIFAR10_FILES]
        return str(base), files + [d / CIFAR10_NPZ for d in dirs]
    if name == "cifar100":
        from trainables.data.cifar import CIFAR100_DIR, WORDNET_TREE
        dirs = [d for b in (base, base / "cifar100") for d in (b / CIFAR100_DIR, b)]
        return str(base), [d / f for d in dirs for f in ("train", "test", "meta")] + [
            d / WORDNET_TREE for d in (base.parent, *dirs)]
    if name == "fashion_mnist":
        from trainables.data.fashion_mnist import IDX_FILES, _dirs
        return str(base), [d / f"{n}{gz}" for d in _dirs(root) for n in IDX_FILES.values() for gz in (".gz", "")]
    return None


def fingerprint(paths: list[Path]) -> list[list[Any]]:
    """[path, size, mtime_ns, inode] of every file, [path] for an absent one."""
    out: list[list[Any]] = []
    for p in paths:
        try:
            st = p.stat()
            out.append([str(p), st.st_size, st.st_mtime_ns, st.st_ino])
        except OSError:
            out.append([str(p)])
    return out


@lru_cache(maxsize=1)
def _code_hash() -> str:
    """Hash of the loaders' sources: a change to how a dataset is decoded or split invalidates entries."""
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def entry_key(name: str, root: str | None, size: str, seed: int, fp: list[list[Any]] | None) -> str:
    """Directory name of an entry; fp None gives the name of its lock (shared by every fingerprint)."""
    material = json.dumps([FORMAT_VERSION, _code_hash(), name, root, size, int(seed), fp])
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-48:]  # a name with a path (csv:PATH) stays one file name
    return f"{readable}-{size}-s{seed}-{hashlib.sha256(material.encode()).hexdigest()[:20]}"


def to_arrays(ds: Dataset) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The dataset as six named arrays and a JSON-able dict of everything else."""
    arrays = {f"{s}_{part}": getattr(getattr(ds, s), part).numpy() for s in _SPLITS for part in ("images", "fine")}
    meta = {"format": FORMAT_VERSION, "name": ds.name, "source": ds.source, "mean": list(ds.mean), "std": list(ds.std),
            "hierarchy": ds.hierarchy.to_dict(), "tree": None if ds.tree is None else ds.tree.to_dict(),
            "arrays": {k: {"shape": list(a.shape), "dtype": str(a.dtype)} for k, a in arrays.items()}}
    return arrays, meta


def from_arrays(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Dataset:
    """Inverse of `to_arrays`; ValueError when an array does not match what `meta` records."""
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"entry format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    for k, spec in meta["arrays"].items():
        a = arrays[k]
        if list(a.shape) != spec["shape"] or str(a.dtype) != spec["dtype"]:
            raise ValueError(f"{k}: {a.dtype} {a.shape}, expected {spec['dtype']} {spec['shape']}")
    splits = {s: Split(torch.from_numpy(arrays[f"{s}_images"]), torch.from_numpy(arrays[f"{s}_fine"])) for s in _SPLITS}
    return Dataset(name=meta["name"], **splits, hierarchy=Hierarchy.from_dict(meta["hierarchy"]),
                   tree=None if meta["tree"] is None else Hierarchy.from_dict(meta["tree"]),
                   mean=tuple(meta["mean"]), std=tuple(meta["std"]), source=meta["source"])


# ---------------------------------------------------------------------------- files


def write_entry(entry: Path, ds: Dataset) -> None:
    """Write `ds` to `entry` atomically; if another writer got there first, keep theirs."""
    arrays, meta = to_arrays(ds)
    entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        for k, a in arrays.items():
            with open(tmp / f"{k}.npy", "wb") as fh:
                np.save(fh, a, allow_pickle=False)
                os.fsync(fh.fileno())
        (tmp / "meta.json").write_text(json.dumps(meta))  # written last: an entry without it is incomplete
        os.rename(tmp, entry)  # fails (ENOTEMPTY/EEXIST) when an entry is already there: the loser discards its copy
    except OSError:
        if not entry.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_entry(entry: Path) -> Dataset | None:
    """The memory-mapped dataset in `entry`, or None when it is absent or damaged in any way."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        arrays = {k: np.load(entry / f"{k}.npy", mmap_mode="c" if np.prod(s["shape"]) else None, allow_pickle=False)
                  for k, s in meta["arrays"].items()}
        return from_arrays(arrays, meta)
    except Exception:  # missing file, truncated .npy, bad JSON, wrong shape: all mean "rebuild"
        return None


def _discard(entry: Path) -> None:
    """Move a damaged entry out of the way (atomically), then delete it; mapped files stay valid for their readers."""
    trash = entry.with_name(f".trash-{entry.name}-{os.getpid()}")
    with contextlib.suppress(OSError):
        os.rename(entry, trash)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def _lock(path: Path):
    with open(path, "a") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def load(name: str, root: str | os.PathLike[str] | None, *, size: str, seed: int, download: bool,
         build: Callable[[], Dataset]) -> Dataset:
    """The dataset from this node's cache, decoding it with `build()` (and writing it) on a miss."""
    where, located = cache_dir(), source_files(name, root)
    if where is None or located is None:
        return build()
    resolved, paths = located
    entry = where / entry_key(name, resolved, size, seed, fingerprint(paths))
    if (ds := read_entry(entry)) is not None:
        return ds
    built: Dataset | None = None
    try:
        where.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _lock(where / f"{entry_key(name, resolved, size, seed, None)}.lock"):
            if (ds := read_entry(entry)) is not None:  # another process built it while we waited
                return ds
            if entry.exists():
                _discard(entry)
            built = build()
            after = entry_key(name, resolved, size, seed, fingerprint(paths))
            if after != entry.name and not download:
                return built  # the files changed while we read them: do not cache what we cannot name
            entry = where / after  # with download=True the builder may have fetched the files just now
            write_entry(entry, built)
            ds = read_entry(entry)
            return built if ds is None else ds
    except OSError as e:
        warnings.warn(f"node data cache {where} unusable ({type(e).__name__}: {e}); using the decoded dataset",
                      stacklevel=2)
        return build() if built is None else built
