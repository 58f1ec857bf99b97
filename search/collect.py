"""Gather what the trials wrote into the run's tables, and mark the global front.

Each trial directory (`RUN_DIR/trials/<trial_id>/`) holds `status.json` (config, seed, fidelity,
status, device), `curves.json` and, once complete, `points.json` (its operating points on both
splits and its declared trial values). This module turns them into `results.parquet` and
`curves.parquet`, whose schemas follow from the space's declaration (reports/schema.py). The
global front is chosen on calibration scores, over the declared point objectives, among the
non-reference points of complete, full-fidelity trials only; partial and failed trials never
enter it. Called after every finished trial and at the end of the run, so results already earned
survive a crash of the driver; each write is atomic.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from reports.schema import curves_table, results_table, write_table
from trainables.atomic import write_json
from trainables.contract import Declaration
from trainables.pareto import non_dominated_mask

__all__ = ["collect", "mark_global_front", "settle_unfinished", "settle_with_journal", "write_tables"]


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _trial_state(status: Mapping[str, Any], info: Mapping[str, Any], has_points: bool) -> tuple[str | None, str | None]:
    """(state, error): failed (with a reason), complete, partial (a scheduler stopped it),
    interrupted (the run was stopped while it ran: it restarts on --resume), running; None for a
    trial not started."""
    state = status.get("status")
    error = status.get("error") or info.get("error")
    if error or state == "failed":
        return "failed", error or "trial failed without a reason (see the Ray logs)"
    if state == "complete" and has_points:
        return "complete", None
    if state in ("running", "interrupted"):
        return state, None
    if state is None:
        return None, None  # suggested, never started (or not yet)
    return "partial", None  # "stopped": a scheduler ended it early


def settle_unfinished(run_dir: str | Path, new_state: Callable[[str], str]) -> dict[str, str]:
    """Give every trial still marked running or interrupted on disk the state `new_state(trial_id)`
    ("interrupted", or "stopped" for a trial a scheduler ended); returns {trial id: new state}.
    Called by the driver, which alone knows why a trial is no longer running."""
    changed: dict[str, str] = {}
    for path in sorted(Path(run_dir).glob("trials/*/status.json")):
        status = _load_json(path)
        if not isinstance(status, dict) or status.get("status") not in ("running", "interrupted"):
            continue
        state = new_state(path.parent.name)
        if state != status["status"]:
            write_json(path, {**status, "status": state})
            changed[path.parent.name] = state
    return changed


def settle_with_journal(run_dir: str | Path, stopped: bool) -> dict[str, str]:
    """Statuses made to agree with the study journal once the driver stops: a trial the journal
    holds unfinished (RUNNING) restarts on --resume, so it is `interrupted` in the results too when
    its status says it failed on a full disk (Tune was to retry it), or, after a stop (`stopped`),
    that it failed (Tune was to retry it, or the stop itself broke it: its Ray Train workers'
    placement group removed under it) or completed (its outcome is on disk, but the search had not
    heard of it; the resumed trial finds its outcome and completes at once). The error it had is
    kept as `last_error`. Returns {trial id: new state}."""
    from search.disk import is_disk_full
    from search.study import trial_states

    states = trial_states(run_dir)
    changed: dict[str, str] = {}
    for path in sorted(Path(run_dir).glob("trials/*/status.json")):
        status = _load_json(path)
        tid = path.parent.name
        if not isinstance(status, dict) or states.get(tid) != "RUNNING":
            continue
        state = status.get("status")
        if state == "failed" and is_disk_full(str(status.get("error"))):
            why = "a full disk"
        elif state == "failed" and stopped:
            why = "the run's stop, before the search recorded a failure"
        elif state == "complete" and stopped:
            why = "the run's stop, before the search recorded it"
        else:
            continue
        kept = {k: v for k, v in status.items() if k not in ("error", "traceback")}
        last = {"last_error": status["error"]} if status.get("error") else {}
        write_json(path, {**kept, **last, "status": "interrupted", "cut_short_by": why})
        changed[tid] = "interrupted"
    return changed


def collect(
    run_dir: str | Path,
    spec: Mapping[str, Any],
    declaration: Declaration,
    trial_info: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[pa.Table, pa.Table]:
    """(results, curves) tables from the trial directories and the driver's trial info
    (trial id -> {"number": Optuna trial number, "error": Tune's error text, ...})."""
    run_dir = Path(run_dir)
    trial_info = dict(trial_info or {})
    prov = spec.get("provenance", {})
    base = {
        "run": spec.get("name") or spec.get("run"),
        "space": spec.get("space"),
        "dataset": spec.get("data") or spec.get("dataset"),
        "git_rev": prov.get("git_rev"),
        "versions_json": json.dumps(prov.get("versions", {}), sort_keys=True),
    }
    trial_names = {c.name for c in declaration.trial}
    trial_dirs = {p.name: p for p in sorted((run_dir / "trials").glob("*")) if p.is_dir()}
    ids = list(dict.fromkeys(list(trial_info) + list(trial_dirs)))
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    for order, tid in enumerate(sorted(ids, key=lambda t: (trial_info.get(t, {}).get("number", 1 << 30), t))):
        info = trial_info.get(tid, {})
        tdir = trial_dirs.get(tid)
        status = (_load_json(tdir / "status.json") if tdir else None) or {}
        pts = _load_json(tdir / "points.json") if tdir else None
        state, error = _trial_state(status, info, bool(pts))
        if state is None:
            continue  # not started yet
        planned = status.get("epochs_planned")
        done = int(status.get("epochs_done") or 0)
        prov_t = status.get("provenance") or {}
        common = {
            **base,
            "trial_id": tid,
            "trial_number": info.get("number", order),
            "status": state,
            "error": error,
            "epochs_done": done,
            "epochs_planned": planned,
            "fidelity": (done / planned) if planned else 0.0,
            "seed": status.get("seed"),
            "config": status.get("config") or info.get("config") or {},
            "device": prov_t.get("device"),
            "hostname": prov_t.get("hostname"),
            "created_at": _time(status.get("updated_at")),
        }
        trial_values = (pts or {}).get("trial") or status.get("trial") or {}
        common |= {k: v for k, v in trial_values.items() if k in trial_names or k not in common}
        for c in (_load_json(tdir / "curves.json") if tdir else None) or []:
            curves.append({"trial_id": tid, **c, **({"ended_at": _time(c["ended_at"])} if "ended_at" in c else {})})
        if state != "complete":
            rows.append(common)
            continue
        for p in pts["points"]:
            rows.append({**common, **p, "point_id": f"{tid}/{p['point_id']}", "on_front": False})
    mark_global_front(rows, declaration)
    return results_table(rows, declaration), curves_table(curves, declaration)


def mark_global_front(rows: list[dict[str, Any]], declaration: Declaration) -> None:
    """Set `on_front` on both rows of every point on the run's front, chosen on calibration."""
    names = list(declaration.point_objectives)
    cand = [
        r for r in rows
        if r.get("status") == "complete" and r.get("split") == "calibration" and not r.get("reference")
        and all(r.get(n) is not None for n in names)
    ]
    if not cand:
        return
    pts = np.array([[r[n] for n in names] for r in cand], dtype=np.float64)
    mask = non_dominated_mask(pts, declaration.maximize(names))
    chosen = {r["point_id"] for r, m in zip(cand, mask) if m}
    for r in rows:
        if r.get("point_id") in chosen:
            r["on_front"] = True


def write_tables(run_dir: str | Path, results: pa.Table, curves: pa.Table) -> None:
    run_dir = Path(run_dir)
    write_table(results, run_dir / "results.parquet")
    write_table(curves, run_dir / "curves.parquet")
