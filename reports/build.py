"""Build a run's report: read RUN_DIR, compute what every figure and table shows, write report.html.

Usage::

    python -m reports.build RUN_DIR

reads `RUN_DIR/results.parquet` (required), `RUN_DIR/curves.parquet` and `RUN_DIR/spec.json`
(both optional), writes every figure as PNG into `RUN_DIR/figures/` and a self-contained
`RUN_DIR/report.html` (figures inline as base64 PNG, no external resources), all atomically, then
prints a terminal summary. Exit status: 0 on success, 2 when the inputs cannot be read (no
results.parquet, or an unreadable one), with a one-line message on stderr.

This module only *computes*: each `*_info` function is pure (tables in, NamedTuple out), so tests
can check what a figure will show without drawing it. `reports.render` draws those objects and
`reports.summary` prints them; `build_report` wires the three together.

Conventions used throughout:

* fronts are drawn from the TEST-split rows of points chosen on calibration (`on_front`), so the
  figures show honest held-out scores; the calibration scores sit beside them in the table;
* only trials with status "complete" (fidelity 1) are eligible for a front; partial trials
  (stopped early) are drawn faded, never highlighted; failed trials have no points;
* FLOPs are shown in MFLOPs (expected_flops / 1e6); rows whose coordinates are null are skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from reports.pareto import non_dominated_mask
from search import atomic
from search.results import CONFIG_PREFIX, CURVES_SCHEMA, RESULT_SCHEMA

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "DEFAULT_POINT_OBJECTIVES",
    "FIGURE_NAMES",
    "FailedTrialsInfo",
    "FixedPolicyPoints",
    "FrontPlotInfo",
    "FrontRow",
    "FrontTableInfo",
    "HeaderInfo",
    "HypervolumeInfo",
    "LearningCurvesInfo",
    "PointSet",
    "ReportInfo",
    "ReportInputError",
    "RunTables",
    "SpecInfo",
    "ThresholdCurve",
    "ThresholdCurvesInfo",
    "TrialCounts",
    "TrialCurves",
    "TrialInfo",
    "build_report",
    "compute_report_info",
    "failed_trials_info",
    "front_plot_info",
    "front_table_info",
    "header_info",
    "hypervolume_info",
    "learning_curves_info",
    "load_run",
    "main",
    "spec_info",
    "staircase",
    "threshold_curves_info",
    "trial_counts",
    "trials_info",
]

MFLOPS = 1e6
DEFAULT_POINT_OBJECTIVES: dict[str, str] = {
    "accuracy": "max",
    "specificity": "max",
    "expected_flops_norm": "min",
}
# Used (and labelled as such) when spec.json does not state them; same wording as search/results.py.
_SCHEMA_FLOPS_CONVENTION = "FlopCounterMode convention: 2 x MACs (mean FLOPs per image)"
_SCHEMA_SPECIFICITY_DEFINITION = "fraction of answers given at the fine level"

# figure key -> file name under RUN_DIR/figures/
FIGURE_NAMES: dict[str, str] = {
    "front_flops": "front_accuracy_vs_flops.png",
    "front_specificity": "front_accuracy_vs_specificity.png",
    "threshold_curves": "threshold_curves.png",
    "hypervolume": "hypervolume.png",
    "learning_curves": "learning_curves.png",
}

_AXIS_LABELS: dict[str, str] = {
    "accuracy": "accuracy (test)",
    "specificity": "specificity (test)",
    "expected_flops": "expected MFLOPs per image (test)",
    "expected_flops_norm": "expected FLOPs / largest network (test)",
}


class ReportInputError(Exception):
    """The run directory cannot be reported on (missing or unreadable results.parquet)."""


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


class RunTables(NamedTuple):
    """Everything read from a run directory. `notes` lists what was absent or unreadable."""

    run_dir: Path
    results: pd.DataFrame  # every RESULT_SCHEMA column present (nulls where the file lacked one)
    curves: pd.DataFrame  # CURVES_SCHEMA columns; empty when curves.parquet is absent/unreadable
    spec: dict[str, Any]  # {} when spec.json is absent, empty or not a JSON object
    notes: tuple[str, ...]


def _empty_frame(schema_names: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=object) for name in schema_names})


def _with_columns(df: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    missing = [n for n in names if n not in df.columns]
    if missing:
        df = df.copy()
        for n in missing:
            df[n] = pd.Series([None] * len(df), index=df.index, dtype=object)
    return df


def load_run(run_dir: str | Path) -> RunTables:
    """Read a run directory. Raises ReportInputError when results.parquet is missing or unreadable."""
    run_dir = Path(run_dir)
    notes: list[str] = []
    results_path = run_dir / "results.parquet"
    if not run_dir.is_dir():
        raise ReportInputError(f"no results.parquet: {run_dir} is not a directory")
    if not results_path.is_file():
        raise ReportInputError(
            f"no results.parquet in {run_dir}: has the search written any result yet?"
        )
    try:
        results = pq.read_table(results_path).to_pandas()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ReportInputError(f"cannot read {results_path}: {exc}") from exc
    results = _with_columns(results, RESULT_SCHEMA.names)

    curves_path = run_dir / "curves.parquet"
    curves = _empty_frame(CURVES_SCHEMA.names)
    if curves_path.is_file():
        try:
            curves = _with_columns(pq.read_table(curves_path).to_pandas(), CURVES_SCHEMA.names)
        except Exception as exc:
            notes.append(f"curves.parquet could not be read ({exc}); learning curves are omitted.")
    else:
        notes.append("no curves.parquet: learning curves are omitted.")

    spec: dict[str, Any] = {}
    spec_path = run_dir / "spec.json"
    if spec_path.is_file():
        try:
            text = spec_path.read_text(encoding="utf-8")
            loaded = json.loads(text) if text.strip() else {}
            if isinstance(loaded, dict):
                spec = loaded
            else:
                notes.append("spec.json is not a JSON object; it is ignored.")
        except (OSError, ValueError) as exc:
            notes.append(f"spec.json could not be read ({exc}); it is ignored.")
    else:
        notes.append("no spec.json: spec and provenance are taken from the results rows only.")
    return RunTables(run_dir=run_dir, results=results, curves=curves, spec=spec, notes=tuple(notes))


# ---------------------------------------------------------------------------------------------
# Small value helpers
# ---------------------------------------------------------------------------------------------


def _is_null(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float):
        return math.isnan(v)
    if isinstance(v, (str, bool, int)):
        return False
    try:
        return bool(pd.isna(v)) if np.ndim(v) == 0 else False
    except (TypeError, ValueError):
        return False


def _float(v: Any) -> float:
    """A float, NaN for null or unconvertible."""
    if _is_null(v):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _int_or_none(v: Any) -> int | None:
    f = _float(v)
    return None if math.isnan(f) else int(f)


def _str_or_none(v: Any) -> str | None:
    return None if _is_null(v) else str(v)


def _float_list(v: Any, digits: int | None = None) -> tuple[float, ...] | None:
    """A list cell as a tuple of floats (NaN for null entries), None for a null or empty cell."""
    if v is None or (np.ndim(v) == 0 and _is_null(v)):
        return None
    try:
        values = tuple(_float(x) for x in v)
    except TypeError:
        return None
    if not values:
        return None
    if digits is not None:
        values = tuple(round(x, digits) if math.isfinite(x) else x for x in values)
    return values


def _python_value(v: Any) -> Any:
    """A cell as a plain Python value (numpy scalars unwrapped), None for null."""
    if _is_null(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def _direction_is_max(direction: Any, default: bool) -> bool:
    if isinstance(direction, str):
        d = direction.strip().lower()
        if d in ("max", "maximize", "maximise"):
            return True
        if d in ("min", "minimize", "minimise"):
            return False
    return default


def _point_objectives(spec: Mapping[str, Any]) -> dict[str, str]:
    po = spec.get("point_objectives")
    if isinstance(po, Mapping) and po:
        return {str(k): str(v) for k, v in po.items()}
    return dict(DEFAULT_POINT_OBJECTIVES)


def _maximize(name: str, point_objectives: Mapping[str, str]) -> bool:
    if name in point_objectives:
        return _direction_is_max(point_objectives[name], True)
    if name in ("expected_flops", "expected_flops_norm"):
        other = "expected_flops_norm" if name == "expected_flops" else "expected_flops"
        return _direction_is_max(point_objectives.get(other), False)
    return _direction_is_max(DEFAULT_POINT_OBJECTIVES.get(name), True)


def _reference_flops(spec: Mapping[str, Any]) -> float | None:
    f = _float(spec.get("reference_flops"))
    return f if math.isfinite(f) and f > 0 else None


def _axis_values(rows: pd.DataFrame, name: str, reference_flops: float | None) -> np.ndarray:
    """Values of one axis; expected_flops in MFLOPs (filled from the norm when only it is present)."""
    if name == "expected_flops":
        flops = np.array([_float(v) for v in rows["expected_flops"]], dtype=np.float64)
        if reference_flops is not None:
            norm = np.array([_float(v) for v in rows["expected_flops_norm"]], dtype=np.float64)
            flops = np.where(np.isnan(flops), norm * reference_flops, flops)
        return flops / MFLOPS
    return np.array([_float(v) for v in rows[name]], dtype=np.float64)


def _config_columns(results: pd.DataFrame) -> list[str]:
    return [c for c in results.columns if str(c).startswith(CONFIG_PREFIX)]


# ---------------------------------------------------------------------------------------------
# Trials
# ---------------------------------------------------------------------------------------------


class TrialInfo(NamedTuple):
    trial_id: str
    trial_number: int | None
    status: str  # complete | partial | failed (or whatever the rows say)
    error: str | None
    hypervolume: float  # NaN when unknown
    epochs_done: int | None
    epochs_planned: int | None
    fidelity: float
    config: dict[str, Any]  # searched values (config.* columns, else config_json), nulls dropped


class TrialCounts(NamedTuple):
    complete: int
    partial: int
    failed: int
    other: int  # any other status string

    @property
    def total(self) -> int:
        return self.complete + self.partial + self.failed + self.other


def _first(values: pd.Series) -> Any:
    for v in values:
        if not _is_null(v):
            return v
    return None


def _trial_config(rows: pd.DataFrame, config_cols: Sequence[str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for c in config_cols:
        v = _python_value(_first(rows[c]))
        if v is not None:
            config[c[len(CONFIG_PREFIX):]] = v
    if not config:
        raw = _first(rows["config_json"])
        if isinstance(raw, str):
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                config = {str(k): v for k, v in sorted(parsed.items())}
    return config


def trials_info(results: pd.DataFrame) -> tuple[TrialInfo, ...]:
    """One entry per trial_id, sorted by trial number (unnumbered trials last)."""
    if results.empty:
        return ()
    config_cols = _config_columns(results)
    out: list[TrialInfo] = []
    ids = results["trial_id"].map(lambda v: "" if _is_null(v) else str(v))
    for trial_id, rows in results.groupby(ids, sort=False):
        hv = np.array([_float(v) for v in rows["hypervolume"]], dtype=np.float64)
        hv = hv[np.isfinite(hv)]
        out.append(
            TrialInfo(
                trial_id=str(trial_id),
                trial_number=_int_or_none(_first(rows["trial_number"])),
                status=_str_or_none(_first(rows["status"])) or "unknown",
                error=_str_or_none(_first(rows["error"])),
                hypervolume=float(hv.max()) if hv.size else math.nan,
                epochs_done=_int_or_none(_first(rows["epochs_done"])),
                epochs_planned=_int_or_none(_first(rows["epochs_planned"])),
                fidelity=_float(_first(rows["fidelity"])),
                config=_trial_config(rows, config_cols),
            )
        )
    out.sort(key=lambda t: (t.trial_number is None, t.trial_number or 0, t.trial_id))
    return tuple(out)


def trial_counts(trials: Sequence[TrialInfo]) -> TrialCounts:
    statuses = [t.status for t in trials]
    complete = statuses.count("complete")
    partial = statuses.count("partial")
    failed = statuses.count("failed")
    return TrialCounts(complete, partial, failed, len(statuses) - complete - partial - failed)


def _status_by_trial(results: pd.DataFrame) -> pd.Series:
    """Each row's trial status, taken per trial (so a row with a null status inherits its trial's).

    Same rule as trials_info: the trial's first non-null status, "unknown" when it has none.
    """
    if results.empty:
        return pd.Series([], dtype=object)
    ids = results["trial_id"].map(lambda v: "" if _is_null(v) else str(v))
    status = results["status"].map(lambda v: None if _is_null(v) or v == "" else str(v))
    first = status.groupby(ids, sort=False).transform("first")
    return first.where(first.notna(), "unknown")


def _complete_mask(results: pd.DataFrame) -> pd.Series:
    if results.empty:
        return pd.Series([], dtype=bool)
    return _status_by_trial(results).eq("complete")


def _front_point_ids(results: pd.DataFrame) -> set[str]:
    """Ids of the global-front points that may be drawn: flagged on_front, in a complete trial."""
    if results.empty:
        return set()
    flagged = results["on_front"].eq(True) & _complete_mask(results) & results["point_id"].notna()
    return {str(p) for p in results.loc[flagged, "point_id"]}


def _split_rows(results: pd.DataFrame, split: str) -> pd.DataFrame:
    return results[results["split"].eq(split) & results["point_id"].notna()]


# ---------------------------------------------------------------------------------------------
# Header
# ---------------------------------------------------------------------------------------------


class HeaderInfo(NamedTuple):
    run: str
    space: str
    dataset: str
    counts: TrialCounts
    best_hypervolume: float  # best calibration hypervolume among complete trials; NaN if none
    best_trial_number: int | None
    front_size: int  # global-front points drawn (complete trials only)
    flops_convention: str
    flops_convention_from_spec: bool
    specificity_definition: str
    specificity_definition_from_spec: bool
    reference_mflops: float | None
    point_objectives: dict[str, str]
    objectives: dict[str, str]
    notes: tuple[str, ...]  # absent inputs, inconsistencies worth stating


def header_info(tables: RunTables) -> HeaderInfo:
    results, spec = tables.results, tables.spec
    trials = trials_info(results)
    counts = trial_counts(trials)
    complete_hv = [(t.hypervolume, t.trial_number) for t in trials if t.status == "complete"
                   and math.isfinite(t.hypervolume)]
    best_hv, best_number = (max(complete_hv, key=lambda p: p[0]) if complete_hv else (math.nan, None))

    def pick(key: str) -> str:
        v = spec.get(key)
        if isinstance(v, str) and v:
            return v
        return str(_first(results[key])) if not results.empty and _first(results[key]) is not None else "—"

    notes = list(tables.notes)
    if not results.empty:
        flagged = results["on_front"].eq(True) & ~_complete_mask(results)
        if flagged.any():
            n = results.loc[flagged, "trial_id"].nunique()
            notes.append(
                f"{int(flagged.sum())} on_front row(s) from {n} trial(s) that are not complete are "
                "not drawn on the front (only fidelity-1 trials are eligible)."
            )
    fc, sd = spec.get("flops_convention"), spec.get("specificity_definition")
    ref = _reference_flops(spec)
    objectives = spec.get("objectives")
    return HeaderInfo(
        run=pick("run"),
        space=pick("space"),
        dataset=pick("dataset"),
        counts=counts,
        best_hypervolume=best_hv,
        best_trial_number=best_number,
        front_size=len(_front_point_ids(results)),
        flops_convention=str(fc) if fc else _SCHEMA_FLOPS_CONVENTION,
        flops_convention_from_spec=bool(fc),
        specificity_definition=str(sd) if sd else _SCHEMA_SPECIFICITY_DEFINITION,
        specificity_definition_from_spec=bool(sd),
        reference_mflops=None if ref is None else ref / MFLOPS,
        point_objectives=_point_objectives(spec),
        objectives={str(k): str(v) for k, v in objectives.items()} if isinstance(objectives, Mapping) else {},
        notes=tuple(notes),
    )


# ---------------------------------------------------------------------------------------------
# Global front projections
# ---------------------------------------------------------------------------------------------


class PointSet(NamedTuple):
    x: np.ndarray
    y: np.ndarray
    trial_number: np.ndarray  # float, NaN where unknown
    point_id: tuple[str, ...]

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.x.size)


class FixedPolicyPoints(NamedTuple):
    policy: str  # e.g. "fixed:fine@2"
    level: str  # "fine" / "coarse" / other text after "fixed:"
    exit_index: int | None
    points: PointSet


class FrontPlotInfo(NamedTuple):
    """One 2-D projection of the global front, on test scores."""

    x_name: str
    y_name: str
    x_label: str
    y_label: str
    x_maximize: bool
    y_maximize: bool
    background: PointSet  # calibrated points of complete trials (test), drawn faded
    partial: PointSet  # calibrated points of partial trials (test), drawn fainter still
    front: PointSet  # global-front points (test rows of points chosen on calibration)
    staircase: np.ndarray  # (k, 2) vertices through the front's non-dominated points here; (0, 2) if none
    fixed: tuple[FixedPolicyPoints, ...]  # fixed reference policies of complete trials (test)
    x_reference: float | None  # e.g. the largest network's MFLOPs, drawn as a guide line
    skipped: int  # test rows left out because a coordinate was null

    @property
    def drawable(self) -> bool:
        return len(self.background) + len(self.front) + len(self.partial) + sum(
            len(f.points) for f in self.fixed) > 0


def _empty_points() -> PointSet:
    return PointSet(np.zeros(0), np.zeros(0), np.zeros(0), ())


def _point_set(rows: pd.DataFrame, x: str, y: str, reference_flops: float | None) -> tuple[PointSet, int]:
    if rows.empty:
        return _empty_points(), 0
    xs = _axis_values(rows, x, reference_flops)
    ys = _axis_values(rows, y, reference_flops)
    ok = np.isfinite(xs) & np.isfinite(ys)
    numbers = np.array([_float(v) for v in rows["trial_number"]], dtype=np.float64)
    ids = tuple(str(p) for p, keep in zip(rows["point_id"], ok) if keep)
    return PointSet(xs[ok], ys[ok], numbers[ok], ids), int((~ok).sum())


def staircase(x: np.ndarray, y: np.ndarray, x_maximize: bool, y_maximize: bool) -> np.ndarray:
    """Vertices of the attainment staircase of the 2-D non-dominated subset of (x, y).

    Walks the boundary of the region those points dominate, from the best-x end: between two
    consecutive points it keeps the earlier point's y, then steps to the next one. Returns (0, 2)
    for fewer than one finite point.
    """
    pts = np.column_stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) == 0:
        return np.zeros((0, 2))
    pts = pts[non_dominated_mask(pts, [x_maximize, y_maximize])]
    pts = np.unique(pts, axis=0)
    # order from the best x to the worst: along that walk the y value improves
    order = np.argsort(-pts[:, 0] if x_maximize else pts[:, 0], kind="stable")
    p = pts[order]
    verts = [p[0]]
    for prev, cur in zip(p[:-1], p[1:]):
        verts.append(np.array([cur[0], prev[1]]))
        verts.append(cur)
    return np.array(verts)


def _parse_fixed(policy: str) -> tuple[str, int | None]:
    m = re.fullmatch(r"fixed:([^@]+)@(\d+)", policy)
    if m:
        return m.group(1), int(m.group(2))
    return policy.removeprefix("fixed:"), None


def front_plot_info(
    tables: RunTables,
    x: str = "expected_flops",
    y: str = "accuracy",
) -> FrontPlotInfo:
    """What a global-front figure shows: `y` against `x`, test scores.

    Directions come from spec["point_objectives"] (defaults: accuracy/specificity max, FLOPs min).
    """
    results, spec = tables.results, tables.spec
    po = _point_objectives(spec)
    ref = _reference_flops(spec)
    x_max, y_max = _maximize(x, po), _maximize(y, po)
    test = _split_rows(results, "test")
    if test.empty:
        e = _empty_points()
        return FrontPlotInfo(x, y, _AXIS_LABELS.get(x, x), _AXIS_LABELS.get(y, y), x_max, y_max,
                             e, e, e, np.zeros((0, 2)), (), None, 0)
    status = _status_by_trial(results).loc[test.index]
    policy = test["policy"].map(lambda v: "" if _is_null(v) else str(v))
    calibrated = policy.eq("calibrated")
    complete = status.eq("complete")

    skipped = 0
    background, s = _point_set(test[calibrated & complete], x, y, ref)
    skipped += s
    partial, s = _point_set(test[calibrated & status.eq("partial")], x, y, ref)
    skipped += s
    front_ids = _front_point_ids(results)
    front, _ = _point_set(test[complete & test["point_id"].astype(str).isin(front_ids)], x, y, ref)
    order = np.lexsort((front.y, front.x))
    front = PointSet(front.x[order], front.y[order], front.trial_number[order],
                     tuple(front.point_id[i] for i in order))

    fixed: list[FixedPolicyPoints] = []
    fixed_rows = test[policy.str.startswith("fixed:") & complete]
    for name in sorted(set(policy[fixed_rows.index])):
        pts, s = _point_set(fixed_rows[policy[fixed_rows.index].eq(name)], x, y, ref)
        skipped += s
        if len(pts):
            level, exit_index = _parse_fixed(name)
            fixed.append(FixedPolicyPoints(name, level, exit_index, pts))
    fixed.sort(key=lambda f: (f.level, f.exit_index if f.exit_index is not None else -1, f.policy))

    x_reference = ref / MFLOPS if (x == "expected_flops" and ref is not None) else (
        1.0 if x == "expected_flops_norm" else None)
    return FrontPlotInfo(
        x_name=x,
        y_name=y,
        x_label=_AXIS_LABELS.get(x, x),
        y_label=_AXIS_LABELS.get(y, y),
        x_maximize=x_max,
        y_maximize=y_max,
        background=background,
        partial=partial,
        front=front,
        staircase=staircase(front.x, front.y, x_max, y_max),
        fixed=tuple(fixed),
        x_reference=x_reference,
        skipped=skipped,
    )


# ---------------------------------------------------------------------------------------------
# Per-trial threshold curves
# ---------------------------------------------------------------------------------------------


class ThresholdCurve(NamedTuple):
    trial_id: str
    trial_number: int | None
    hypervolume: float
    mflops: np.ndarray  # sorted ascending
    accuracy: np.ndarray


class ThresholdCurvesInfo(NamedTuple):
    curves: tuple[ThresholdCurve, ...]  # complete trials, by trial number
    labelled: tuple[str, ...]  # trial ids given a legend entry (best hypervolume first), capped
    hidden_in_legend: int  # curves drawn without a legend entry


def threshold_curves_info(tables: RunTables, max_legend: int = 12) -> ThresholdCurvesInfo:
    """Each complete trial's calibrated trial-front points on test: accuracy against MFLOPs."""
    results = tables.results
    ref = _reference_flops(tables.spec)
    test = _split_rows(results, "test")
    if test.empty:
        return ThresholdCurvesInfo((), (), 0)
    complete = _complete_mask(results)
    trial_front_ids = {
        str(p) for p in results.loc[results["trial_front"].eq(True) & complete
                                    & results["point_id"].notna(), "point_id"]
    }
    rows = test[complete.loc[test.index] & test["policy"].eq("calibrated")
                & test["point_id"].astype(str).isin(trial_front_ids)]
    trials = {t.trial_id: t for t in trials_info(results)}
    curves: list[ThresholdCurve] = []
    for trial_id, group in rows.groupby(rows["trial_id"].astype(str), sort=False):
        xs = _axis_values(group, "expected_flops", ref)
        ys = _axis_values(group, "accuracy", ref)
        ok = np.isfinite(xs) & np.isfinite(ys)
        if not ok.any():
            continue
        order = np.lexsort((ys[ok], xs[ok]))
        t = trials.get(str(trial_id))
        curves.append(ThresholdCurve(
            trial_id=str(trial_id),
            trial_number=t.trial_number if t else None,
            hypervolume=t.hypervolume if t else math.nan,
            mflops=xs[ok][order],
            accuracy=ys[ok][order],
        ))
    curves.sort(key=lambda c: (c.trial_number is None, c.trial_number or 0, c.trial_id))
    ranked = sorted(curves, key=lambda c: (
        not math.isfinite(c.hypervolume), -c.hypervolume if math.isfinite(c.hypervolume) else 0.0,
        c.trial_number if c.trial_number is not None else math.inf))
    labelled = tuple(c.trial_id for c in ranked[:max(max_legend, 0)])
    return ThresholdCurvesInfo(tuple(curves), labelled, len(curves) - len(labelled))


# ---------------------------------------------------------------------------------------------
# Front table
# ---------------------------------------------------------------------------------------------


class FrontRow(NamedTuple):
    point_id: str
    trial_number: int | None
    trial_id: str
    policy: str
    test_accuracy: float
    calib_accuracy: float
    test_specificity: float
    calib_specificity: float
    test_mflops: float
    calib_mflops: float
    test_flops_norm: float
    calib_flops_norm: float
    thresholds_fine: tuple[float, ...] | None  # rounded to 3 decimals
    thresholds_coarse: tuple[float, ...] | None
    exit_fraction: tuple[float, ...] | None  # on test, rounded to 3 decimals
    config: dict[str, Any]


class FrontTableInfo(NamedTuple):
    rows: tuple[FrontRow, ...]  # sorted by test MFLOPs, then by test accuracy (best first)
    config_names: tuple[str, ...]  # searched hyperparameters, in column order


def front_table_info(tables: RunTables, digits: int = 3) -> FrontTableInfo:
    """The global front's operating points: test scores with calibration scores beside them."""
    results = tables.results
    ref = _reference_flops(tables.spec)
    config_names = tuple(c[len(CONFIG_PREFIX):] for c in _config_columns(results))
    ids = _front_point_ids(results)
    if not ids:
        return FrontTableInfo((), config_names)
    trials = {t.trial_id: t for t in trials_info(results)}
    in_front = results[results["point_id"].astype(str).isin(ids)]

    def one(split: str) -> dict[str, pd.Series]:
        rows = in_front[in_front["split"].eq(split)]
        return {str(r["point_id"]): r for _, r in rows.iterrows()}

    test, calib = one("test"), one("calibration")

    def val(row: pd.Series | None, name: str) -> float:
        if row is None:
            return math.nan
        value = _float(row[name])
        if name == "expected_flops":
            if math.isnan(value) and ref is not None:
                value = _float(row["expected_flops_norm"]) * ref
            return value / MFLOPS
        return value

    out: list[FrontRow] = []
    for pid in ids:
        t, c = test.get(pid), calib.get(pid)
        base = t if t is not None else c
        assert base is not None
        trial = trials.get(str(base["trial_id"]))
        out.append(FrontRow(
            point_id=pid,
            trial_number=_int_or_none(base["trial_number"]),
            trial_id=str(base["trial_id"]),
            policy=str(base["policy"]),
            test_accuracy=val(t, "accuracy"),
            calib_accuracy=val(c, "accuracy"),
            test_specificity=val(t, "specificity"),
            calib_specificity=val(c, "specificity"),
            test_mflops=val(t, "expected_flops"),
            calib_mflops=val(c, "expected_flops"),
            test_flops_norm=val(t, "expected_flops_norm"),
            calib_flops_norm=val(c, "expected_flops_norm"),
            thresholds_fine=_float_list(base["thresholds_fine"], digits),
            thresholds_coarse=_float_list(base["thresholds_coarse"], digits),
            exit_fraction=_float_list(t["exit_fraction"], digits) if t is not None else None,
            config=dict(trial.config) if trial else {},
        ))

    def key(r: FrontRow) -> tuple[Any, ...]:
        x = r.test_mflops if math.isfinite(r.test_mflops) else math.inf
        a = -r.test_accuracy if math.isfinite(r.test_accuracy) else math.inf
        return (x, a, r.point_id)

    out.sort(key=key)
    return FrontTableInfo(tuple(out), config_names)


# ---------------------------------------------------------------------------------------------
# Hypervolume over trials
# ---------------------------------------------------------------------------------------------


class HypervolumeInfo(NamedTuple):
    trial_number: np.ndarray  # trials with a hypervolume and a number, ascending
    hypervolume: np.ndarray
    status: tuple[str, ...]  # complete | partial (failed trials have none)
    running_best: np.ndarray  # running max over COMPLETE trials so far; NaN before the first
    best_trial_number: int | None
    best_hypervolume: float


def hypervolume_info(tables: RunTables) -> HypervolumeInfo:
    """Each trial's calibration hypervolume by trial number, and the running best.

    Partial trials are listed (their hypervolume is at lower fidelity) but do not count towards
    the running best, as they cannot be on a front.
    """
    trials = [t for t in trials_info(tables.results)
              if t.trial_number is not None and math.isfinite(t.hypervolume) and t.status != "failed"]
    numbers = np.array([t.trial_number for t in trials], dtype=np.float64)
    hv = np.array([t.hypervolume for t in trials], dtype=np.float64)
    statuses = tuple(t.status for t in trials)
    running = np.full(len(trials), math.nan)
    best, best_number = -math.inf, None
    for i, t in enumerate(trials):
        if t.status == "complete" and t.hypervolume > best:
            best, best_number = t.hypervolume, t.trial_number
        running[i] = best if best_number is not None else math.nan
    return HypervolumeInfo(numbers, hv, statuses, running, best_number,
                           best if best_number is not None else math.nan)


# ---------------------------------------------------------------------------------------------
# Learning curves
# ---------------------------------------------------------------------------------------------


class TrialCurves(NamedTuple):
    trial_id: str
    trial_number: int | None
    status: str
    epoch: np.ndarray
    train_loss: np.ndarray
    lr: np.ndarray
    hypervolume: np.ndarray  # quick-grid calibration hypervolume per epoch
    fine_acc: np.ndarray  # (epochs, n_exits), NaN padded
    coarse_acc: np.ndarray  # (epochs, n_exits), NaN padded


class LearningCurvesInfo(NamedTuple):
    trials: tuple[TrialCurves, ...]  # by trial number
    n_exits: int

    @property
    def drawable(self) -> bool:
        return any(t.epoch.size for t in self.trials)


def _per_exit(cells: Sequence[Any], n_exits: int) -> np.ndarray:
    out = np.full((len(cells), n_exits), math.nan)
    for i, cell in enumerate(cells):
        values = _float_list(cell) or ()
        out[i, : len(values)] = values[:n_exits]
    return out


def learning_curves_info(tables: RunTables) -> LearningCurvesInfo:
    """Per trial and epoch: training loss, lr, quick hypervolume, per-exit calibration accuracy."""
    curves = tables.curves
    if curves.empty:
        return LearningCurvesInfo((), 0)
    trials = {t.trial_id: t for t in trials_info(tables.results)}
    n_exits = 0
    for col in ("calib_fine_acc_per_exit", "calib_coarse_acc_per_exit"):
        for cell in curves[col]:
            n_exits = max(n_exits, len(_float_list(cell) or ()))
    out: list[TrialCurves] = []
    for trial_id, rows in curves.groupby(curves["trial_id"].map(lambda v: "" if _is_null(v) else str(v)),
                                         sort=False):
        epoch = np.array([_float(v) for v in rows["epoch"]], dtype=np.float64)
        order = np.argsort(epoch, kind="stable")
        rows = rows.iloc[order]
        t = trials.get(str(trial_id))
        col = lambda name: np.array([_float(v) for v in rows[name]], dtype=np.float64)  # noqa: E731
        out.append(TrialCurves(
            trial_id=str(trial_id),
            trial_number=t.trial_number if t else None,
            status=t.status if t else "unknown",
            epoch=epoch[order],
            train_loss=col("train_loss"),
            lr=col("lr"),
            hypervolume=col("hypervolume"),
            fine_acc=_per_exit(list(rows["calib_fine_acc_per_exit"]), n_exits),
            coarse_acc=_per_exit(list(rows["calib_coarse_acc_per_exit"]), n_exits),
        ))
    out.sort(key=lambda c: (c.trial_number is None, c.trial_number or 0, c.trial_id))
    return LearningCurvesInfo(tuple(out), n_exits)


# ---------------------------------------------------------------------------------------------
# Failed trials, spec and provenance
# ---------------------------------------------------------------------------------------------


class FailedTrialsInfo(NamedTuple):
    trials: tuple[TrialInfo, ...]


def failed_trials_info(tables: RunTables) -> FailedTrialsInfo:
    return FailedTrialsInfo(tuple(t for t in trials_info(tables.results) if t.status == "failed"))


class SpecInfo(NamedTuple):
    spec_items: tuple[tuple[str, str], ...]  # flattened "a.b.c" -> text, spec minus provenance
    provenance_items: tuple[tuple[str, str], ...]  # flattened spec["provenance"]
    row_provenance: tuple[tuple[str, str], ...]  # distinct values found in the results rows


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, Mapping) and value:
        out: list[tuple[str, str]] = []
        for k in sorted(value, key=str):
            out.extend(_flatten(value[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str, sort_keys=True)
    return [(prefix or "(value)", text)]


def spec_info(tables: RunTables) -> SpecInfo:
    spec = dict(tables.spec)
    provenance = spec.pop("provenance", None)
    prov_items = tuple(_flatten(provenance, "provenance")) if provenance is not None else ()
    row_prov: list[tuple[str, str]] = []
    results = tables.results
    if not results.empty:
        for col in ("git_rev", "device", "hostname", "versions_json"):
            counts = results[col].map(lambda v: None if _is_null(v) else str(v)).value_counts()
            if len(counts):
                text = "; ".join(f"{v} ({n} rows)" if len(counts) > 1 else str(v)
                                 for v, n in counts.items())
                row_prov.append((col, text))
        created = pd.to_datetime(results["created_at"], errors="coerce", utc=True).dropna()
        if len(created):
            row_prov.append(("created_at", f"{created.min().isoformat()} … {created.max().isoformat()}"))
    return SpecInfo(tuple(_flatten(spec)) if spec else (), prov_items, tuple(row_prov))


# ---------------------------------------------------------------------------------------------
# Everything together
# ---------------------------------------------------------------------------------------------


class ReportInfo(NamedTuple):
    run_dir: Path
    header: HeaderInfo
    trials: tuple[TrialInfo, ...]
    front_flops: FrontPlotInfo
    front_specificity: FrontPlotInfo
    threshold_curves: ThresholdCurvesInfo
    front_table: FrontTableInfo
    hypervolume: HypervolumeInfo
    learning_curves: LearningCurvesInfo
    failed: FailedTrialsInfo
    spec: SpecInfo


def compute_report_info(tables: RunTables) -> ReportInfo:
    return ReportInfo(
        run_dir=tables.run_dir,
        header=header_info(tables),
        trials=trials_info(tables.results),
        front_flops=front_plot_info(tables, "expected_flops", "accuracy"),
        front_specificity=front_plot_info(tables, "specificity", "accuracy"),
        threshold_curves=threshold_curves_info(tables),
        front_table=front_table_info(tables),
        hypervolume=hypervolume_info(tables),
        learning_curves=learning_curves_info(tables),
        failed=failed_trials_info(tables),
        spec=spec_info(tables),
    )


def build_report(run_dir: str | Path, console: Console | None = None) -> Path:
    """Write RUN_DIR/figures/*.png and RUN_DIR/report.html (atomically); return the report's path.

    With a console, also print the terminal summary to it. Everything is computed and drawn in
    memory first, so a failure leaves the previous report (if any) untouched.
    """
    from reports import render  # drawing is imported on use: computing needs no matplotlib

    run_dir = Path(run_dir)
    tables = load_run(run_dir)
    info = compute_report_info(tables)
    figures = render.render_figures(info)  # key -> PNG bytes, drawable figures only
    html = render.render_html(info, figures)

    fig_dir = run_dir / "figures"
    for key, name in FIGURE_NAMES.items():
        path = fig_dir / name
        if key in figures:
            atomic.write_bytes(path, figures[key])
        elif path.exists():  # a figure from an earlier build that has nothing to show now
            path.unlink()
    report = atomic.write_text(run_dir / "report.html", html)
    if console is not None:
        from reports.summary import print_summary

        print_summary(info, console, report_path=report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reports.build",
        description="Build RUN_DIR/report.html and RUN_DIR/figures/ from a search's results.",
    )
    parser.add_argument("run_dir", type=Path, help="the run directory (holds results.parquet)")
    args = parser.parse_args(argv)
    from rich.console import Console

    try:
        build_report(args.run_dir, console=Console())
    except ReportInputError as exc:
        print(f"reports.build: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
