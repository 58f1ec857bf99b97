"""The Tune side of a clean stop (search/signals.py): a callback Tune pickles with the run."""

from __future__ import annotations

import os
import signal

from ray.tune import Callback

from search.signals import current

__all__ = ["RunEvents"]


class RunEvents(Callback):
    """A Tune callback holding no state of its own (Tune pickles callbacks with the run and
    restores them on --resume): it turns the active StopRequest's recorded signal into Tune's
    graceful stop (SIGUSR1, whose handler Tune installs once its loop runs), once, and records
    which trials Tune ended normally (finished, or stopped by a scheduler)."""

    def on_step_begin(self, iteration, trials, **info):
        stop = current()
        if stop is not None and stop.requested and not stop.forwarded and callable(signal.getsignal(signal.SIGUSR1)):
            stop.forwarded = True
            os.kill(os.getpid(), signal.SIGUSR1)

    def on_trial_complete(self, iteration, trials, trial, **info):
        stop = current()
        if stop is not None:
            stop.ended.add(trial.trial_id)
