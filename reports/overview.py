"""The run as a whole: the report's header, learning curves, failed trials, spec and provenance, and
`compute_report_info`, which assembles every info object of a report.

Like `reports.compute` (points and fronts), pure: RunTables in, `reports.info` NamedTuples out, and
every metric named by the run's Declaration.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from reports.compute import (
    default_pick,
    exit_fraction_info,
    front_notes,
    front_plot_info,
    front_point_ids,
    front_table_info,
    metric,
    objective_info,
    point_details,
    references,
    trial_curves_info,
    trial_objective,
    trials_info,
)
from reports.info import (
    BestObjective,
    CurvePanel,
    DeclaredColumn,
    FailedTrialsInfo,
    HeaderInfo,
    LearningCurvesInfo,
    ReportInfo,
    SpecInfo,
    TrialCurves,
)
from reports.tables import RunTables
from reports.values import MISSING, float_list, is_null, to_float

__all__ = ["compute_report_info", "failed_trials_info", "header_info", "learning_curves_info", "spec_info"]

COMMON_PANELS = ("train_loss", "lr")  # common curve columns (reports.schema.COMMON_CURVES) drawn for every space


def header_info(tables: RunTables) -> HeaderInfo:
    results, spec, decl = tables.results, tables.spec, tables.declaration

    def named(key: str) -> str:
        v = spec.get(key)
        if isinstance(v, str) and v:
            return v
        first = next((str(x) for x in results[key] if not is_null(x)), None) if key in results.columns else None
        return first or MISSING

    best = None
    objective = trial_objective(decl)
    if objective:
        info = next(o for o in objective_info(tables) if o.metric.name == objective[0])
        best = BestObjective(objective[0], objective[1], info.best_value, info.best_trial_number)
    return HeaderInfo(
        run=named("run"), space=named("space"), dataset=named("dataset"), yields=decl.yields,
        counts=trials_info(tables).counts, best=best, front_size=len(front_point_ids(tables)),
        point_objectives=tuple(metric(decl, n) for n in decl.point_objectives),
        objectives=tuple(decl.objectives.items()),
        conventions=(*decl.notes.items(), *((f"{c.name} (version {c.version})", c.definition) for c in decl.conventions)),
        references=references(tables), default=default_pick(tables),
        notes=(*tables.notes, *front_notes(tables)),
    )


def learning_curves_info(tables: RunTables) -> LearningCurvesInfo:
    """Per trial and epoch: the common curves and the declared epoch panels (one per exit for a vector)."""
    decl, curves = tables.declaration, tables.curves
    panels: list[CurvePanel] = []
    for name in dict.fromkeys((*COMMON_PANELS, *decl.report.epoch_panels)):
        if name not in curves.columns:
            continue
        m, cells = metric(decl, name), list(curves[name])
        vectors = [v for v in (float_list(c) for c in cells) if v]
        if vectors:
            try:
                word = "exit" if decl.column(name).per_exit else "entry"
            except KeyError:
                word = "entry"
            panels += [CurvePanel(name, k, f"{name}, {word} {k}", m.label()) for k in range(max(map(len, vectors)))]
        elif any(math.isfinite(to_float(c)) for c in cells):
            panels.append(CurvePanel(name, None, name, m.label()))
    trials = {t.trial_id: t for t in trials_info(tables).trials}
    out = []
    if not curves.empty:
        ids = curves["trial_id"].map(lambda v: "" if is_null(v) else str(v))
        for trial_id, rows in curves.groupby(ids, sort=False):
            epoch = np.array([to_float(v) for v in rows["epoch"]], dtype=np.float64)
            order = np.argsort(epoch, kind="stable")
            rows = rows.iloc[order]
            values = tuple(_panel_values(rows[p.column], p.exit_index, metric(decl, p.column).scale) for p in panels)
            t = trials.get(str(trial_id))
            out.append(TrialCurves(str(trial_id), t.trial_number if t else None, t.status if t else "unknown",
                                   epoch[order], values))
    out.sort(key=lambda c: (c.trial_number is None, c.trial_number or 0, c.trial_id))
    return LearningCurvesInfo(tuple(panels), tuple(out))


def _panel_values(cells: pd.Series, index: int | None, scale: float) -> np.ndarray:
    if index is None:
        return np.array([to_float(c) for c in cells], dtype=np.float64) / scale
    vectors = [float_list(c) or () for c in cells]
    return np.array([v[index] if index < len(v) else math.nan for v in vectors], dtype=np.float64) / scale


def failed_trials_info(tables: RunTables) -> FailedTrialsInfo:
    return FailedTrialsInfo(tuple(t for t in trials_info(tables).trials if t.status == "failed"))


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, Mapping) and value:
        out: list[tuple[str, str]] = []
        for k in sorted(value, key=str):
            out.extend(_flatten(value[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [(prefix or "(value)", value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True))]


def spec_info(tables: RunTables) -> SpecInfo:
    """spec.json flattened, its provenance, what the rows record, and the declared columns."""
    spec = dict(tables.spec)
    provenance = spec.pop("provenance", None)
    spec.pop("declaration", None)  # shown as its own table of declared columns
    rows: list[tuple[str, str]] = []
    results = tables.results
    if not results.empty:
        for col in ("git_rev", "device", "hostname", "versions_json"):
            counts = results[col].map(lambda v: None if is_null(v) else str(v)).value_counts()
            if len(counts):
                rows.append((col, "; ".join(f"{v} ({n} rows)" if len(counts) > 1 else str(v) for v, n in counts.items())))
        created = pd.to_datetime(results["created_at"], errors="coerce", utc=True).dropna()
        if len(created):
            rows.append(("created_at", f"{created.min().isoformat()} … {created.max().isoformat()}"))
    decl = tables.declaration
    declared = tuple(DeclaredColumn(group, c.name, c.kind + (" per exit" if c.per_exit else ""), c.direction, c.unit,
                                    c.description)
                     for group, cols in (("point", decl.point), ("policy", decl.policy), ("trial", decl.trial),
                                         ("curve", decl.curves)) for c in cols)
    return SpecInfo(tuple(_flatten(spec)) if spec else (),
                    tuple(_flatten(provenance, "provenance")) if provenance is not None else (), tuple(rows), declared)


def compute_report_info(tables: RunTables) -> ReportInfo:
    """Everything a report shows."""
    return ReportInfo(
        run_dir=tables.run_dir,
        header=header_info(tables),
        trials=trials_info(tables),
        fronts=tuple(front_plot_info(tables, x, y) for x, y in tables.declaration.report.fronts),
        trial_curves=trial_curves_info(tables),
        front_table=front_table_info(tables),
        exit_fractions=exit_fraction_info(tables),
        objectives=objective_info(tables),
        learning_curves=learning_curves_info(tables),
        failed=failed_trials_info(tables),
        spec=spec_info(tables),
        points=point_details(tables),
    )
