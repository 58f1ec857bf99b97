"""Choosing a front point for the loader: on calibration scores only, by the space's declared rule
or the caller's constraints, never a degenerate corner by default."""

from __future__ import annotations

import pytest

from search.load import choose_point
from spaces.branchynet import declaration as branchy_declaration
from spaces.gran_hbn import DECLARATION as GRAN


def pair(pid, calib, test, on_front=True):
    base = {"point_id": pid, "status": "complete", "reference": False, "on_front": on_front}
    return [{**base, "split": "calibration", **calib}, {**base, "split": "test", **test}]


ROWS = [
    # the all-superclass corner: best accuracy on both splits, but it never answers a class
    *pair("t/corner", {"accuracy": 0.95, "specificity": 0.0, "expected_flops": 1.0},
          {"accuracy": 0.96, "specificity": 0.0, "expected_flops": 1.0}),
    # best calibration accuracy among fine-level points
    *pair("t/a", {"accuracy": 0.70, "specificity": 0.95, "expected_flops": 3.0},
          {"accuracy": 0.60, "specificity": 0.95, "expected_flops": 3.0}),
    # better on TEST, worse on calibration: must not be chosen
    *pair("t/b", {"accuracy": 0.65, "specificity": 0.92, "expected_flops": 2.0},
          {"accuracy": 0.80, "specificity": 0.92, "expected_flops": 2.0}),
    *pair("t/c", {"accuracy": 0.50, "specificity": 1.0, "expected_flops": 1.5},
          {"accuracy": 0.50, "specificity": 1.0, "expected_flops": 1.5}),
    # off the front: never chosen whatever its scores
    *pair("t/off", {"accuracy": 0.99, "specificity": 1.0, "expected_flops": 0.1},
          {"accuracy": 0.99, "specificity": 1.0, "expected_flops": 0.1}, on_front=False),
]


def test_default_rule_chooses_on_calibration_and_avoids_the_corner():
    row = choose_point(ROWS, GRAN)
    assert row["point_id"] == "t/a" and row["split"] == "calibration"


def test_caller_constraints_on_any_point_metric():
    assert choose_point(ROWS, GRAN, min_specificity=0.0)["point_id"] == "t/corner"
    assert choose_point(ROWS, GRAN, max_flops=2.5)["point_id"] == "t/b"  # max_flops: expected_flops
    assert choose_point(ROWS, GRAN, min_specificity=0.99)["point_id"] == "t/c"


def test_no_point_meets_the_rule_says_what_the_front_offers():
    with pytest.raises(ValueError, match="specificity from 0 to 1"):
        choose_point(ROWS, GRAN, max_flops=0.5, min_specificity=0.5)
    with pytest.raises(ValueError, match="not point metrics"):
        choose_point(ROWS, GRAN, max_latency_ms=3.0)


def test_branchynet_default_is_the_fastest_point_within_one_point_of_the_most_accurate():
    """Not the fastest point of a weak network: the fastest at (nearly) the front's best accuracy."""
    decl = branchy_declaration("latency")
    rows = [
        # a weak trial's point: within 1 point of its OWN final exit, but 10 points below the best
        *pair("t/fast_weak", {"accuracy": 0.70, "accuracy_drop": 0.0, "latency_ms": 1.0, "expected_flops": 1.0}, {}),
        *pair("t/ok", {"accuracy": 0.792, "accuracy_drop": 0.008, "latency_ms": 2.0, "expected_flops": 2.0}, {}),
        *pair("t/slow", {"accuracy": 0.80, "accuracy_drop": 0.0, "latency_ms": 4.0, "expected_flops": 4.0}, {}),
    ]
    assert choose_point(rows, decl)["point_id"] == "t/ok"
    assert choose_point(rows, decl, within_accuracy=0.2)["point_id"] == "t/fast_weak"
    assert choose_point(rows, decl, within_accuracy=0.0)["point_id"] == "t/slow"
    assert choose_point(rows, decl, max_latency_ms=1.5, within_accuracy=1.0)["point_id"] == "t/fast_weak"
    assert "within 1 point of the front's best" in decl.selection.describe({})


def test_branchynet_default_is_never_slower_than_a_network_without_exits_at_no_better_accuracy():
    """The plain network of every trial is a front candidate (policy plain, not a reference): over
    many random runs the default point is never slower than a plain network at least as accurate.
    The same runs without their plain points do return such a point (the issue's 0.68x default)."""
    import numpy as np

    from search.collect import mark_global_front

    decl = branchy_declaration("latency")
    rng = np.random.default_rng(0)
    beaten_without = 0
    for _ in range(200):
        rows = []
        for t in range(4):
            plain_ms, plain_acc = rng.uniform(1.0, 3.0), rng.uniform(0.6, 0.9)
            points = [(f"t{t}/plain/0", True, plain_acc, plain_ms)]
            for i in range(8):  # early-exit points: some faster and less accurate, some slower (deciding costs time)
                points.append((f"t{t}/search/{i}", False, plain_acc - rng.uniform(-0.005, 0.05), plain_ms * rng.uniform(0.5, 1.4)))
            for pid, plain, acc, ms in points:
                values = {"accuracy": acc, "latency_ms": ms, "expected_flops": ms, "plain": plain}
                rows += pair(pid, values, values, on_front=False)
        plains = [r for r in rows if r["split"] == "calibration" and r["plain"]]

        def slower_than_a_plain(chosen):
            return any(chosen["latency_ms"] > p["latency_ms"] and p["accuracy"] >= chosen["accuracy"] for p in plains)

        mark_global_front(rows, decl)
        assert not slower_than_a_plain(choose_point(rows, decl))
        without = [dict(r, on_front=False) for r in rows if not r["plain"]]
        mark_global_front(without, decl)
        beaten_without += slower_than_a_plain(choose_point(without, decl))
    assert beaten_without > 0
