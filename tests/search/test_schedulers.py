"""The scheduler registry: names, checks against declared objectives, and what each factory makes."""

from __future__ import annotations

import pytest

from search import schedulers


def test_registry_names_and_duplicates():
    assert schedulers.list_schedulers()[:2] == ["fifo", "asha"]
    with pytest.raises(ValueError, match="registered twice"):
        schedulers.register_scheduler("asha", "again")(lambda objectives, max_t: None)


def test_check_refuses_unknown_and_says_what_exists():
    with pytest.raises(ValueError, match=r"'pbt' is not a scheduler; choose one of fifo, asha"):
        schedulers.check("pbt", {"hypervolume": "max"})
    with pytest.raises(ValueError, match="direction"):
        schedulers.check("asha", {"x": "up"})


def test_fifo_is_tunes_default_and_asha_acts_on_the_first_objective():
    from ray.tune.schedulers import ASHAScheduler

    assert schedulers.make_scheduler("fifo", {"error": "min", "severity": "min"}, 4) is None
    asha = schedulers.make_scheduler("asha", {"error": "min", "severity": "min"}, 4)
    assert isinstance(asha, ASHAScheduler)
    assert asha._metric == "error" and asha._mode == "min"
    assert asha._max_t == 4
