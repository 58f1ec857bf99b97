"""Gather what the trials wrote into the run's tables, and mark the global front.

Each trial directory (`RUN_DIR/trials/<trial_id>/`) holds `status.json` (config, seed, fidelity,
status, device), `curves.json` and, once complete, `points.json` (its operating points on both
splits). This module turns them into `results.parquet` and `curves.parquet` (schemas in
search/results.py). The global front is chosen on calibration scores among the calibrated
points of complete, full-fidelity trials only; partial and failed trials never enter it.
Called after every finished trial and at the end of the run, so results already earned survive
a crash of the driver; each write is atomic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from reports.pareto import non_dominated_mask
from search.results import CURVES_SCHEMA, results_table, write_table

__all__ = ["TrialInfo", "collect", "write_tables"]


class TrialInfo(dict):
    """What the driver knows of a trial that the trial itself may not have written:
    keys `number` (creation order), `error` (Tune's error text) and `config`."""


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def collect(
    run_dir: str | Path,
    spec: Mapping[str, Any],
    trial_info: Mapping[str, Mapping[str, Any]] | None = None,
    point_objectives: Mapping[str, str] | None = None,
) -> tuple[pa.Table, pa.Table]:
    """(results, curves) tables from the trial directories and the driver's trial info."""
    run_dir = Path(run_dir)
    trial_info = dict(trial_info or {})
    point_objectives = dict(point_objectives or spec.get("point_objectives") or {})
    prov = spec.get("provenance", {})
    base = {
        "run": spec.get("name") or spec.get("run"),
        "space": spec.get("space"),
        "dataset": spec.get("data") or spec.get("dataset"),
        "git_rev": prov.get("git_rev"),
        "versions_json": json.dumps(prov.get("versions", {}), sort_keys=True),
    }
    trial_dirs = {p.name: p for p in sorted((run_dir / "trials").glob("*")) if p.is_dir()}
    ids = list(dict.fromkeys(list(trial_info) + list(trial_dirs)))
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    for order, tid in enumerate(sorted(ids, key=lambda t: (trial_info.get(t, {}).get("number", 1 << 30), t))):
        info = trial_info.get(tid, {})
        tdir = trial_dirs.get(tid)
        status = (_load_json(tdir / "status.json") if tdir else None) or {}
        config = status.get("config") or info.get("config") or {}
        prov_t = status.get("provenance") or {}
        number = info.get("number", order)
        planned = status.get("epochs_planned")
        done = int(status.get("epochs_done") or 0)
        state = status.get("status")
        error = status.get("error") or info.get("error")
        if error or state == "failed":
            state = "failed"
            error = error or "trial failed without a reason (see the Ray logs)"
        elif state == "complete" and tdir is not None and (tdir / "points.json").exists():
            state = "complete"
        elif state is None and not info.get("finished", True):
            continue  # not started yet
        else:
            state = "partial"  # stopped early by a scheduler, or still running
        common = {
            **base,
            "trial_id": tid,
            "trial_number": number,
            "status": state,
            "error": error,
            "epochs_done": done,
            "epochs_planned": planned,
            "fidelity": (done / planned) if planned else 0.0,
            "hypervolume": status.get("hypervolume"),
            "seed": status.get("seed"),
            "config": config,
            "exit_flops": status.get("exit_flops"),
            "device": prov_t.get("device"),
            "hostname": prov_t.get("hostname"),
        }
        for c in (_load_json(tdir / "curves.json") if tdir else None) or []:
            curves.append({"trial_id": tid, **{k: c.get(k) for k in CURVES_SCHEMA.names if k != "trial_id"}})
        pts = _load_json(tdir / "points.json") if (tdir and state == "complete") else None
        if not pts:
            rows.append(common)
            continue
        per_exit = pts.get("per_exit_accuracy", {})
        common["hypervolume"] = pts.get("hypervolume", common["hypervolume"])
        for p in pts["points"]:
            acc = per_exit.get(p["split"], {})
            rows.append(
                {
                    **common,
                    **p,
                    "point_id": f"{tid}/{p['point_id']}",
                    "fine_acc_per_exit": acc.get("fine"),
                    "coarse_acc_per_exit": acc.get("coarse"),
                    "on_front": False,
                }
            )
    _mark_global_front(rows, point_objectives)
    curves_table = pa.Table.from_pylist(curves, schema=CURVES_SCHEMA)
    return results_table(rows), curves_table


def _mark_global_front(rows: list[dict[str, Any]], point_objectives: Mapping[str, str]) -> None:
    names = list(point_objectives)
    if not names:
        return
    cand = [
        r for r in rows
        if r.get("status") == "complete" and r.get("split") == "calibration" and r.get("policy") == "calibrated"
        and all(r.get(n) is not None for n in names)
    ]
    if not cand:
        return
    pts = np.array([[r[n] for n in names] for r in cand], dtype=np.float64)
    mask = non_dominated_mask(pts, [point_objectives[n] == "max" for n in names])
    chosen = {r["point_id"] for r, m in zip(cand, mask) if m}
    for r in rows:
        if r.get("point_id") in chosen:
            r["on_front"] = True


def write_tables(run_dir: str | Path, results: pa.Table, curves: pa.Table) -> None:
    run_dir = Path(run_dir)
    write_table(results, run_dir / "results.parquet")
    write_table(curves, run_dir / "curves.parquet")
