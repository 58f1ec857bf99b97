"""How the report's figures look and what their files are called, shared by the PNG renderer
(`reports.figures`) and the inline-SVG one (`reports.html`), so that a policy has the same colour and
marker in every figure of both. Plain data and the standard library: no matplotlib.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from reports.info import ReportInfo

__all__ = ["FRONT_COLOR", "GREY", "MARK_COLOR", "MPL_MARKERS", "Style", "figure_files", "policy_styles", "reference_styles"]

FRONT_COLOR = "#d62728"  # the global front and its staircase (no policy gets this colour)
MARK_COLOR = "#ffbf00"  # declared marks: gold stars
GREY = "#8c8c8c"  # the background when all points share one policy
_POLICY_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
_POLICY_MARKERS = ("circle", "square", "diamond", "triangle-down", "triangle-up")
_REFERENCE_COLORS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#31a354", "#756bb1")
_REFERENCE_MARKERS = ("triangle-up", "triangle-down", "square", "diamond")
#: svg.py marker names -> matplotlib's
MPL_MARKERS = {"circle": "o", "square": "s", "diamond": "D", "triangle-up": "^", "triangle-down": "v", "star": "*"}


class Style(NamedTuple):
    color: str
    marker: str  # an svg.py marker name (MPL_MARKERS maps it for matplotlib)


def policy_styles(policies: Sequence[str]) -> dict[str, Style]:
    """One style per non-reference policy: grey dots when there is one, else a colour and marker each."""
    if len(policies) <= 1:
        return {p: Style(GREY, "circle") for p in policies}
    return {p: Style(_POLICY_COLORS[i % len(_POLICY_COLORS)], _POLICY_MARKERS[i % len(_POLICY_MARKERS)])
            for i, p in enumerate(policies)}


def reference_styles(names: Sequence[str]) -> dict[str, Style]:
    return {n: Style(_REFERENCE_COLORS[i % len(_REFERENCE_COLORS)], _REFERENCE_MARKERS[i % len(_REFERENCE_MARKERS)])
            for i, n in enumerate(sorted(names))}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "figure"


def figure_files(info: ReportInfo) -> dict[str, str]:
    """Figure key -> file name under RUN_DIR/figures/, for every figure the report may draw.

    Keys: "front:<i>" (i-th declared front pair), "trial_curves", "exit_fractions",
    "objective:<name>", "progress", "learning_curves". Names follow the declaration, e.g. "front_accuracy_vs_cost.png".
    """
    out: dict[str, str] = {}
    for i, front in enumerate(info.fronts):
        name = f"front_{_safe(front.y.name)}_vs_{_safe(front.x.name)}.png"
        out[f"front:{i}"] = name if name not in out.values() else name.replace(".png", f"_{i}.png")
    out["trial_curves"] = "trial_curves.png"
    out["exit_fractions"] = "exit_fractions.png"
    for o in info.objectives:
        out[f"objective:{o.metric.name}"] = f"objective_{_safe(o.metric.name)}.png"
    out["progress"] = "progress.png"
    out["learning_curves"] = "learning_curves.png"
    return out
