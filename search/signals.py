"""Clean stops on SIGINT (Ctrl-C) and SIGTERM, at any moment of a run, start-up included.

`StopRequest.install()` puts one handler on both signals. The first signal is remembered
(`signum`), then:

* while the driver's module is still imported (`phase = "load"`, a fraction of a second) it is
  only recorded: an exception there would escape every handler as a traceback; `main` sets the
  phase to "start" and calls `check()` first thing, inside its handler;
* during start-up (argument checks, data loading, `ray.init`) it raises `Interrupted` at once,
  and `check()` raises it again at the next step in case some library swallowed it;
* while Ray Tune runs (`phase = "tune"`) it is only recorded: `search.tune_events.RunEvents`, a Tune callback,
  passes it on at Tune's next loop step as SIGUSR1, Tune's own graceful stop (it stops the
  trials, saves the experiment state one last time, and `Tuner.fit` returns, so the run can be
  resumed); the caller then sees `requested` and ends the run as interrupted;
* while the run finishes (`phase = "finish"`: collecting results, building the report) it is
  recorded, and the run ends as interrupted once that is written.

A second signal raises `Interrupted` whatever is running (the user insists). Tune's own SIGINT
handler is switched off (`TUNE_DISABLE_SIGINT_HANDLER`), and `ray.init` replaces the SIGTERM
handler with its own: call `install()` again after it. This module imports nothing heavy: it
is installed before anything else is imported, so that a Ctrl-C is ours from the first moment.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

__all__ = ["Interrupted", "StopRequest", "activate", "current", "exit_code"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by a signal (SIGINT or SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(signum: int) -> int:
    """The shell's convention: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)


class StopRequest:
    def __init__(self, phase: str = "start") -> None:
        self.signum: int | None = None
        self.count = 0
        self.phase = phase  # load | start | tune | finish
        self.forwarded = False  # passed on to Tune
        self.ended: set[str] = set()  # trials Tune ended normally in this session
        self.installed = False
        self.reason: str | None = None  # a stop the run asked for itself (e.g. "disk full"): see `request`

    @property
    def requested(self) -> bool:
        return self.signum is not None or self.reason is not None

    def request(self, reason: str) -> None:
        """Stop the run from within (a full disk: search/disk.py), by the same graceful path as a
        signal while Tune runs: RunEvents passes it on to Tune."""
        if self.reason is None:
            self.reason = reason

    def install(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
            for s in _SIGNALS:
                signal.signal(s, self._handle)
            self.installed = True
        return activate(self)

    def check(self) -> None:
        """Raise `Interrupted` if a stop was asked for (and swallowed on its way)."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum
        if self.phase == "load":  # the driver's own module is still being imported: `main` raises it first thing
            return
        if self.count > 1 or self.phase == "start":
            raise Interrupted(self.signum)



_CURRENT: list[StopRequest] = []


def activate(stop: StopRequest) -> StopRequest:
    """Make `stop` the one `RunEvents` (possibly a copy Tune unpickled on --resume) reports to."""
    _CURRENT[:] = [stop]
    return stop


def current() -> StopRequest | None:
    return _CURRENT[0] if _CURRENT else None
