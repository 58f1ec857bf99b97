"""Versioned conventions of a declaration (trainables/contract.py): they travel with the declaration,
and `convention_changes` says plainly where a run's stored declaration and the code's disagree."""

from __future__ import annotations

import dataclasses
import json

import pytest

from trainables.contract import Column, Convention, Declaration, ReportSpec, Selection, convention_changes
from trainables.hierarchy import CLASS_DISTANCE

DIST_V2 = Convention("class distance", 2, "height of the LCA node", columns=("severity",),
                     unversioned="version 1: measured to the deeper leaf")
BASE = Declaration(
    yields="point",
    point=(Column("error", direction="min"), Column("severity", direction="min")),
    policy=(), trial=(), curves=(),
    point_objectives=("error", "severity"), objectives={"error": "min"},
    report=ReportSpec(fronts=(("error", "severity"),), table=("error", "severity")),
    selection=Selection(best="error"),
)


def test_conventions_round_trip_through_json():
    decl = dataclasses.replace(BASE, conventions=(DIST_V2,))
    assert Declaration.from_dict(json.loads(json.dumps(decl.to_dict()))) == decl
    # a declaration stored before conventions existed reads as stating none
    old = decl.to_dict()
    del old["conventions"]
    assert Declaration.from_dict(old).conventions == ()


def test_conventions_are_checked():
    with pytest.raises(ValueError, match="version"):
        Convention("x", 0, "def")
    with pytest.raises(ValueError, match="version"):
        Convention("x", True, "def")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name and a definition"):
        Convention("", 1, "def")
    with pytest.raises(ValueError, match="undeclared columns"):
        dataclasses.replace(BASE, conventions=(dataclasses.replace(DIST_V2, columns=("hdist_9",)),))
    with pytest.raises(ValueError, match="twice"):
        dataclasses.replace(BASE, conventions=(DIST_V2, DIST_V2))


def test_changes_say_which_version_each_side_used():
    now = dataclasses.replace(BASE, conventions=(DIST_V2,))
    assert convention_changes(now, now) == []
    # stored before the convention was versioned: the code's `unversioned` names what it used
    (msg,) = convention_changes(BASE, now)
    assert "states no version" in msg and "version 1: measured to the deeper leaf" in msg
    assert "version 2: height of the LCA node" in msg and "severity" in msg
    # another version stored
    v3 = dataclasses.replace(DIST_V2, version=3, definition="something else")
    (msg,) = convention_changes(now, dataclasses.replace(BASE, conventions=(v3,)))
    assert "under version 2 (height of the LCA node)" in msg and "version 3 (something else)" in msg
    # a convention the code no longer declares
    (msg,) = convention_changes(now, BASE)
    assert "declares no such convention" in msg
    # a space without conventions, old run or new: nothing to say
    assert convention_changes(BASE, BASE) == []


def test_the_class_distance_convention_states_both_rules():
    assert CLASS_DISTANCE.version == 2 and "height" in CLASS_DISTANCE.definition
    assert CLASS_DISTANCE.unversioned.startswith("version 1:") and "deeper" in CLASS_DISTANCE.unversioned
