"""Tune trial schedulers by name (`--scheduler NAME`), checked against what a space declares.

A scheduler decides, while trials train, which of them go on: it sees each trial's per-epoch
signal, the same measure the family reports at the end (trainables/engine/family.py), so a rung
compares like with like. The registry holds one entry per name:

    @register_scheduler("asha", "stops weak trials early on the first declared objective")
    def asha(objectives, max_t, state_dir=None, grace_period=1, reduction_factor=2.0):
        ...

`objectives` is the space's declared outer objectives (name -> "max" | "min", in order),
`max_t` the most epochs a trial of the run's budget trains (Tune's `training_iteration`, one per
epoch of the whole training plan), `state_dir` the run directory (a scheduler may keep its
state there, to survive a resume), and `grace_period` (epochs before the first rung) and
`reduction_factor` (1 / reduction_factor of a rung's trials go on) the budget's (spaces/_base.py
`Budget`: 1 and 2 unless a space's budget says otherwise). A factory returns a Tune `TrialScheduler`, or None for Tune's
default (FIFO: every trial runs to its end). `check(name, objectives)` refuses a name that is not
registered or that cannot act on those objectives, before anything is written; the CLI's choices
come from `list_schedulers()`. Importing this module imports no Ray: factories import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SchedulerEntry", "check", "describe", "list_schedulers", "make_scheduler", "register_scheduler"]

Factory = Callable[..., Any]  # factory(objectives, max_t, state_dir=None, grace_period=1, reduction_factor=2.0)


@dataclass(frozen=True)
class SchedulerEntry:
    name: str
    description: str
    factory: Factory
    #: the fewest declared objectives it can act on, and the most (None: any number)
    min_objectives: int = 1
    max_objectives: int | None = None


_REGISTRY: dict[str, SchedulerEntry] = {}


def register_scheduler(name: str, description: str, *, min_objectives: int = 1,
                       max_objectives: int | None = None) -> Callable[[Factory], Factory]:
    """Register a scheduler factory under `name`; a duplicate name is an error."""

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"scheduler {name!r} is registered twice")
        _REGISTRY[name] = SchedulerEntry(name, description, factory, min_objectives, max_objectives)
        return factory

    return deco


def list_schedulers() -> list[str]:
    return list(_REGISTRY)


def describe() -> str:
    """One line per scheduler, for --help."""
    return "; ".join(f"{e.name}: {e.description}" for e in _REGISTRY.values())


def check(name: str, objectives: Mapping[str, str]) -> SchedulerEntry:
    """The entry of `name`, or ValueError saying what is wrong and what to choose instead."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"--scheduler {name!r} is not a scheduler; choose one of {', '.join(_REGISTRY)}")
    n = len(objectives)
    if n < entry.min_objectives or (entry.max_objectives is not None and n > entry.max_objectives):
        raise ValueError(f"--scheduler {name} acts on {entry.min_objectives}"
                         f"{'+' if entry.max_objectives is None else f'..{entry.max_objectives}'} objectives; "
                         f"this space declares {n} ({', '.join(objectives)}); choose one of {', '.join(_REGISTRY)}")
    for metric, mode in objectives.items():
        if mode not in ("max", "min"):
            raise ValueError(f"objective {metric!r} has direction {mode!r}; a scheduler needs 'max' or 'min'")
    return entry


def make_scheduler(name: str, objectives: Mapping[str, str], max_t: int, state_dir: Any = None, grace_period: int = 1,
                   reduction_factor: float = 2.0):
    """The Tune scheduler `name` for these objectives (None: Tune's FIFO); rungs at grace_period *
    reduction_factor**k epochs below max_t."""
    if int(grace_period) < 1 or float(reduction_factor) <= 1:
        raise ValueError(f"early stopping needs a grace period of at least 1 epoch and a reduction factor above 1; "
                         f"got {grace_period} and {reduction_factor}")
    return check(name, objectives).factory(dict(objectives), int(max_t), state_dir=state_dir, grace_period=int(grace_period),
                                           reduction_factor=float(reduction_factor))


@register_scheduler("fifo", "no early stopping: every trial trains to its end")
def _fifo(objectives: Mapping[str, str], max_t: int, state_dir: Any = None, **halving: Any) -> None:
    return None


@register_scheduler("asha", "asynchronous successive halving on the first declared objective "
                            "(a trial stopped early is `partial`)")
def _asha(objectives: Mapping[str, str], max_t: int, state_dir: Any = None, grace_period: int = 1,
          reduction_factor: float = 2.0):
    from ray.tune.schedulers import ASHAScheduler

    first = next(iter(objectives))
    return ASHAScheduler(metric=first, mode=objectives[first], time_attr="training_iteration",
                         max_t=max(1, max_t), grace_period=min(grace_period, max(1, max_t)),
                         reduction_factor=reduction_factor)


def _halving(objectives: Mapping[str, str], max_t: int, rule: str, state_dir: Any, grace_period: int = 1,
             reduction_factor: float = 2.0):
    import os

    from search.moasha import MOASHA, STATE_FILE

    return MOASHA(objectives, max(1, max_t), grace_period=grace_period, reduction_factor=reduction_factor, rule=rule,
                  state_path=os.path.join(str(state_dir), STATE_FILE) if state_dir is not None else None)


@register_scheduler("moasha", "multi-objective asynchronous successive halving on every declared objective: at each "
                              "rung, non-dominated sorting then an epsilon-net, and a trial no other at its rung dominates "
                              "goes on (search/moasha.py; its rungs in the run's scheduler/rungs.json)")
def _moasha(objectives: Mapping[str, str], max_t: int, state_dir: Any = None, **halving: Any):
    return _halving(objectives, max_t, "pareto", state_dir, **halving)


@register_scheduler("asha_sum", "asynchronous successive halving on the equal-weight sum of the declared objectives, "
                                "each scaled to [0, 1] over its rung (the weighted-sum baseline of moasha)")
def _asha_sum(objectives: Mapping[str, str], max_t: int, state_dir: Any = None, **halving: Any):
    return _halving(objectives, max_t, "weighted_sum", state_dir, **halving)
