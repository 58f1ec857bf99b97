"""What each figure and table of a report shows, as plain NamedTuples (no computing, no drawing).

`reports.compute` fills these from a run's tables and its space's Declaration; `reports.figures`,
`reports.html` and `reports.summary` only render them. Tests check a report's content here, without
drawing anything. Every metric is named as the Declaration names it; values on figure axes are
already divided by their unit's scale (`Metric.scale`); values in per-point dicts are as stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "BestObjective",
    "CurvePanel",
    "DeclaredColumn",
    "DefaultPick",
    "ExitFractionBar",
    "ExitFractionInfo",
    "FailedTrialsInfo",
    "FrontPlotInfo",
    "FrontRow",
    "FrontTableInfo",
    "Group",
    "Guide",
    "HeaderInfo",
    "LearningCurvesInfo",
    "Metric",
    "ObjectiveInfo",
    "PointDetail",
    "PointSet",
    "Reference",
    "ReportInfo",
    "SpecInfo",
    "TrialCounts",
    "TrialCurve",
    "TrialCurves",
    "TrialCurvesInfo",
    "TrialInfo",
    "TrialsInfo",
]


class Metric(NamedTuple):
    """A declared column as the report shows it."""

    name: str
    unit: str  # as declared ("" for plain numbers)
    shown_unit: str  # after scaling, e.g. "MFLOPs" for "FLOPs"
    scale: float  # shown value = stored value / scale
    direction: str | None  # "max" | "min" | None
    description: str

    def label(self, split: str = "") -> str:
        """Axis or column label: name, shown unit, split ("accuracy [fraction] (test)")."""
        unit = f" [{self.shown_unit}]" if self.shown_unit else ""
        return f"{self.name}{unit}" + (f" ({split})" if split else "")


# -- trials ------------------------------------------------------------------------------------


class TrialInfo(NamedTuple):
    trial_id: str
    trial_number: int | None
    status: str  # complete | partial | failed (or whatever the rows say; "unknown" when none)
    error: str | None
    epochs_done: int | None
    epochs_planned: int | None
    fidelity: float
    values: dict[str, Any]  # declared trial columns (plain values; None when null)
    config: dict[str, Any]  # searched values (config.* columns, else config_json), nulls dropped


class TrialCounts(NamedTuple):
    complete: int
    partial: int
    failed: int
    other: int  # any other status
    interrupted: int = 0  # the run was stopped while they ran: they restart on --resume
    running: int = 0

    @property
    def total(self) -> int:
        return self.complete + self.partial + self.failed + self.other + self.interrupted + self.running


class TrialsInfo(NamedTuple):
    """The trials overview table."""

    trials: tuple[TrialInfo, ...]  # by trial number, unnumbered last
    counts: TrialCounts
    columns: tuple[Metric, ...]  # the declared scalar trial columns
    config_names: tuple[str, ...]  # searched values, in column order


# -- points and fronts ---------------------------------------------------------------------------


class PointDetail(NamedTuple):
    """One operating point, for its hover text: values as stored (unscaled)."""

    point_id: str
    trial_id: str
    trial_number: int | None
    status: str
    policy: str
    reference: bool
    test: dict[str, Any]  # declared table metrics on the test split
    calibration: dict[str, Any]  # the same on the calibration split
    params: dict[str, Any]  # policy columns; vectors rounded to 3 decimals
    marks: tuple[str, ...]  # declared marks that are True for this point (on calibration)
    key_config: dict[str, Any]  # the declaration's key config values of the point's trial


class PointSet(NamedTuple):
    x: np.ndarray  # shown values (divided by the axis' scale)
    y: np.ndarray
    point_id: tuple[str, ...]

    def __len__(self) -> int:  # type: ignore[override]
        return len(self.point_id)


class Group(NamedTuple):
    """Points drawn alike: one policy's points, or the points carrying one mark."""

    name: str
    points: PointSet


class Guide(NamedTuple):
    x: float  # shown value
    label: str


class FrontPlotInfo(NamedTuple):
    """One 2-D projection of the run's global front, on test scores."""

    x: Metric
    y: Metric
    front: PointSet  # test rows of the points chosen on calibration (complete trials), by x then y
    staircase: np.ndarray  # (k, 2) attainment staircase of the front in this projection; (0, 2) if none
    background: tuple[Group, ...]  # other non-reference points of complete trials, by policy
    partial: tuple[Group, ...]  # non-reference points of partial trials, by policy (never on a front)
    references: tuple[Group, ...]  # reference policies of complete trials, by policy name
    marks: tuple[Group, ...]  # points of complete trials carrying a declared mark, by mark
    default: PointSet  # the default operating point, when it has a test row (0 or 1 point)
    guide: Guide | None  # the largest network's cost on the x axis, when known
    policies: tuple[str, ...]  # every non-reference policy of the run: one style each, in every figure
    skipped: int  # rows left out because a coordinate was null
    front_groups: tuple[Group, ...] = ()  # the front's points by policy: drawn in the front's colour, the policy's marker

    @property
    def drawable(self) -> bool:
        groups = (*self.background, *self.partial, *self.references)
        return len(self.front) + sum(len(g.points) for g in groups) > 0


class TrialCurve(NamedTuple):
    trial_id: str
    trial_number: int | None
    value: float  # the ranking objective's value (NaN when not ranked by one)
    points: PointSet  # the trial's own front on test, sorted by x
    line: np.ndarray  # (k, 2): its staircase in this projection (the points in x order when an axis has no direction)


class TrialCurvesInfo(NamedTuple):
    x: Metric
    y: Metric
    ranked_by: str | None  # the outer objective that picks the legend's trials (None: trial number)
    curves: tuple[TrialCurve, ...]  # complete trials, by trial number
    labelled: tuple[str, ...]  # trial ids with a legend entry, best first
    hidden_in_legend: int


class DefaultPick(NamedTuple):
    """The point the declaration's selection rule picks, on calibration scores."""

    rule: str
    point_id: str | None  # None when no point meets the rule
    trial_number: int | None
    policy: str | None
    calibration: dict[str, Any]  # declared table metrics of the pick
    test: dict[str, Any]
    error: str | None  # why nothing was picked


class FrontRow(NamedTuple):
    point_id: str
    trial_id: str
    trial_number: int | None
    policy: str
    test: dict[str, Any]  # declared table metrics, as stored
    calibration: dict[str, Any]
    params: dict[str, Any]  # policy columns; vectors rounded to 3 decimals
    exit_fraction: tuple[float, ...] | None  # the declared exit-fraction vector on test
    marks: tuple[str, ...]
    config: dict[str, Any]
    default: bool  # the default operating point


class FrontTableInfo(NamedTuple):
    rows: tuple[FrontRow, ...]  # sorted by the first front's x, then its y best first
    metrics: tuple[Metric, ...]  # the declared table metrics
    params: tuple[str, ...]  # policy column names
    exit_fraction: Metric | None
    marks: tuple[str, ...]
    config_names: tuple[str, ...]  # searched values that some front row has
    default: DefaultPick


class ExitFractionBar(NamedTuple):
    point_id: str
    label: str  # "#2 calibrated/1"
    fractions: tuple[float, ...]  # one per exit, on test


class ExitFractionInfo(NamedTuple):
    metric: Metric
    bars: tuple[ExitFractionBar, ...]  # the front points, in the front table's order
    n_exits: int


# -- over trials -----------------------------------------------------------------------------------


class ObjectiveInfo(NamedTuple):
    """An outer objective that is a trial value, by trial number."""

    metric: Metric  # direction from the declaration's outer objectives
    trial_number: np.ndarray  # trials with a value and a number, ascending
    value: np.ndarray
    status: tuple[str, ...]  # complete | partial
    running_best: np.ndarray  # over COMPLETE trials so far; NaN before the first
    best_trial_number: int | None
    best_value: float


class CurvePanel(NamedTuple):
    column: str  # a curve column
    exit_index: int | None  # the entry of a per-exit vector; None for a scalar column
    title: str
    label: str  # y-axis label


class TrialCurves(NamedTuple):
    trial_id: str
    trial_number: int | None
    status: str
    epoch: np.ndarray
    values: tuple[np.ndarray, ...]  # one per panel, aligned with `epoch`


class LearningCurvesInfo(NamedTuple):
    panels: tuple[CurvePanel, ...]
    trials: tuple[TrialCurves, ...]  # by trial number

    @property
    def drawable(self) -> bool:
        return bool(self.panels) and any(t.epoch.size for t in self.trials)


class FailedTrialsInfo(NamedTuple):
    trials: tuple[TrialInfo, ...]


# -- header and spec --------------------------------------------------------------------------------


class BestObjective(NamedTuple):
    name: str
    direction: str
    value: float  # NaN when no complete trial has one
    trial_number: int | None


class Reference(NamedTuple):
    """A cost of the largest network (spec["references"]), in the unit of the column it maps to."""

    name: str
    value: float  # shown value
    unit: str  # shown unit
    column: str | None  # the declared column measured in this cost, if any


class DeclaredColumn(NamedTuple):
    group: str  # point | policy | trial | curve
    name: str
    kind: str
    direction: str | None
    unit: str
    description: str


class HeaderInfo(NamedTuple):
    run: str
    space: str
    dataset: str
    yields: str  # "points" | "point"
    counts: TrialCounts
    best: BestObjective | None  # the first outer objective, when it is a trial value
    front_size: int  # global-front points that are drawn (complete trials, non-reference)
    point_objectives: tuple[Metric, ...]
    objectives: tuple[tuple[str, str], ...]  # outer objectives and their directions
    conventions: tuple[tuple[str, str], ...]  # the declaration's notes, then its versioned conventions
    references: tuple[Reference, ...]
    default: DefaultPick
    notes: tuple[str, ...]  # absent inputs and inconsistencies worth stating


class SpecInfo(NamedTuple):
    spec_items: tuple[tuple[str, str], ...]  # flattened spec.json minus provenance and declaration
    provenance_items: tuple[tuple[str, str], ...]  # flattened spec["provenance"]
    row_provenance: tuple[tuple[str, str], ...]  # distinct values found in the results rows
    declaration: tuple[DeclaredColumn, ...]


class ReportInfo(NamedTuple):
    run_dir: Path
    header: HeaderInfo
    trials: TrialsInfo
    fronts: tuple[FrontPlotInfo, ...]  # one per declared front pair
    trial_curves: TrialCurvesInfo | None  # None when the declaration asks for none
    front_table: FrontTableInfo
    exit_fractions: ExitFractionInfo | None  # None when the declaration has no exit fraction
    objectives: tuple[ObjectiveInfo, ...]  # outer objectives that are trial values
    learning_curves: LearningCurvesInfo
    failed: FailedTrialsInfo
    spec: SpecInfo
    points: dict[str, PointDetail]  # every drawn point, by point id (hover texts)
