"""`python3 -m search.predict RUN FOLDER --out FILE`: a run's default point labels a folder of images in the
CSV layout of its dataset, as a user runs it (a subprocess); any family (here gran_hbn, single-label;
the transfer space's multi-label case is in tests/spaces/test_transfer.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from trainables.data.csv_images import decode_images, read_listing

ROOT = Path(__file__).resolve().parents[2]


def test_a_single_label_run_labels_a_folder(tmp_path):
    from search.load import load_operating_point
    from search.local import run_local
    from search.spec import RunSpec

    p = subprocess.run([sys.executable, "-m", "trainables.data.mosaic", "--source", "synthetic", "--classes", "10-19",
                        "--grid", "1", "--count", "200", "--unlabelled", "9", "--out", str(tmp_path / "d")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    run_dir = run_local(RunSpec(space="gran_hbn", data=f"csv:{tmp_path / 'd' / 'labels.csv'}", name="g",
                                storage=str(tmp_path / "runs"), trials=1, data_size="tiny"))
    out = tmp_path / "p.csv"
    p = subprocess.run([sys.executable, "-m", "search.predict", str(run_dir), str(tmp_path / "d" / "unlabelled"), "--out",
                        str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    listing = read_listing(out, labelled=False)
    files = sorted((tmp_path / "d" / "unlabelled").glob("*.png"))
    assert listing.ids == [f.name for f in files] and all(len(row) <= 1 for row in listing.labels)
    clf = load_operating_point(run_dir)
    pred = clf.predict(decode_images(files, 32))
    for row, caption, level, name in zip(listing.labels, listing.captions, pred.level, pred.name):
        assert caption == name  # the class (or, for a coarse answer, the superclass) the point answered
        assert list(row) == ([int(name)] if level == 0 else [])  # a CSV dataset's class ids are its class names
    assert np.any(pred.level == 0)
    bad = subprocess.run([sys.executable, "-m", "search.predict", str(tmp_path / "nowhere"), str(tmp_path), "--out",
                          str(tmp_path / "q.csv")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a run directory" in bad.stderr and not (tmp_path / "q.csv").exists()
