"""One call from a finished run to a network ready for dynamic inference, for any family.

    from search.load import load_operating_point
    clf = load_operating_point("runs/my-run")                      # the space's default rule
    clf = load_operating_point("runs/my-run", min_specificity=0.5)  # your constraints (calibration scores)
    clf = load_operating_point("runs/my-run", max_latency_ms=2.0)
    clf = load_operating_point("runs/my-run", point_id=pid)         # any point_id of results.parquet
    clf = load_operating_point("s3://bucket/runs/my-run")          # a bucket run: fetched to this machine first
    pred = clf.predict(images_uint8)                               # pred.label, pred.level, pred.exit, pred.name

The choice is made among the run's global-front points on CALIBRATION scores, never test: the
space declares a default rule (README, "Using a front point"), and `min_<metric>=v` /
`max_<metric>=v` keywords add constraints on any declared point metric (or a short name the
space declares, e.g. `max_flops`). The space rebuilds its own network and says how a point's policy
parameters become exit thresholds: `Family.predictor` returns the point's predictor (the early-exit
cascade for the early-exit families). `clf.point` holds the point's calibration and test rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from reports.schema import read_results
from trainables.contract import Declaration, Selection
from trainables.predictor import Predictor
from trainables.storage import fetch_run, is_uri

__all__ = ["choose_point", "load_operating_point"]

def _run_space(run_dir: Path) -> tuple[dict[str, Any], Any, Any]:
    from spaces import get_space

    spec = json.loads((run_dir / "spec.json").read_text())
    space = get_space(spec["space"])
    budget = space.budget(spec.get("budget", "smoke"))
    return spec, space, space.family(budget, space.resolve_options(spec.get("options") or {}))


def choose_point(rows: list[dict[str, Any]], decl: Declaration, selection: Selection | None = None,
                 **constraints: float) -> dict[str, Any]:
    """The calibration row chosen by `selection` (default: the space's) plus keyword constraints,
    among complete, non-reference, global-front calibration rows."""
    rule = (selection or decl.selection).with_constraints(**constraints)
    unknown = [m for m in rule.constraints if m not in {c.name for c in decl.point}]
    if unknown:
        raise ValueError(f"cannot constrain {unknown}: not point metrics of this space "
                         f"({', '.join(c.name for c in decl.point if c.kind != 'floats')})")
    cand = [r for r in rows if r.get("split") == "calibration" and r.get("on_front") and r.get("status") == "complete"
            and not r.get("reference")]
    return dict(rule.choose(cand, {c.name: c.direction for c in decl.point}))


def load_operating_point(run_dir: str | Path, point_id: str | None = None, *, device: str = "cpu",
                         selection: Selection | None = None, **constraints: float) -> Predictor:
    if is_uri(str(run_dir)):  # a bucket run (s3://BUCKET/PREFIX/RUN): fetched into this machine's copy
        run_dir, _ = fetch_run(str(run_dir))
    run_dir = Path(run_dir)
    spec, space, family = _run_space(run_dir)
    decl = Declaration.from_dict(spec["declaration"]) if "declaration" in spec else family.declaration
    table = read_results(run_dir)
    if point_id is None:
        calib = choose_point(table.to_pylist(), decl, selection, **constraints)
        point_id = calib["point_id"]
    rows = table.filter(pc.equal(table["point_id"], point_id)).to_pylist()
    if not rows:
        raise KeyError(f"no operating point {point_id!r} in {run_dir}/results.parquet")
    by_split = {r["split"]: r for r in rows}
    row = by_split.get("calibration") or rows[0]
    ckpt = run_dir / "trials" / row["trial_id"] / "model.pt"
    if not ckpt.exists():
        raise FileNotFoundError(f"trial {row['trial_id']}'s final network {ckpt} is missing")
    clf = family.predictor(row, ckpt, device)  # the family's own predictor of its points
    clf.point = by_split
    return clf
