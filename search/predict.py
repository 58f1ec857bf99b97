"""`python3 -m search.predict RUN_DIR FOLDER --out predictions.csv`: a run's front point labels a folder
of images, written in the CSV layout of trainables/data/csv_images.py (ImageID,Labels,Caption).

The point is the space's default (chosen on calibration scores, as `load_operating_point` chooses),
or `--point-id`. Every image file in FOLDER (png, jpg, jpeg, gif, webp, bmp; sorted by name) is
decoded as the run's dataset was (torchvision.io, RGB or grey as the network takes, resized to the
dataset's stored side), then the point's predictor answers it: a multi-label point every class
above its threshold, a single-label one its top-1 class. Labels are the dataset's class ids: for a
`csv:` dataset the ids of its CSV (its class names), for another dataset the class indices; the
Caption column holds the class names. An image the point gives no class has empty Labels; one it
answers at a coarser level (a superclass, e.g. gran_hbn's coarse answers) too, with the
superclass's name as its Caption.

Exit codes: 0 written; 2 bad input (no run, no such point, an empty folder, an image that cannot
be decoded, an --out that exists): nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "main", "predict_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")


def predict_folder(run_dir: str | Path, folder: str | Path, out: str | Path, point_id: str | None = None,
                   device: str = "cpu") -> int:
    """Write the predictions of a run's point for every image in `folder` to `out`; returns how many."""
    import torch

    from search.load import load_operating_point
    from trainables.data.csv_images import Listing, decode_images, write_listing
    from trainables.dynamic import data_info
    from trainables.safe_load import load_torch

    clf = load_operating_point(run_dir, point_id, device=device)
    row = clf.point.get("calibration") or next(iter(clf.point.values()))
    data = data_info(load_torch(Path(run_dir) / "trials" / row["trial_id"] / "model.pt"))
    paths = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    listing = Listing(Path(folder), [p.name for p in paths], [()] * len(paths), [""] * len(paths), list(range(len(paths))))
    images = decode_images(paths, data.image_size, listing, list(range(len(paths))))
    if data.channels == 1:
        images = images.float().mean(1, keepdim=True).round().to(torch.uint8)
    pred = clf.predict(images)
    if pred.labels is not None:  # a multi-label answer: every class above its threshold
        chosen = np.asarray(pred.labels, dtype=bool)
    else:  # one class; an answer at a coarser level (a superclass) names no class
        chosen = np.eye(len(data.fine_names), dtype=bool)[pred.label] & (pred.level == 0)[:, None]
    ids = [int(n) if n.isdigit() else i for i, n in enumerate(data.fine_names)]  # a CSV dataset's ids are its names
    labels = [[ids[c] for c in np.flatnonzero(row_)] for row_ in chosen]
    captions = [", ".join(data.fine_names[c] for c in np.flatnonzero(row_)) or pred.name[i] for i, row_ in enumerate(chosen)]
    write_listing(out, [p.name for p in paths], labels, captions)
    return len(paths)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m search.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a finished run's directory (runs/NAME)")
    p.add_argument("folder", help="a folder of images to label")
    p.add_argument("--out", required=True, help="the CSV to write (must not exist)")
    p.add_argument("--point-id", default=None, help="a point_id of results.parquet (default: the space's default point)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    from trainables.data import DatasetUnavailable

    out = Path(args.out)
    if out.exists():
        print(f"error: {out} exists: pick another --out (nothing is overwritten)", file=sys.stderr)
        return 2
    if not (Path(args.run_dir) / "spec.json").is_file():
        print(f"error: {args.run_dir} is not a run directory (no spec.json)", file=sys.stderr)
        return 2
    if not Path(args.folder).is_dir():
        print(f"error: {args.folder} is not a folder of images", file=sys.stderr)
        return 2
    try:
        n = predict_folder(args.run_dir, args.folder, out, args.point_id, args.device)
    except (ValueError, KeyError, FileNotFoundError, DatasetUnavailable) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", file=sys.stderr)
        return 2
    print(f"wrote the predictions for {n} images to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
