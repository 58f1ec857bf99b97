"""The family contract: what a space declares about one operating point, and what its trials yield.

A family (gran_hbn, branchynet, ...) declares, as data:

* its metrics: name, kind, direction (max, min or none), unit and a short description, split into
  values of an operating point that differ by split (`point`: accuracy, expected cost, exit
  fractions...), a point's policy parameters (`policy`: thresholds, a mode's parameter...), and
  values of the whole trial (`trial`: its hypervolume, its exits' costs...);
* which point metrics are the point objectives (the axes of every front);
* what a trial yields: many calibrated points (`yields="points"`; the outer search sees one scalar
  per trial, e.g. the hypervolume of its calibration front) or one point (`yields="point"`; the
  outer search is multi-objective over that point's objectives);
* the report it wants (front pairs, table columns, per-trial curve, marks) and the default rule
  by which `search.load.load_operating_point` picks a point (always on calibration scores);
* the versioned conventions its figures depend on (`Convention`: e.g. how far apart two classes
  are), so that figures made under different versions are never compared silently:
  `convention_changes` says, in plain sentences, where a run's stored declaration and the code's
  differ (a report notes it; `--resume` refuses; recalibration records it).

The results table of a run follows from the declaration (`reports.schema`), the report is drawn
from it, and shared code never names a family's metrics. The declaration travels as JSON in the
run's spec.json, so a report can be rebuilt without importing the family's code.

Pure data: no torch, no pyarrow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KINDS", "Column", "Convention", "Declaration", "Outcome", "ReportSpec", "Selection", "convention_changes"]

#: "float" | "int" | "bool" | "str" scalars; "floats": a list of floats (per exit when `per_exit`)
KINDS = ("float", "int", "bool", "str", "floats")
DIRECTIONS = ("max", "min", None)


@dataclass(frozen=True)
class Column:
    """One declared value of a family, and so one typed column of its results table."""

    name: str
    kind: str = "float"
    direction: str | None = None  # "max" | "min" | None (a value that is not optimised)
    unit: str = ""  # "fraction", "FLOPs", "ms", "ratio", ... ("" for plain numbers)
    description: str = ""
    per_exit: bool = False  # a "floats" vector with one entry per exit

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"column {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"column {self.name!r}: direction {self.direction!r} is not max, min or None")
        if self.per_exit and self.kind != "floats":
            raise ValueError(f"column {self.name!r}: a per-exit value has kind 'floats'")


@dataclass(frozen=True)
class Convention:
    """A definition some declared figures are computed with, and its version.

    Two runs whose figures were computed under different versions of a convention are not
    comparable, so a run stores the versions it used (in its declaration) and shared code compares
    them with the code's (`convention_changes`). `unversioned` says what a run whose stored
    declaration does not state this convention at all used (it was made before the convention was
    versioned); `columns` names the declared columns computed with it.
    """

    name: str  # e.g. "class distance"
    version: int
    definition: str
    columns: tuple[str, ...] = ()
    unversioned: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.definition:
            raise ValueError("a convention needs a name and a definition")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"convention {self.name!r}: version must be an integer >= 1, got {self.version!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Convention:
        return cls(name=d["name"], version=int(d["version"]), definition=d["definition"],
                   columns=tuple(d.get("columns", ())), unversioned=d.get("unversioned", ""))


def _figures(c: Convention) -> str:
    return f"its figures {', '.join(c.columns)}" if c.columns else "its figures"


def convention_changes(stored: Declaration, current: Declaration) -> list[str]:
    """Plain sentences, one per convention on which a run's stored declaration and the current
    code's declaration disagree (absent on either side, or another version); [] when they agree."""
    old = {c.name: c for c in stored.conventions}
    new = {c.name: c for c in current.conventions}
    out = []
    for name, c in new.items():
        s = old.get(name)
        if s is None:
            earlier = c.unversioned or "a definition older than the code's, not recorded"
            out.append(f"{name}: this run's stored declaration states no version of it, so the run was made before "
                       f"the convention was versioned and {_figures(c)} follow {earlier}. This code uses version "
                       f"{c.version}: {c.definition}. Do not compare them with figures of runs made under version "
                       f"{c.version}.")
        elif s.version != c.version:
            out.append(f"{name}: this run computed {_figures(s)} under version {s.version} ({s.definition}); this "
                       f"code uses version {c.version} ({c.definition}). Do not compare them with figures of runs "
                       f"made under version {c.version}.")
    for name, s in old.items():
        if name not in new:
            out.append(f"{name}: this run computed {_figures(s)} under version {s.version} ({s.definition}); the "
                       "current code of its space declares no such convention.")
    return out


@dataclass(frozen=True)
class Selection:
    """How to pick one front point: constraints on calibration scores, then the best by `best`.

    `constraints` maps a point metric to ("min", v) (the metric must be >= v), ("max", v) (<= v),
    or ("within", v): within v of the best value of that metric among the candidates, in its
    declared direction (e.g. accuracy within 0.01 of the front's most accurate point). Among the
    global-front points that meet them, the one with the best `best` value is chosen (its
    direction from the declaration); ties go to the lowest value of `tie_break`.
    """

    best: str
    constraints: Mapping[str, tuple[str, float]] = field(default_factory=dict)
    tie_break: str | None = None
    description: str = ""
    aliases: Mapping[str, str] = field(default_factory=dict)  # short names for constraints, e.g. flops -> expected_flops

    def with_constraints(self, **kwargs: float) -> Selection:
        """`min_<metric>=v`, `max_<metric>=v` or `within_<metric>=v` keyword constraints added to
        (or replacing) these."""
        extra: dict[str, tuple[str, float]] = {}
        for key, value in kwargs.items():
            bound, _, metric = key.partition("_")
            if bound not in ("min", "max", "within") or not metric:
                raise ValueError(f"constraint {key!r}: write min_<metric>=v, max_<metric>=v or within_<metric>=v")
            extra[self.aliases.get(metric, metric)] = (bound, float(value))
        return dataclasses.replace(self, constraints={**dict(self.constraints), **extra},
                                   description="" if extra else self.description)

    def describe(self, directions: Mapping[str, str | None]) -> str:
        if self.description:
            return self.description
        text = {"min": ">=", "max": "<=", "within": "within"}
        cons = [f"{m} {text[b]} {v:g}" + (" of the best" if b == "within" else "") for m, (b, v) in self.constraints.items()]
        best = f"{'highest' if directions.get(self.best) == 'max' else 'lowest'} calibration {self.best}"
        return f"the global-front point with the {best}" + (f" among those with {', '.join(cons)}" if cons else "") + (
            f"; ties to the lowest {self.tie_break}" if self.tie_break else "")

    def _bounds(self, rows: Sequence[Mapping[str, Any]], directions: Mapping[str, str | None]) -> dict[str, tuple[str, float]]:
        """The constraints as plain lower ("min") or upper ("max") bounds; "within" resolved on `rows`."""
        out = {}
        for metric, (bound, value) in self.constraints.items():
            if bound != "within":
                out[metric] = (bound, value)
                continue
            values = [r[metric] for r in rows if r.get(metric) is not None and r[metric] == r[metric]]
            if not values:
                continue
            up = directions.get(metric) == "max"
            out[metric] = ("min", max(values) - value) if up else ("max", min(values) + value)
        return out

    def choose(self, rows: Sequence[Mapping[str, Any]], directions: Mapping[str, str | None]) -> Mapping[str, Any]:
        """The chosen row among `rows` (calibration rows of front points). Raises ValueError,
        saying what the rows offer, when none meets the constraints."""
        if not rows:
            raise ValueError("no front point to choose from (no complete trial yet)")
        bounds = self._bounds(rows, directions)
        ok = []
        for r in rows:
            good = True
            for metric, (bound, value) in bounds.items():
                v = r.get(metric)
                if v is None or v != v or (v < value if bound == "min" else v > value):  # v != v: NaN fails
                    good = False
            if good and r.get(self.best) is not None and r[self.best] == r[self.best]:
                ok.append(r)
        if not ok:
            ranges = "; ".join(
                f"{m} from {min(r[m] for r in rows if r.get(m) is not None):.4g} to {max(r[m] for r in rows if r.get(m) is not None):.4g}"
                for m in self.constraints if any(r.get(m) is not None for r in rows))
            raise ValueError(f"no front point meets {self.describe(directions)} (on calibration, the front has {ranges}); "
                             "relax the constraint (e.g. min_<metric>=..., max_<metric>=...) or pass a point_id")
        sign = -1.0 if directions.get(self.best) == "max" else 1.0

        def key(r: Mapping[str, Any]) -> tuple[float, float, str]:
            tie = float(r.get(self.tie_break) or 0.0) if self.tie_break else 0.0
            return sign * float(r[self.best]), tie, str(r.get("point_id"))

        return min(ok, key=key)


@dataclass(frozen=True)
class ReportSpec:
    """What the report draws, by metric name."""

    fronts: tuple[tuple[str, str], ...]  # (x, y) point metrics: one front figure each
    table: tuple[str, ...]  # point metrics shown per front point (test, with calibration beside)
    trial_curve: tuple[str, str] | None = None  # (x, y): each trial's own front as a line
    marks: tuple[str, ...] = ()  # bool point or policy columns drawn as marked points (e.g. "best_ratio")
    exit_fraction: str | None = None  # per-exit vector drawn as exit fractions of the front points
    epoch_panels: tuple[str, ...] = ()  # curve columns drawn per epoch (scalars or per-exit vectors)
    key_config: tuple[str, ...] = ()  # config values shown when hovering a point


@dataclass(frozen=True)
class Declaration:
    """Everything shared code needs to know about a family's results."""

    yields: str  # "points" | "point"
    point: tuple[Column, ...]  # values of an operating point on one split
    policy: tuple[Column, ...]  # a point's policy parameters (the same on both splits)
    trial: tuple[Column, ...]  # values of the trial (the same on each of its rows)
    curves: tuple[Column, ...]  # per-epoch values beside the common ones (epoch, loss, lr, ...)
    point_objectives: tuple[str, ...]  # point metrics that span the fronts
    objectives: Mapping[str, str]  # what each trial reports to the outer search -> "max" | "min"
    report: ReportSpec
    selection: Selection
    hv_reference: tuple[float, ...] = ()  # hypervolume reference point over `hv_objectives`
    hv_objectives: tuple[str, ...] = ()  # point metrics of the trial's calibration hypervolume
    notes: Mapping[str, str] = field(default_factory=dict)  # conventions stated in every report
    # the point metric that is the fraction of a point's answers right at the level given (or, with
    # answer_metric_is_error, the fraction wrong): what the point's predictor must reproduce
    answer_metric: str = ""
    answer_metric_is_error: bool = False
    # versioned definitions the figures depend on (see Convention); a run stores them in spec.json
    conventions: tuple[Convention, ...] = ()

    def __post_init__(self) -> None:
        if self.yields not in ("points", "point"):
            raise ValueError(f"yields must be 'points' or 'point', got {self.yields!r}")
        names = [c.name for c in (*self.point, *self.policy, *self.trial)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"columns declared twice: {dup}")
        point = {c.name: c for c in self.point}
        for name in self.point_objectives:
            if name not in point or point[name].direction is None:
                raise ValueError(f"point objective {name!r} must be a point metric with a direction")
        for name in self.hv_objectives:
            if name not in point or point[name].direction is None:
                raise ValueError(f"hypervolume objective {name!r} must be a point metric with a direction")
        if len(self.hv_reference) != len(self.hv_objectives):
            raise ValueError("one hypervolume reference value per hypervolume objective")
        for d in self.objectives.values():
            if d not in ("max", "min"):
                raise ValueError(f"outer objective directions are 'max' or 'min', got {d!r}")
        known = set(point) | {c.name for c in self.trial}
        for x, y in (*self.report.fronts, *((self.report.trial_curve,) if self.report.trial_curve else ())):
            for n in (x, y):
                if n not in known:
                    raise ValueError(f"report axis {n!r} is not a declared point or trial metric")
        for n in self.report.table:
            if n not in point:
                raise ValueError(f"report column {n!r} is not a declared point metric")
        bools = {c.name for c in (*self.point, *self.policy) if c.kind == "bool"}
        for n in self.report.marks:
            if n not in bools:
                raise ValueError(f"report mark {n!r} is not a declared bool point or policy column")
        for n in (self.selection.best, *self.selection.constraints, *([self.selection.tie_break] if self.selection.tie_break else [])):
            if n not in point:
                raise ValueError(f"selection metric {n!r} is not a declared point metric")
        if self.answer_metric and self.answer_metric not in point:
            raise ValueError(f"answer metric {self.answer_metric!r} is not a declared point metric")
        conv = [c.name for c in self.conventions]
        if len(set(conv)) != len(conv):
            raise ValueError(f"conventions declared twice: {sorted({n for n in conv if conv.count(n) > 1})}")
        curve_names = {c.name for c in self.curves}
        for c in self.conventions:
            unknown = [n for n in c.columns if n not in set(names) | curve_names]
            if unknown:
                raise ValueError(f"convention {c.name!r} names undeclared columns {unknown}")

    # -- lookups -----------------------------------------------------------------------------

    def columns(self) -> tuple[Column, ...]:
        """Every declared column: trial values, then point values, then policy parameters."""
        return (*self.trial, *self.point, *self.policy)

    def column(self, name: str) -> Column:
        for c in (*self.columns(), *self.curves):
            if c.name == name:
                return c
        raise KeyError(f"{name!r} is not a declared column; declared: {', '.join(c.name for c in self.columns())}")

    def direction(self, name: str) -> str | None:
        return self.column(name).direction

    def maximize(self, names: Sequence[str]) -> list[bool]:
        return [self.direction(n) == "max" for n in names]

    # -- JSON --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["selection"]["constraints"] = {k: list(v) for k, v in self.selection.constraints.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Declaration:
        def cols(key: str) -> tuple[Column, ...]:
            return tuple(Column(**c) for c in d.get(key, ()))

        r = dict(d["report"])
        report = ReportSpec(
            fronts=tuple(tuple(p) for p in r.get("fronts", ())),
            table=tuple(r.get("table", ())),
            trial_curve=tuple(r["trial_curve"]) if r.get("trial_curve") else None,
            marks=tuple(r.get("marks", ())),
            exit_fraction=r.get("exit_fraction"),
            epoch_panels=tuple(r.get("epoch_panels", ())),
            key_config=tuple(r.get("key_config", ())),
        )
        s = dict(d["selection"])
        selection = Selection(best=s["best"], constraints={k: (v[0], float(v[1])) for k, v in s.get("constraints", {}).items()},
                              tie_break=s.get("tie_break"), description=s.get("description", ""),
                              aliases=dict(s.get("aliases", {})))
        return cls(
            yields=d["yields"], point=cols("point"), policy=cols("policy"), trial=cols("trial"),
            curves=cols("curves"), point_objectives=tuple(d["point_objectives"]),
            objectives=dict(d["objectives"]), report=report, selection=selection,
            hv_reference=tuple(float(v) for v in d.get("hv_reference", ())),
            hv_objectives=tuple(d.get("hv_objectives", ())), notes=dict(d.get("notes", {})),
            answer_metric=d.get("answer_metric", ""), answer_metric_is_error=bool(d.get("answer_metric_is_error", False)),
            conventions=tuple(Convention.from_dict(c) for c in d.get("conventions", ())),
        )


@dataclass
class Outcome:
    """What a finished trial yields, in declared names.

    `points`: one dict per (operating point, split) with `point_id` (unique within the trial,
    the same on both splits), `policy` (how it was made, e.g. "calibrated", "risk",
    "fixed:exit@2"), `reference` (a fixed reference policy: drawn, never on a front), `split`
    ("calibration" or "test"), `trial_front` (on the trial's own calibration front) and the
    declared point and policy values. `trial`: the declared trial values. (What the trial reports
    to the outer search is the family's per-epoch Evaluation, the same measure at the end.)
    `front`: the objective values of the trial's whole calibration front, from which its
    hypervolume can be recomputed (stored in the trial directory).
    """

    points: list[dict[str, Any]]
    trial: dict[str, Any]
    front: Any = None  # np.ndarray (P, len(hv_objectives)) or None
