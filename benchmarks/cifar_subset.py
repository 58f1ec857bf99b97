"""Write the CIFAR-10 subset the benchmark suite carries to a GPU machine (benchmarks/suite.py).

The first `--per-class` images of each class, in the file's own order (the official training
batches' order), from a CIFAR-10 training set in the `.npz` form the platform reads
(`x`: (N, 32, 32, 3) uint8 HWC, `y`: labels 0..9), written uncompressed as uint8 to
`OUT/cifar10-train.npz` in the same form, so `--data cifar10 --data-root OUT` reads it like the
full file (10% a fixed stratified test split, 10% calibration, the rest training). Beside it,
`subset.json` says what it is (source, its md5, images per class, bytes).

    python3 -m benchmarks.cifar_subset ../shared/data/cifar10/cifar10-train.npz [--per-class 900] [--out .suite-data/cifar10]

Why 900 per class (9,000 images, 27.7 MB): a device run carries at most 64 MiB beside the code,
and Ray + Optuna for the GPU machine's Python (`../shared/device/pack-site.sh`, `.site/site.tar.xz`)
take 35.6 MB of it; 900 per class leaves room for the code with a margin.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_OUT", "DEFAULT_PER_CLASS", "SUBSET_FILE", "describe", "write_subset"]

DEFAULT_PER_CLASS = 900
DEFAULT_OUT = Path(".suite-data") / "cifar10"
SUBSET_FILE = "cifar10-train.npz"
INFO_FILE = "subset.json"


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def write_subset(source: Path, out: Path, per_class: int = DEFAULT_PER_CLASS) -> dict:
    """Write the subset; returns what subset.json holds. Raises ValueError on a source that is
    not a CIFAR-10 .npz or holds fewer than `per_class` images of some class."""
    if per_class < 10:
        raise ValueError(f"--per-class must be at least 10 (a test and a calibration image per class), got {per_class}")
    try:
        with np.load(source, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{source} is not a readable CIFAR-10 .npz with arrays x and y ({type(exc).__name__}: {exc})") from exc
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3) or y.shape != (len(x),):
        raise ValueError(f"{source}: x must be uint8 (N, 32, 32, 3) and y one label per image; got x {x.dtype} {x.shape}, "
                         f"y {y.shape}")
    counts = np.bincount(y.astype(np.int64), minlength=10)
    if len(counts) != 10 or counts.min() < per_class:
        raise ValueError(f"{source}: need {per_class} images of each of the 10 classes, have {counts.tolist()}")
    keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)]))
    out.mkdir(parents=True, exist_ok=True)
    target = out / SUBSET_FILE
    tmp = out / (SUBSET_FILE + ".partial")
    with open(tmp, "wb") as fh:
        np.savez(fh, x=np.ascontiguousarray(x[keep]), y=y[keep].astype(np.uint8))
    tmp.replace(target)
    info = {"what": f"CIFAR-10 subset: the first {per_class} images of each class of {source.name}, in its order",
            "source": str(source), "source_md5": _md5(source), "per_class": per_class, "images": int(len(keep)),
            "bytes": target.stat().st_size, "md5": _md5(target)}
    (out / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    return info


def describe(root: Path) -> dict | None:
    """subset.json of a subset folder, or None when the folder holds no subset written here."""
    try:
        return json.loads((Path(root) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m benchmarks.cifar_subset", description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="a CIFAR-10 training set as .npz (x uint8 N x 32 x 32 x 3, y labels)")
    ap.add_argument("--per-class", type=int, default=DEFAULT_PER_CLASS, help=f"images per class (default {DEFAULT_PER_CLASS})")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder to write {SUBSET_FILE} into (default {DEFAULT_OUT})")
    args = ap.parse_args(argv)
    try:
        info = write_subset(args.source, args.out, args.per_class)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
