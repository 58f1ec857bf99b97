"""A run ends with exactly the trials it asks for, also when `--resume` asks for more.

Tune keeps the number of trials in its own saved state (its SearchGenerator's `total_samples`,
restored by `Tuner.restore`), so a larger `--trials` on resume would be ignored. The run's search
algorithm is therefore a SearchGenerator of our own, built as Tune builds its own
(`SearchGenerator(ConcurrencyLimiter(searcher))`), whose restored total is the one this driver
asks for (`request`, set before `Tuner.fit`): Tune then makes exactly the missing trials.
A run started before this class existed keeps Tune's count.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search import ConcurrencyLimiter, SearchGenerator, Searcher

__all__ = ["RequestedTrials", "request", "search_algorithm"]

_REQUESTED: list[int] = []


def request(total: int) -> None:
    """The number of trials the run must end with (this session's --trials)."""
    _REQUESTED[:] = [int(total)]


class RequestedTrials(SearchGenerator):
    """Tune's SearchGenerator, whose total after a restore is the requested one."""

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if _REQUESTED:
            self._total_samples = _REQUESTED[0]


def search_algorithm(searcher: Searcher, concurrency: int) -> RequestedTrials:
    """The run's search algorithm: `searcher`, at most `concurrency` trials at once."""
    return RequestedTrials(ConcurrencyLimiter(searcher, max_concurrent=max(1, int(concurrency))))
