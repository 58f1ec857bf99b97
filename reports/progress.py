"""The search's progress: the hypervolume of the run's front against wall-clock time and against epochs
spent, with the trials stopped early marked where they stopped. Pure, like `reports.compute`:
RunTables in, `reports.info.ProgressInfo` out; every metric comes from the run's Declaration.

* The front is the run's own: the non-reference calibration points (where points are chosen) of
  complete trials; partial (stopped), failed and interrupted trials never add to it.
* Its hypervolume is taken over the declared hypervolume objectives and reference point when the
  space declares them (spaces whose trials yield many points: the same measure as each trial's own
  signal); otherwise over the point objectives, with a reference point a tenth of each objective's
  range beyond its worst calibration value among complete trials (`reference_beyond_worst`). A
  caller comparing runs passes one reference for all of them.
* Time is wall-clock seconds since the run started (spec.json's provenance, or the first epoch's
  start if earlier: a resumed run counts the time it was stopped). A trial completes (or stops)
  at its last result (`created_at`). Epochs spent by a moment are the epochs every trial, whatever
  its status, had finished by then, from curves.parquet's per-epoch `ended_at`; a run whose curves
  have no `ended_at` (written before it existed) places each trial's epochs at its last result,
  and the notes say so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from reports.compute import metric
from reports.info import ProgressInfo
from reports.tables import RunTables
from reports.values import is_null, to_float, to_int
from trainables.contract import Declaration
from trainables.pareto import hypervolume

__all__ = ["front_hypervolume", "hypervolume_axes", "reference_beyond_worst", "run_progress"]

MARGIN = 0.1  # of each objective's range, beyond its worst value: the reference point when none is declared


def hypervolume_axes(decl: Declaration) -> tuple[tuple[str, ...], tuple[float, ...] | None]:
    """The objectives of the run's hypervolume and the declared reference point (None: none declared)."""
    if decl.hv_objectives:
        return tuple(decl.hv_objectives), tuple(float(v) for v in decl.hv_reference)
    return tuple(decl.point_objectives), None


def reference_beyond_worst(values: np.ndarray, maximize: Sequence[bool], margin: float = MARGIN) -> np.ndarray:
    """A reference point `margin` of each objective's range beyond its worst value in `values` (n, d);
    an objective with no spread gets `margin` of its magnitude (or `margin` itself at zero)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v).all(axis=1)]
    if len(v) == 0:
        raise ValueError("no finite point to place a reference point beyond")
    up = np.asarray(maximize, dtype=bool)
    worst = np.where(up, v.min(axis=0), v.max(axis=0))
    span = v.max(axis=0) - v.min(axis=0)
    pad = np.where(span > 0, margin * span, np.where(worst != 0, margin * np.abs(worst), margin))
    return np.where(up, worst - pad, worst + pad)


def front_hypervolume(batches: Sequence[np.ndarray], reference: Sequence[float], maximize: Sequence[bool]) -> np.ndarray:
    """The hypervolume of the union of the first k point batches, for every k (cumulative)."""
    out, front = [], np.zeros((0, len(reference)))
    for pts in batches:
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, len(reference))
        front = np.concatenate([front, pts[np.isfinite(pts).all(axis=1)]])
        out.append(hypervolume(front, reference, maximize) if len(front) else 0.0)
    return np.asarray(out, dtype=np.float64)


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, errors="coerce", utc=True)


def _origin(tables: RunTables, curves: pd.DataFrame, ended: pd.Series) -> pd.Timestamp | None:
    prov = tables.spec.get("provenance") or {}
    starts = [pd.to_datetime(prov.get(k), errors="coerce", utc=True) for k in ("first_started_at", "started_at")]
    starts = [s for s in starts if not pd.isna(s)]
    if len(ended.dropna()):
        seconds = pd.to_numeric(curves.get("epoch_seconds", pd.Series(index=curves.index, dtype=float)),
                                errors="coerce").fillna(0.0)
        first = (ended - pd.to_timedelta(seconds, unit="s")).dropna()
        if len(first):
            starts.append(first.min())
    return min(starts) if starts else None


def run_progress(tables: RunTables, reference: Sequence[float] | None = None) -> ProgressInfo | None:
    """The progress of a run (see the module docstring); None when no trial has a result time yet.
    `reference` overrides the hypervolume's reference point (e.g. one shared by runs compared)."""
    decl, results, curves = tables.declaration, tables.results, tables.curves
    if results.empty:
        return None
    names, declared = hypervolume_axes(decl)
    maximize = decl.maximize(names)
    ids = results["trial_id"].map(lambda v: "" if is_null(v) else str(v))
    trials = results.assign(_id=ids, _at=_utc(results["created_at"])).groupby("_id", sort=False).first()
    trials = trials[trials.index != ""]
    notes: list[str] = []

    # when each epoch ended: per-epoch times, or (curves without them) each trial's epochs at its last result
    ended = _utc(curves["ended_at"]) if "ended_at" in curves.columns and len(curves) else pd.Series(dtype="datetime64[ns, UTC]")
    curve_ids = curves["trial_id"].map(lambda v: "" if is_null(v) else str(v)) if len(curves) else pd.Series(dtype=object)
    timed = set(curve_ids[ended.notna()]) if len(ended) else set()
    epoch_times = list(ended.dropna())
    untimed = [t for t in trials.index if t not in timed and to_int(trials.at[t, "epochs_done"])]
    for t in untimed:
        if not pd.isna(trials.at[t, "_at"]):
            epoch_times += [trials.at[t, "_at"]] * int(to_int(trials.at[t, "epochs_done"]) or 0)
    if untimed:
        notes.append(f"{len(untimed)} trial(s) have no per-epoch times (curves written before `ended_at` existed): "
                     "their epochs are counted at their last result.")
    origin = _origin(tables, curves, ended if len(ended) else pd.Series(dtype="datetime64[ns, UTC]"))
    if origin is None:
        at = trials["_at"].dropna()
        if not len(at):
            return None
        origin = at.min()
    epoch_seconds = np.sort(np.array([(t - origin).total_seconds() for t in epoch_times], dtype=np.float64))

    def seconds(t: str) -> float:
        at = trials.at[t, "_at"]
        return math.nan if pd.isna(at) else float((at - origin).total_seconds())

    def spent(s: float) -> int:
        return int(np.searchsorted(epoch_seconds, s + 1e-6, side="right")) if math.isfinite(s) else 0

    status = trials["status"].map(lambda v: "" if is_null(v) else str(v))
    complete = sorted((t for t in trials.index if status[t] == "complete" and math.isfinite(seconds(t))), key=seconds)
    stopped = sorted((t for t in trials.index if status[t] == "partial" and math.isfinite(seconds(t))), key=seconds)

    rows = results[ids.isin(complete) & results["split"].eq("calibration") & ~results["reference"].eq(True)]
    values = rows[list(names)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64) if len(rows) else \
        np.zeros((0, len(names)))
    row_ids = ids[rows.index].to_numpy()
    if reference is not None:
        ref, rule = np.asarray(reference, dtype=np.float64), "given by the caller (shared by the runs compared)"
    elif declared is not None:
        ref, rule = np.asarray(declared), "the space's declared hypervolume reference point"
    elif np.isfinite(values).all(axis=1).any():
        ref = reference_beyond_worst(values, maximize)
        rule = (f"{MARGIN:g} of each objective's range beyond its worst calibration value among complete trials "
                "(no reference point is declared)")
    else:
        ref, rule = np.full(len(names), math.nan), "none: no complete trial has finite values"
    hv = front_hypervolume([values[row_ids == t] for t in complete], ref, maximize) if np.isfinite(ref).all() \
        else np.zeros(len(complete))
    c_sec = np.array([seconds(t) for t in complete], dtype=np.float64)
    s_sec = np.array([seconds(t) for t in stopped], dtype=np.float64)
    at_stop = np.array([hv[np.searchsorted(c_sec, s, side="right") - 1] if np.searchsorted(c_sec, s, side="right") else 0.0
                        for s in s_sec], dtype=np.float64)
    planned = sum(int(to_int(trials.at[t, "epochs_planned"]) or 0) for t in trials.index if status[t] != "failed")
    planned += sum(int(to_int(trials.at[t, "epochs_done"]) or 0) for t in trials.index if status[t] == "failed")
    ends = [seconds(t) for t in trials.index if math.isfinite(seconds(t))]
    return ProgressInfo(
        objectives=tuple(metric(decl, n) for n in names), reference=tuple(float(v) for v in ref), reference_rule=rule,
        complete_trials=tuple(complete), complete_seconds=c_sec,
        complete_epochs=np.array([spent(s) for s in c_sec], dtype=np.float64), hypervolume=hv,
        stopped_trials=tuple(stopped), stopped_seconds=s_sec, stopped_epochs=np.array([spent(s) for s in s_sec], dtype=np.float64),
        stopped_hypervolume=at_stop,
        stopped_fidelity=np.array([to_float(trials.at[t, "fidelity"]) for t in stopped], dtype=np.float64),
        total_seconds=max(ends + [float(epoch_seconds[-1]) if len(epoch_seconds) else 0.0]),
        total_epochs=len(epoch_seconds), planned_epochs=planned, notes=tuple(notes))
