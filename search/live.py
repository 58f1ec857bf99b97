"""Live progress of a search: a rich panel driven by Tune's callback hooks, and the results
writer that rebuilds `results.parquet` whenever a trial ends.

Both callbacks are picklable (Tune stores its run config for `--resume`): the rich `Live`
object is created in `setup()` and dropped from the pickled state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from search.say import say

__all__ = ["LiveDisplay", "ResultsWriter"]


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProgressState:
    """Counts and timings the display shows; pure bookkeeping, tested without Tune."""

    def __init__(self, total_trials: int, concurrency: int, objective: tuple[str, str] = ("objective", "max")) -> None:
        self.total = total_trials
        self.objective, self.mode = objective  # the outer search's first objective and its direction
        self.concurrency = max(1, concurrency)
        self.started_at = time.time()
        self.running: dict[str, float] = {}
        self.done = 0
        self.failed = 0
        self.durations: list[float] = []
        self.best: float | None = None
        self.front_size = 0
        self.last_event = ""

    def start(self, trial_id: str) -> None:
        self.running.setdefault(trial_id, time.time())

    def result(self, trial_id: str, metrics: dict[str, Any]) -> None:
        """A trial's report: its signal is the same measure every epoch, so the best of any report counts."""
        v = metrics.get(self.objective)
        if v is not None:
            better = max if self.mode == "max" else min
            self.best = v if self.best is None else better(self.best, v)
        self.last_event = f"{trial_id}: epoch {metrics.get('epoch')} {self.objective} {v if v is None else round(v, 4)}"

    def finish(self, trial_id: str, failed: bool) -> None:
        t0 = self.running.pop(trial_id, None)
        if t0 is not None:
            self.durations.append(time.time() - t0)
        if failed:
            self.failed += 1
        else:
            self.done += 1

    def remaining_seconds(self) -> float | None:
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        left = max(0, self.total - self.done - self.failed)
        waves = -(-left // self.concurrency)
        running_elapsed = [time.time() - t for t in self.running.values()]
        started_credit = min(running_elapsed) if running_elapsed else 0.0
        return max(0.0, waves * mean - started_credit)

    def table(self) -> Table:
        t = Table(title="search", show_header=False, expand=False)
        t.add_column(style="bold")
        t.add_column()
        pending = max(0, self.total - self.done - self.failed - len(self.running))
        t.add_row("trials", f"{len(self.running)} running, {self.done} done, {self.failed} failed, {pending} pending")
        t.add_row(f"best {self.objective}", "-" if self.best is None else f"{self.best:.4g}")
        t.add_row("global front", f"{self.front_size} points")
        t.add_row("elapsed / remaining", f"{_fmt_seconds(time.time() - self.started_at)} / ~{_fmt_seconds(self.remaining_seconds())}")
        if self.last_event:  # may quote an exception (a path, a library's text): verbatim, never markup
            t.add_row("last", Text(self.last_event))
        return t


class LiveDisplay(Callback):
    def __init__(self, total_trials: int, concurrency: int, objective: tuple[str, str] = ("objective", "max")) -> None:
        self.state = ProgressState(total_trials, concurrency, objective)
        self._live: Live | None = None

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_live"] = None
        d.pop("_console", None)
        return d

    def setup(self, **info: Any) -> None:
        if info.get("total_num_samples"):  # a restored run: the total this session asked for (search/trial_count.py)
            self.state.total = int(info["total_num_samples"])
        console = Console(stderr=True)
        self._plain = not console.is_terminal  # a log file gets one line per finished trial instead
        self._console = console
        self._live = Live(self.state.table(), console=console, refresh_per_second=2, transient=False)
        self._live.start()

    def _log(self, text: str) -> None:
        if getattr(self, "_plain", False):
            say(self._console, text)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.state.table())

    def on_trial_start(self, iteration, trials, trial, **info):
        self.state.start(trial.trial_id)
        self._refresh()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.state.result(trial.trial_id, result)
        self._refresh()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.state.finish(trial.trial_id, failed=False)
        name = self.state.objective
        last = trial.last_result or {}
        v = last.get(name)
        stopped = last.get("fidelity") is not None and float(last["fidelity"]) < 1.0  # a scheduler ended it early
        how = f"stopped early at epoch {last.get('epoch')}" if stopped else "done"
        self._log(f"trial {trial.trial_id} {how}: {name} {v if v is None else round(v, 4)}; "
                  f"{self.state.done} done, {self.state.failed} failed of {self.state.total}")
        self._refresh()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.state.finish(trial.trial_id, failed=True)
        self._log(f"trial {trial.trial_id} failed; {self.state.done} done, {self.state.failed} failed of {self.state.total}")
        self._refresh()

    def on_experiment_end(self, trials, **info):
        self._refresh()
        if self._live is not None:
            self._live.stop()
            self._live = None
            if getattr(self, "_plain", False):
                self._console.line()  # a log file: the next message starts on a line of its own, not after the box


class ResultsWriter(Callback):
    """Rebuilds the results tables after every finished trial (atomic writes)."""

    def __init__(self, write: Callable[[], int], display: LiveDisplay | None = None) -> None:
        self.write = write  # returns the global front size
        self.display = display

    def _write(self) -> None:
        try:
            n = self.write()
        except Exception as exc:  # a table error must not stop the search; the final write reports it
            from search.disk import current, is_disk_full

            guard = current()
            if guard is not None and is_disk_full(exc):
                guard.full(f"writing results.parquet: {exc}")  # stops the run; the final write gets the reserve
            if self.display is not None:
                self.display.state.last_event = f"results not written: {exc}"
            return
        if self.display is not None:
            self.display.state.front_size = n

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write()
