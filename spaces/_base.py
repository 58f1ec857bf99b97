"""What a named search space is: a define-by-run function plus the family its trials train.

A space's `define(trial, budget)` only calls `trial.suggest_*` and returns constants (derived
values such as `exit_after`), so the very same function serves Ray Tune's `OptunaSearch` and a
plain Optuna loop (`search.local`), and tests can run it with `optuna.trial.FixedTrial`.

`family(budget, options)` returns the family's own parts (trainables/engine/family.py): its model,
loss, per-epoch signal and calibration, and its `Declaration` (trainables/contract.py) of what an
operating point is, which fixes the run's results schema, report and loader. Shared code works
from that declaration only. `options` are the space's own run options (e.g. which cost is a point
objective), each declared with its choices so the CLI can check them.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainables.contract import Declaration
    from trainables.engine.family import Family
    from trainables.engine.loop import TrialContext

__all__ = ["Budget", "Option", "Space", "number_value", "path_value"]


@dataclass(frozen=True)
class Budget:
    """How much a run may spend: `smoke` proves the pipeline in minutes on 2 CPU cores,
    `full` is a real search on a GPU."""

    name: str
    epochs: int  # most epochs a trial trains for
    data_size: str  # "tiny" | "smoke" (subset) | "full"
    trials: int  # default number of trials
    calibration: dict[str, Any] = field(default_factory=dict)  # the family's calibration settings
    # early stopping (`--scheduler asha|moasha|asha_sum`): rungs at grace_period * reduction_factor**k epochs
    # below `epochs` (the maximum fidelity), and 1 / reduction_factor of a rung's trials go on
    grace_period: int = 1
    reduction_factor: float = 2.0


@dataclass(frozen=True)
class Option:
    """A run option of a space (a CLI flag of the same name): one of `choices`, or, for an option
    with a `parse`, any value it accepts (a number, a path). Values are strings (they travel in
    spec.json); `parse` returns the stored form of a value outside `choices` (e.g. a path made
    absolute, so that every worker finds it) or raises ValueError saying what is wrong with it.
    The CLI resolves every option before a run directory is made, so a bad value exits 2 with that
    message (search/run.py)."""

    choices: tuple[str, ...]
    default: str
    help: str = ""
    parse: Callable[[str], str] | None = None  # a value outside `choices` -> its stored form (ValueError: refused)
    values: str = ""  # what --help says it accepts, when not only `choices` (e.g. "imagenet, none or PATH")

    def accepts(self) -> str:
        """The accepted values, as --help and error messages name them."""
        return self.values or f"one of {', '.join(self.choices)}"

    def resolve(self, flag: str, value: str) -> str:
        """`value` as stored; ValueError (naming the flag and the value as typed) when refused."""
        if value in self.choices:
            return value
        if self.parse is None:
            raise ValueError(f"{flag} {value!r} is not one of {', '.join(self.choices)}")
        try:
            return self.parse(value)
        except ValueError as exc:
            raise ValueError(f"{flag} {value!r}: {exc} (accepted: {self.accepts()})") from None


def number_value(minimum: float = 0.0, *, strict: bool = True) -> Callable[[str], str]:
    """A `parse` for a finite number above `minimum` (at or above it when not `strict`); stored as typed."""
    def parse(value: str) -> str:
        try:
            x = float(value)
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(x) or (x <= minimum if strict else x < minimum):
            raise ValueError(f"must be a finite number {'above' if strict else 'at least'} {minimum:g}")
        return value
    return parse


def path_value(value: str) -> str:
    """A `parse` for a file path: stored absolute (a worker's working directory is not the driver's).
    Whether the file is there, and what it holds, is the family's to check before the run starts."""
    if not value.strip():
        raise ValueError("an empty path")
    return str(Path(value).expanduser().resolve())


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    define: Callable[..., dict[str, Any] | None]  # define(trial, budget) -> constants
    family: Callable[[Budget, Mapping[str, str]], Family]  # family(budget, options) -> its parts
    largest_configs: Callable[[Budget], list[dict[str, Any]]]  # candidates for the cost normaliser
    default_data: str
    budgets: dict[str, Budget]
    options: dict[str, Option] = field(default_factory=dict)

    def search_space(self, budget: Budget, options: Mapping[str, str | None] | None = None) -> Callable[[Any], dict[str, Any] | None]:
        """The define-by-run function, bound to a budget and, when it takes them (an `options`
        parameter), the run's options, resolved (picklable, for Ray's searcher)."""
        if "options" in inspect.signature(self.define).parameters:
            return functools.partial(self.define, budget=budget, options=self.resolve_options(options or {}))
        return functools.partial(self.define, budget=budget)

    def budget(self, name: str) -> Budget:
        try:
            return self.budgets[name]
        except KeyError:
            raise ValueError(f"space {self.name!r} has no budget {name!r}; its budgets: {', '.join(self.budgets)}") from None

    def resolve_options(self, given: Mapping[str, str | None]) -> dict[str, str]:
        """Every option of this space, from `given` or its default; an unknown or bad one raises."""
        out = {}
        for key, value in given.items():
            if value is not None and key not in self.options:
                raise ValueError(f"space {self.name!r} has no option --{key.replace('_', '-')}"
                                 + (f"; its options: {', '.join(self.options)}" if self.options else ""))
        for key, opt in self.options.items():
            value = given.get(key) or opt.default
            try:
                out[key] = opt.resolve(f"--{key.replace('_', '-')}", value)
            except ValueError as exc:
                raise ValueError(f"{exc} (space {self.name})") from None
        return out

    def declaration(self, budget: Budget, options: Mapping[str, str] | None = None) -> Declaration:
        return self.family(budget, self.resolve_options(options or {})).declaration

    def train(self, config: dict[str, Any], ctx: TrialContext, budget: Budget,
              options: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One trial: the family's parts in the shared loop."""
        from trainables.engine.loop import run_trial

        return run_trial(self.family(budget, self.resolve_options(options or {})), config, ctx)
