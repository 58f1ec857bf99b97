"""Compute what every figure and table of a report shows: RunTables in, `reports.info` NamedTuples out.

Pure functions, no drawing: tests check what a figure will show without rendering it. Nothing here
names a family's metrics: the axes, table columns, marks, exit fractions, curve panels, outer
objectives and the default operating point all come from the run's Declaration.

Conventions used throughout:

* fronts are drawn from the TEST rows of the points chosen on calibration (`on_front`), so the
  figures show held-out scores; calibration scores sit beside them in the table;
* only trials with status "complete" are eligible for a front: a partial trial (stopped early) is
  drawn fainter and never on a front, and an `on_front` flag on one is reported in the notes;
* reference policies (`reference`) are drawn for comparison and never counted on a front;
* a point carries a declared mark when its calibration row says so (points are chosen on
  calibration), or its test row when the calibration row has no value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from reports.info import (
    DefaultPick,
    ExitFractionBar,
    ExitFractionInfo,
    FrontPlotInfo,
    FrontRow,
    FrontTableInfo,
    Group,
    Guide,
    Metric,
    ObjectiveInfo,
    PointDetail,
    PointSet,
    Reference,
    TrialCounts,
    TrialCurve,
    TrialCurvesInfo,
    TrialInfo,
    TrialsInfo,
)
from reports.schema import CONFIG_PREFIX
from reports.tables import RunTables
from reports.values import fmt_num, float_list, is_null, plain, to_float, to_int, to_str, trial_label, unit_scale
from trainables.contract import Declaration
from trainables.pareto import non_dominated_mask

__all__ = [
    "COST_COLUMNS",
    "default_pick",
    "exit_fraction_info",
    "front_notes",
    "front_plot_info",
    "front_point_ids",
    "front_table_info",
    "metric",
    "objective_info",
    "point_details",
    "references",
    "staircase",
    "trial_counts",
    "trial_curves_info",
    "trial_objective",
    "trials_info",
]

#: How a declared column is matched to a cost of the largest network (spec["references"], e.g.
#: {"flops": 2.6e7}): the column is named after the cost itself or its expectation over inputs
#: ("flops", "expected_flops"). Kept this small on purpose: a column matching neither gets no guide.
COST_COLUMNS = ("{cost}", "expected_{cost}")
PARAM_DIGITS = 3  # policy parameters (e.g. thresholds) are shown rounded to this many decimals


def metric(decl: Declaration, name: str, direction: str | None = None) -> Metric:
    """A column as the report shows it; common columns (e.g. a loss curve) have no unit or direction."""
    try:
        col = decl.column(name)
    except KeyError:
        col = None
    unit = col.unit if col else ""
    scale, shown = unit_scale(unit)
    return Metric(name, unit, shown, scale, direction or (col.direction if col else None), col.description if col else "")


# ---------------------------------------------------------------------------------------------------- rows


def _trial_ids(df: pd.DataFrame) -> pd.Series:
    return df["trial_id"].map(lambda v: "" if is_null(v) else str(v))


def _status(results: pd.DataFrame) -> pd.Series:
    """Each row's trial status, taken per trial: the trial's first non-null status, else "unknown"."""
    if results.empty:
        return pd.Series([], index=results.index, dtype=object)
    status = results["status"].map(lambda v: None if is_null(v) or v == "" else str(v))
    first = status.groupby(_trial_ids(results), sort=False).transform("first")
    return first.where(first.notna(), "unknown")


class _Rows(NamedTuple):
    """The results rows as every computation here needs them."""

    status: pd.Series  # per row: its trial's status
    reference: pd.Series  # per row: a reference policy
    test: pd.DataFrame  # test rows with a point id
    test_by_id: dict[str, dict[str, Any]]
    calib_by_id: dict[str, dict[str, Any]]
    front_ids: frozenset[str]  # drawable global-front points: on_front, complete trial, not a reference
    marks: dict[str, tuple[str, ...]]  # point id -> declared marks it carries


def _rows(tables: RunTables) -> _Rows:
    results, decl = tables.results, tables.declaration
    status = _status(results)
    reference = results["reference"].eq(True)
    has_point = results["point_id"].map(lambda v: not is_null(v)).astype(bool)  # (an empty map is not boolean)
    test = results[has_point & results["split"].eq("test")]
    calib = results[has_point & results["split"].eq("calibration")]
    test_by_id = {str(r["point_id"]): r for r in test.to_dict("records")}
    calib_by_id = {str(r["point_id"]): r for r in calib.to_dict("records")}
    chosen = results["on_front"].eq(True) & status.eq("complete") & ~reference & has_point
    marks: dict[str, tuple[str, ...]] = {}
    for pid in {*test_by_id, *calib_by_id}:
        row_c, row_t = calib_by_id.get(pid, {}), test_by_id.get(pid, {})
        flags = [(row_c.get(m) if not is_null(row_c.get(m)) else row_t.get(m)) for m in decl.report.marks]
        marks[pid] = tuple(m for m, v in zip(decl.report.marks, flags) if _flag(v))
    return _Rows(status, reference, test, test_by_id, calib_by_id,
                 frozenset(str(p) for p in results.loc[chosen, "point_id"]), marks)


def _flag(v: Any) -> bool:
    """A bool cell (numpy or Python) as a bool; null is False."""
    return not is_null(v) and bool(v)


def _first(values: pd.Series) -> Any:
    return next((v for v in values if not is_null(v)), None)


def _values(row: Mapping[str, Any] | None, names: Sequence[str], digits: int | None = None) -> dict[str, Any]:
    out = {}
    for n in names:
        v = plain(row.get(n)) if row is not None else None
        if digits is not None and isinstance(v, tuple):
            v = float_list(v, digits)
        out[n] = v
    return out


def front_point_ids(tables: RunTables) -> frozenset[str]:
    """The drawable global front: points flagged on_front, of complete trials, not reference policies."""
    return _rows(tables).front_ids


def front_notes(tables: RunTables) -> list[str]:
    """Inconsistencies of the on_front flags worth stating in the report (the front is drawn without them)."""
    results, r = tables.results, _rows(tables)
    flagged = results["on_front"].eq(True)
    notes = []
    odd = flagged & ~r.status.eq("complete")
    if odd.any():
        notes.append(f"{int(odd.sum())} on_front row(s) from {results.loc[odd, 'trial_id'].nunique()} trial(s) that are "
                     "not complete are not drawn on the front (only complete trials are eligible).")
    odd = flagged & r.reference & r.status.eq("complete")
    if odd.any():
        notes.append(f"{int(odd.sum())} on_front row(s) of reference policies are not drawn on the front "
                     "(reference policies are drawn for comparison only).")
    no_test = sorted(r.front_ids - set(r.test_by_id))
    if no_test:
        notes.append(f"{len(no_test)} global-front point(s) have no test row and are not drawn (e.g. {no_test[0]}).")
    one_split = sorted(pid for pid in r.front_ids if pid in r.test_by_id and pid in r.calib_by_id
                       and not (_flag(r.test_by_id[pid].get("on_front")) and _flag(r.calib_by_id[pid].get("on_front"))))
    if one_split:
        notes.append(f"{len(one_split)} global-front point(s) carry on_front on one split only (e.g. {one_split[0]}); "
                     "they are drawn as on the front.")
    return notes


# ---------------------------------------------------------------------------------------------------- trials


def _trial_config(rows: pd.DataFrame) -> dict[str, Any]:
    config = {c[len(CONFIG_PREFIX):]: plain(_first(rows[c])) for c in rows.columns if str(c).startswith(CONFIG_PREFIX)}
    config = {k: v for k, v in config.items() if v is not None}
    if not config:  # tables written without config.* columns still carry the config as JSON
        try:
            parsed = json.loads(_first(rows["config_json"]) or "")
        except (TypeError, ValueError):
            parsed = None
        if isinstance(parsed, dict):
            config = {str(k): v for k, v in sorted(parsed.items())}
    return config


def trial_counts(trials: Sequence[TrialInfo]) -> TrialCounts:
    statuses = [t.status for t in trials]
    named = ("complete", "partial", "failed", "interrupted", "running")
    complete, partial, failed, interrupted, running = (statuses.count(s) for s in named)
    other = len(statuses) - sum(statuses.count(s) for s in named)
    return TrialCounts(complete, partial, failed, other, interrupted, running)


def trials_info(tables: RunTables) -> TrialsInfo:
    """One entry per trial id, sorted by trial number (unnumbered trials last)."""
    results, decl = tables.results, tables.declaration
    trials: list[TrialInfo] = []
    if not results.empty:
        for trial_id, rows in results.groupby(_trial_ids(results), sort=False):
            trials.append(TrialInfo(
                trial_id=str(trial_id),
                trial_number=to_int(_first(rows["trial_number"])),
                status=to_str(_first(rows["status"])) or "unknown",
                error=to_str(_first(rows["error"])),
                epochs_done=to_int(_first(rows["epochs_done"])),
                epochs_planned=to_int(_first(rows["epochs_planned"])),
                fidelity=to_float(_first(rows["fidelity"])),
                values={c.name: plain(_first(rows[c.name])) for c in decl.trial},
                config=_trial_config(rows),
            ))
    trials.sort(key=lambda t: (t.trial_number is None, t.trial_number or 0, t.trial_id))
    names: dict[str, None] = {}
    for t in trials:
        names.update(dict.fromkeys(t.config))
    columns = tuple(metric(decl, c.name) for c in decl.trial if c.kind != "floats")
    return TrialsInfo(tuple(trials), trial_counts(trials), columns, tuple(names))


# ---------------------------------------------------------------------------------------------------- points


def point_details(tables: RunTables) -> dict[str, PointDetail]:
    """Every point with a test row (those are the drawn ones), for hover texts."""
    decl, r = tables.declaration, _rows(tables)
    trials = {t.trial_id: t for t in trials_info(tables).trials}
    params = [c.name for c in decl.policy]
    out = {}
    for pid, row in r.test_by_id.items():
        trial = trials.get(str(row.get("trial_id")))
        out[pid] = PointDetail(
            point_id=pid, trial_id=str(row.get("trial_id")), trial_number=trial.trial_number if trial else None,
            status=trial.status if trial else "unknown", policy=to_str(row.get("policy")) or "",
            reference=_flag(row.get("reference")),
            test=_values(row, decl.report.table), calibration=_values(r.calib_by_id.get(pid), decl.report.table),
            params=_values(row, params, PARAM_DIGITS), marks=r.marks.get(pid, ()),
            key_config={k: trial.config[k] for k in decl.report.key_config if trial and k in trial.config},
        )
    return out


def references(tables: RunTables) -> tuple[Reference, ...]:
    """spec["references"] (the largest network's costs), each in the unit of the column it maps to."""
    refs = tables.spec.get("references")
    if not isinstance(refs, Mapping):
        return ()
    decl = tables.declaration
    out = []
    for cost, value in refs.items():
        names = {p.format(cost=cost) for p in COST_COLUMNS}
        col = next((c for c in (*decl.point, *decl.trial) if c.name in names and c.kind != "floats"), None)
        scale, unit = unit_scale(col.unit if col else "")
        out.append(Reference(str(cost), to_float(value) / scale, unit, col.name if col else None))
    return tuple(out)


def staircase(x: np.ndarray, y: np.ndarray, x_maximize: bool, y_maximize: bool) -> np.ndarray:
    """Vertices of the attainment staircase of the 2-D non-dominated subset of (x, y).

    Walks the boundary of the region those points dominate, from the best-x end: between two
    consecutive points it keeps the earlier point's y, then steps to the next one. (0, 2) when no
    point is finite.
    """
    pts = np.column_stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) == 0:
        return np.zeros((0, 2))
    pts = np.unique(pts[non_dominated_mask(pts, [x_maximize, y_maximize])], axis=0)
    p = pts[np.argsort(-pts[:, 0] if x_maximize else pts[:, 0], kind="stable")]  # along this walk y improves
    verts = [p[0]]
    for prev, cur in zip(p[:-1], p[1:]):
        verts += [np.array([cur[0], prev[1]]), cur]
    return np.array(verts)


def _point_set(rows: pd.DataFrame, x: Metric, y: Metric) -> tuple[PointSet, int]:
    """The finite points of `rows` (shown values), and how many rows had a null coordinate."""
    xs = np.array([to_float(v) for v in rows[x.name]], dtype=np.float64) / x.scale
    ys = np.array([to_float(v) for v in rows[y.name]], dtype=np.float64) / y.scale
    ok = np.isfinite(xs) & np.isfinite(ys)
    ids = tuple(str(p) for p, keep in zip(rows["point_id"], ok) if keep)
    return PointSet(xs[ok], ys[ok], ids), int((~ok).sum())


def _sorted(ps: PointSet) -> PointSet:
    order = np.lexsort((ps.y, ps.x))
    return PointSet(ps.x[order], ps.y[order], tuple(ps.point_id[i] for i in order))


def front_plot_info(tables: RunTables, x: str, y: str) -> FrontPlotInfo:
    """What one front figure shows: `y` against `x` on test scores (see the module's conventions)."""
    decl, r = tables.declaration, _rows(tables)
    xm, ym = metric(decl, x), metric(decl, y)
    test = r.test
    status, ref = r.status.loc[test.index], r.reference.loc[test.index]
    policy = test["policy"].map(lambda v: "" if is_null(v) else str(v))
    ids = test["point_id"].astype(str)
    complete = status.eq("complete")
    skipped = 0

    def points(mask: pd.Series, count: bool = True) -> PointSet:
        nonlocal skipped
        ps, s = _point_set(test[mask], xm, ym)
        skipped += s if count else 0
        return _sorted(ps)

    def groups(mask: pd.Series) -> tuple[Group, ...]:
        out = (Group(name, points(mask & policy.eq(name))) for name in sorted(set(policy[mask])))
        return tuple(g for g in out if len(g.points))

    in_front = ids.isin(r.front_ids)
    front = points(complete & in_front)
    background = groups(complete & ~ref & ~in_front)
    partial = groups(status.eq("partial") & ~ref)
    reference_groups = groups(complete & ref)
    marks = tuple(Group(m, points(complete & ids.map(lambda p, m=m: m in r.marks.get(p, ())).astype(bool), count=False))
                  for m in decl.report.marks)
    pick = default_pick(tables).point_id
    default = points(ids.eq(pick) & complete, count=False) if pick else _sorted(_point_set(test[:0], xm, ym)[0])
    refs = {f.column: f for f in references(tables) if f.column}
    guide = Guide(refs[x].value, f"largest network: {fmt_num(refs[x].value)} {refs[x].unit}".rstrip()) if x in refs else None
    policies = tuple(sorted({p for p, is_ref in zip(policy, ref) if not is_ref and p}))
    # a staircase needs a direction on both axes; a front pair with an undirected axis gets none
    stairs = (staircase(front.x, front.y, xm.direction == "max", ym.direction == "max")
              if xm.direction and ym.direction else np.zeros((0, 2)))
    return FrontPlotInfo(xm, ym, front, stairs, background, partial, reference_groups,
                         tuple(g for g in marks if len(g.points)), default, guide, policies, skipped,
                         groups(complete & in_front))


def trial_curves_info(tables: RunTables, max_legend: int = 10) -> TrialCurvesInfo | None:
    """Each complete trial's own front (non-reference trial_front points, test scores) as a line."""
    decl = tables.declaration
    if not decl.report.trial_curve:
        return None
    x, y = (metric(decl, n) for n in decl.report.trial_curve)
    r, trials = _rows(tables), {t.trial_id: t for t in trials_info(tables).trials}
    ranked_by = trial_objective(decl)
    own = {pid for pid, row in {**r.calib_by_id, **r.test_by_id}.items() if _flag(row.get("trial_front"))}
    test = r.test
    mask = r.status.loc[test.index].eq("complete") & ~r.reference.loc[test.index] & test["point_id"].astype(str).isin(own)
    curves = []
    for trial_id, rows in test[mask].groupby(_trial_ids(test[mask]), sort=False):
        ps, _ = _point_set(rows, x, y)
        t = trials.get(str(trial_id))
        if len(ps) and t is not None:
            value = to_float(t.values.get(ranked_by[0])) if ranked_by else math.nan
            ps = _sorted(ps)
            # a trial's front spans more objectives than these two: joining its points in x order would zigzag
            line = (staircase(ps.x, ps.y, x.direction == "max", y.direction == "max") if x.direction and y.direction
                    else np.column_stack([ps.x, ps.y]))
            curves.append(TrialCurve(str(trial_id), t.trial_number, value, ps, line))
    curves.sort(key=lambda c: (c.trial_number is None, c.trial_number or 0, c.trial_id))
    sign = -1.0 if ranked_by and ranked_by[1] == "max" else 1.0
    ranked = sorted(curves, key=lambda c: (not math.isfinite(c.value), sign * c.value if math.isfinite(c.value) else 0.0,
                                           c.trial_number if c.trial_number is not None else math.inf))
    labelled = tuple(c.trial_id for c in ranked[:max(max_legend, 0)])
    return TrialCurvesInfo(x, y, ranked_by[0] if ranked_by else None, tuple(curves), labelled, len(curves) - len(labelled))


def trial_objective(decl: Declaration) -> tuple[str, str] | None:
    """The first outer objective, with its direction, when it is a (scalar) trial value."""
    scalars = {c.name for c in decl.trial if c.kind != "floats"}
    first = next(iter(decl.objectives.items()), None)
    return first if first and first[0] in scalars else None


# ---------------------------------------------------------------------------------------------------- front table


def default_pick(tables: RunTables) -> DefaultPick:
    """The declaration's default operating point among the drawable front's calibration rows."""
    decl, r = tables.declaration, _rows(tables)
    directions = {c.name: c.direction for c in decl.point}
    rule = decl.selection.describe(directions)
    rows = [{k: plain(v) for k, v in r.calib_by_id[pid].items()} for pid in sorted(r.front_ids) if pid in r.calib_by_id]
    try:
        chosen = decl.selection.choose(rows, directions)
    except ValueError as exc:
        return DefaultPick(rule, None, None, None, {}, {}, str(exc))
    pid = str(chosen["point_id"])
    return DefaultPick(rule, pid, to_int(chosen.get("trial_number")), to_str(chosen.get("policy")),
                       _values(chosen, decl.report.table), _values(r.test_by_id.get(pid), decl.report.table), None)


def _front_order(decl: Declaration) -> tuple[str, str | None]:
    if decl.report.fronts:
        return decl.report.fronts[0]
    return decl.point_objectives[0], (decl.point_objectives[1] if len(decl.point_objectives) > 1 else None)


def front_table_info(tables: RunTables) -> FrontTableInfo:
    """The drawable global front's points: test scores with calibration scores beside them."""
    decl, r = tables.declaration, _rows(tables)
    trials = {t.trial_id: t for t in trials_info(tables).trials}
    pick = default_pick(tables)
    x, y = _front_order(decl)
    y_sign = -1.0 if y and decl.direction(y) == "max" else 1.0
    params = tuple(c.name for c in decl.policy)
    ef = decl.report.exit_fraction

    def key(pid: str) -> tuple[float, float, str]:
        row = r.test_by_id.get(pid, {})
        xv, yv = to_float(row.get(x)), to_float(row.get(y)) * y_sign if y else 0.0
        return (xv if math.isfinite(xv) else math.inf, yv if math.isfinite(yv) else math.inf, pid)

    rows = []
    for pid in sorted(r.front_ids, key=key):
        t, c = r.test_by_id.get(pid), r.calib_by_id.get(pid)
        base = t if t is not None else c
        assert base is not None  # a front id comes from a row of one of the two splits
        trial = trials.get(str(base.get("trial_id")))
        rows.append(FrontRow(
            point_id=pid, trial_id=str(base.get("trial_id")), trial_number=trial.trial_number if trial else None,
            policy=to_str(base.get("policy")) or "", test=_values(t, decl.report.table),
            calibration=_values(c, decl.report.table), params=_values(base, params, PARAM_DIGITS),
            exit_fraction=float_list(t.get(ef), PARAM_DIGITS) if ef and t is not None else None,
            marks=r.marks.get(pid, ()), config=dict(trial.config) if trial else {}, default=pid == pick.point_id))
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row.config))
    return FrontTableInfo(tuple(rows), tuple(metric(decl, n) for n in decl.report.table), params,
                          metric(decl, ef) if ef else None, decl.report.marks, tuple(names), pick)


def exit_fraction_info(tables: RunTables) -> ExitFractionInfo | None:
    """The declared exit-fraction vector of each front point on test, in the front table's order."""
    decl = tables.declaration
    if not decl.report.exit_fraction:
        return None
    bars = tuple(ExitFractionBar(row.point_id, f"{trial_label(row.trial_number, row.trial_id)} "
                                               f"{row.point_id.removeprefix(row.trial_id + '/')}", row.exit_fraction)
                 for row in front_table_info(tables).rows if row.exit_fraction)
    return ExitFractionInfo(metric(decl, decl.report.exit_fraction), bars, max((len(b.fractions) for b in bars), default=0))


# ---------------------------------------------------------------------------------------------------- objectives


def objective_info(tables: RunTables) -> tuple[ObjectiveInfo, ...]:
    """Each outer objective that is a trial value, by trial number, with the running best.

    Partial trials are listed (their value is at lower fidelity) but never count towards the
    running best or the best, as they cannot be on a front.
    """
    decl = tables.declaration
    scalars = {c.name for c in decl.trial if c.kind != "floats"}
    trials = trials_info(tables).trials
    out = []
    for name, direction in decl.objectives.items():
        if name not in scalars:
            continue
        shown = [t for t in trials if t.trial_number is not None and t.status != "failed"
                 and math.isfinite(to_float(t.values.get(name)))]
        values = np.array([to_float(t.values[name]) for t in shown], dtype=np.float64)
        better = (lambda a, b: a > b) if direction == "max" else (lambda a, b: a < b)
        running = np.full(len(shown), math.nan)
        best, best_number = math.nan, None
        for i, (t, v) in enumerate(zip(shown, values)):
            if t.status == "complete" and (best_number is None or better(v, best)):
                best, best_number = float(v), t.trial_number
            running[i] = best
        out.append(ObjectiveInfo(metric(decl, name, direction), np.array([t.trial_number for t in shown], dtype=np.float64),
                                 values, tuple(t.status for t in shown), running, best_number, best))
    return tuple(out)
