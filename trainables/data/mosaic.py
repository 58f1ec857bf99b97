"""A real multi-label dataset that needs no download: mosaics of CIFAR-10 images, as a CSV + folder.

    python3 -m trainables.data.mosaic --out data/mosaic --data-root ../shared/data/cifar10 --classes 5-9

writes `OUT/labels.csv` (the research's layout, `ImageID,Labels,Caption`: trainables/data/csv_images.py)
and `OUT/images/NNNNNN.png`: each image a `--grid` x `--grid` mosaic (default 2 x 2: 64 x 64 px)
of CIFAR-10 training images of the `--classes` asked for, drawn at random without repeating an
image until the pool is used up, labelled with the set of classes it holds (CIFAR-10's class
indices, 0 airplane .. 9 truck) and captioned with their names ("cat, dog and truck": a caption
with commas). `--grid 1` writes the images themselves, a single-label set (how the transfer run
gets CIFAR-10 classes 0-4 as a CSV to pretrain on). `--unlabelled K` adds K more mosaics in
`OUT/unlabelled/`, with their labels kept apart in `OUT/unlabelled.csv`, for the predictions of a
trained network (python3 -m search.predict). `--source synthetic` draws from the generated dataset
instead (classes 0-99; no files needed: what the tests use). The default `--count` uses every
image of the classes once.

Then, e.g.: python3 -m search.run --space transfer --data csv:data/mosaic/labels.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

__all__ = ["main", "mosaics"]


def parse_classes(text: str, n_classes: int) -> list[int]:
    """"5-9" or "0,3,7" (or a mix) -> sorted class indices, each below n_classes."""
    out: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"--classes {text!r}: write ranges and indices like 5-9 or 0,3,7")
        out.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    bad = sorted(c for c in out if c >= n_classes)
    if bad or len(out) < 2:
        raise ValueError(f"--classes {text!r}: need two or more classes from 0 to {n_classes - 1}")
    return sorted(out)


def source_pool(source: str, root: str | None, seed: int) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """(uint8 (N, 3, 32, 32) images, (N,) class indices, class names) of the source's training images."""
    from trainables.data import get_dataset

    ds = get_dataset(source, root, seed=seed, size="full" if source == "cifar10" else "smoke")
    images = torch.cat([ds.train.images, ds.calib.images, ds.test.images])
    labels = torch.cat([ds.train.fine, ds.calib.fine, ds.test.fine]).numpy()
    return images, labels, list(ds.hierarchy.fine_names)


def mosaics(images: torch.Tensor, labels: np.ndarray, classes: list[int], grid: int, count: int,
            rng: np.random.Generator) -> tuple[torch.Tensor, list[list[int]]]:
    """`count` mosaics of grid x grid tiles from the images of `classes`, and each one's class set."""
    pool = np.flatnonzero(np.isin(labels, classes))
    order = rng.permutation(pool)
    tiles = grid * grid
    need = count * tiles
    picks = np.concatenate([order] * (need // len(order)) + [order[: need % len(order)]]) if need > len(order) else order[:need]
    c, h, w = images.shape[1:]
    out = torch.empty((count, c, h * grid, w * grid), dtype=torch.uint8)
    sets: list[list[int]] = []
    for m in range(count):
        chosen = picks[m * tiles:(m + 1) * tiles]
        for k, i in enumerate(chosen):
            r, q = divmod(k, grid)
            out[m, :, r * h:(r + 1) * h, q * w:(q + 1) * w] = images[i]
        sets.append(sorted({int(labels[i]) for i in chosen}))
    return out, sets


def caption(names: list[str], classes: list[int]) -> str:
    words = [names[c] for c in classes]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def write_set(folder: Path, csv_path: Path, images: torch.Tensor, sets: list[list[int]], names: list[str]) -> None:
    from torchvision.io import write_png

    from trainables.data.csv_images import quiet_image_io, write_listing

    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    with quiet_image_io():
        for i, img in enumerate(images):
            name = f"{i:06d}.png"
            write_png(img, str(folder / name))
            ids.append(f"{folder.name}/{name}")
    write_listing(csv_path, ids, sets, [caption(names, s) for s in sets])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m trainables.data.mosaic", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write labels.csv and images/ into (must not hold labels.csv)")
    p.add_argument("--source", default="cifar10", choices=["cifar10", "synthetic"], help="where the tiles come from")
    p.add_argument("--data-root", default=None, help="the CIFAR-10 folder (cifar10-train.npz or cifar-10-batches-py/)")
    p.add_argument("--classes", default="0-9", help="the source classes the tiles are drawn from, e.g. 5-9 (default 0-9)")
    p.add_argument("--grid", type=int, default=2, help="tiles per side (default 2: 2 x 2 mosaics; 1: the images themselves)")
    p.add_argument("--count", type=int, default=None, help="mosaics to write (default: every image of the classes once)")
    p.add_argument("--unlabelled", type=int, default=0, help="extra mosaics in unlabelled/ (labels in unlabelled.csv)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)
    if (out / "labels.csv").exists():
        print(f"error: {out / 'labels.csv'} exists: pick another --out (nothing is overwritten)", file=sys.stderr)
        return 2
    if args.grid < 1 or (args.count is not None and args.count < 1) or args.unlabelled < 0:
        print("error: --grid and --count must be at least 1, --unlabelled at least 0", file=sys.stderr)
        return 2
    from trainables.data import DatasetUnavailable

    try:
        images, labels, names = source_pool(args.source, args.data_root, args.seed)
        classes = parse_classes(args.classes, len(names))
    except (DatasetUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    pool = int(np.isin(labels, classes).sum())
    count = args.count or max(1, pool // (args.grid * args.grid))
    made, sets = mosaics(images, labels, classes, args.grid, count + args.unlabelled, rng)
    write_set(out / "images", out / "labels.csv", made[:count], sets[:count], names)
    if args.unlabelled:
        write_set(out / "unlabelled", out / "unlabelled.csv", made[count:], sets[count:], names)
    multi = sum(len(s) > 1 for s in sets[:count])
    print(f"wrote {count} {args.grid}x{args.grid} mosaics of {args.source} classes {classes} ({multi} with two or more "
          f"classes) to {out / 'labels.csv'} and {out / 'images'}"
          + (f"; {args.unlabelled} unlabelled in {out / 'unlabelled'}" if args.unlabelled else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
