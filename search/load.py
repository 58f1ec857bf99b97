"""One call from a finished run to a network ready for dynamic inference.

    from search.load import load_operating_point
    clf = load_operating_point("runs/my-run")              # front point with the best test accuracy
    clf = load_operating_point("runs/my-run", point_id)    # or any point_id of results.parquet
    pred = clf.predict(images_uint8)                       # pred.label, pred.fine, pred.exit, pred.name
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from search.results import read_results
from trainables.dynamic import DynamicClassifier

__all__ = ["load_operating_point"]


def load_operating_point(run_dir: str | Path, point_id: str | None = None, device: str = "cpu") -> DynamicClassifier:
    run_dir = Path(run_dir)
    table = read_results(run_dir)
    test = table.filter(pc.equal(table["split"], "test"))
    if point_id is None:
        front = test.filter(pc.equal(test["on_front"], True))
        if front.num_rows == 0:
            raise ValueError(f"{run_dir} has no front point yet (no complete trial)")
        best = pc.index(front["accuracy"], pc.max(front["accuracy"])).as_py()
        row = front.slice(best, 1).to_pylist()[0]
    else:
        sel = test.filter(pc.equal(test["point_id"], point_id))
        if sel.num_rows == 0:
            raise KeyError(f"no operating point {point_id!r} in {run_dir}/results.parquet")
        row = sel.to_pylist()[0]
    ckpt = run_dir / "trials" / row["trial_id"] / "model.pt"
    if not ckpt.exists():
        raise FileNotFoundError(f"trial {row['trial_id']}'s final network {ckpt} is missing")
    clf = DynamicClassifier.from_checkpoint(ckpt, row["thresholds_fine"], row["thresholds_coarse"], device)
    clf.point = row  # the operating point's scores, for the caller's reference
    return clf
