"""A full disk during a run ends it cleanly: a message naming the storage and the space needed,
trials marked the same way in the results and the study journal, nothing already written lost.

* The driver keeps a reserve in the run directory (`.space-reserve`, `reserve_bytes()`, made
  before the search starts; a storage without room for it is refused up front). It is given
  back in parts, each when the driver needs it and the trials can hardly take it first: to a
  journal append that met the full disk, to Tune's last save of its state as its loop ends, and
  the rest once Tune has stopped the trials, for the trials' settled statuses, the results
  tables and Tune's state copied again whole from its staging folder (search/tune_state.py).
* Signs of a full disk: a trial that failed with ENOSPC/EDQUOT (Tune's error text of the trial),
  the driver's own writes (the study journal: search/study.py; the results tables), Tune's fit
  ending on one, and free space on the run's disk below `LOW_WATER` (checked every few seconds).
* The first sign asks the run to stop through the same graceful path as Ctrl-C (search/signals.py):
  Tune stops its trials and saves its state; the trials it cut short are `interrupted` in
  results.parquet and unfinished (RUNNING) in the journal, and restart from their checkpoints on
  --resume. The CLI then exits 1 with `DiskGuard.message`.

The study journal never keeps a cut-off line: a failed append is truncated away (search/study.py).
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

__all__ = ["DiskEvents", "DiskGuard", "current", "is_disk_full", "reserve_bytes"]

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_TEXTS = ("No space left on device", "Disk quota exceeded", "[Errno 28]", "[Errno 122]")
RESERVE = ".space-reserve"
LOW_WATER = 1 << 20  # free bytes below which the disk counts as full
_CHECK_EVERY_S = 2.0
_MB = 1 << 20


def reserve_bytes() -> int:
    """The reserve a run keeps on its disk (EXITSEARCH_SPACE_RESERVE bytes; default 16 MiB)."""
    return int(os.environ.get("EXITSEARCH_SPACE_RESERVE", str(16 * _MB)))


def is_disk_full(exc: BaseException | str | None) -> bool:
    """Whether an exception (its chain, or its text: Ray and Tune re-raise a trial's error as text)
    says the disk or quota is full."""
    seen: set[int] = set()
    while isinstance(exc, BaseException) and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
            return True
        if any(t in str(exc) for t in _TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
    return isinstance(exc, str) and any(t in exc for t in _TEXTS)


def _size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


_CURRENT: list[DiskGuard] = []


def current() -> DiskGuard | None:
    return _CURRENT[0] if _CURRENT else None


class DiskGuard:
    """The driver's watch over the disk of one run (`run_dir`: the run directory, or a bucket run's
    local copy), with its reserve."""

    def __init__(self, run_dir: Path, stop: Any, trials: int) -> None:
        self.run_dir, self.stop, self.trials = Path(run_dir), stop, trials
        self.cause: str | None = None
        self.free_at_stop: int | None = None
        self._checked = 0.0
        self.staging: str | None = None  # Tune's staging folder of its state (set by DiskEvents)
        self.staging_noted: str | None = None  # the one written down in the run (search/tune_state.py note_staging)
        self.final_room = False
        _CURRENT[:] = [self]
        from search.study import ON_FAILED_APPEND

        ON_FAILED_APPEND[:] = [self.journal_full]

    def journal_full(self, path: str, exc: OSError) -> bool:
        """A journal append failed (search/study.py): on a full disk, stop the run and give room."""
        if not is_disk_full(exc):
            return False
        self.full(f"{path}: {exc}")
        self.release_some()
        return True

    @property
    def reserve(self) -> Path:
        return self.run_dir / RESERVE

    def keep_reserve(self) -> None:
        """Write the reserve (OSError when the disk has no room for it)."""
        size = reserve_bytes()
        if size <= 0:
            return
        chunk = b"\0" * min(size, _MB)
        try:
            with open(self.reserve, "wb") as f:
                left = size
                while left > 0:
                    left -= f.write(chunk[:left])
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            self.reserve.unlink(missing_ok=True)
            raise

    def release(self) -> None:
        self.reserve.unlink(missing_ok=True)

    def check_room(self, storage: str) -> None:
        """Before the run directory is made: its disk must hold the reserve (BadInput otherwise)."""
        from search.checks import BadInput

        probe = self.run_dir
        while not probe.exists():
            probe = probe.parent
        have = self.reserve.stat().st_size if self.reserve.exists() else 0
        try:
            free = shutil.disk_usage(probe).free + have
        except OSError:
            return
        need = reserve_bytes() + LOW_WATER
        if free < need:
            raise BadInput(f"--storage {storage}: {probe} has {free / _MB:.1f} MB free, less than the {need / _MB:.0f} MB a "
                           "run keeps in reserve to end cleanly should its disk fill up: free space there, or pass a "
                           "--storage on a larger disk")

    def release_some(self) -> None:
        """Give back half of what is left of the reserve (to a write of the driver's that failed on a
        full disk while trials still run; the rest is released once Tune has stopped them)."""
        try:
            size = self.reserve.stat().st_size
            os.truncate(self.reserve, size // 2 if size > 64 * 1024 else 0)
        except OSError:
            pass

    def full(self, cause: str) -> None:
        """A sign of a full disk: stop the run (once). The reserve is kept for the driver's last
        writes (`release_some`, and `release` once Tune has stopped the trials)."""
        if self.cause is not None:
            return
        self.cause = cause
        try:
            self.free_at_stop = shutil.disk_usage(self.run_dir).free
        except OSError:
            self.free_at_stop = None
        if self.stop is not None:
            self.stop.request("disk full")

    def check(self) -> None:
        """Free space below LOW_WATER counts as full (at most every few seconds)."""
        now = time.monotonic()
        if self.cause is not None or now - self._checked < _CHECK_EVERY_S:
            return
        self._checked = now
        try:
            free = shutil.disk_usage(self.run_dir).free
        except OSError:
            return
        if free < LOW_WATER:
            self.full(f"{free / _MB:.1f} MB free on the run's disk")

    def done(self) -> None:
        self.release()
        if _CURRENT and _CURRENT[0] is self:
            _CURRENT.clear()
        from search.study import ON_FAILED_APPEND

        if self.journal_full in ON_FAILED_APPEND:
            ON_FAILED_APPEND.remove(self.journal_full)

    def needed(self, finished: int) -> tuple[float, float, int]:
        """(MB a trial takes, MB of tables and Tune state, trials left): measured on the run so far."""
        trials = [p for p in (self.run_dir / "trials").glob("*") if p.is_dir()]
        per_trial = [_size(p) + _size(self.run_dir / f"tune_{p.name}") for p in trials]
        tables = sum(p.stat().st_size for p in self.run_dir.iterdir() if p.is_file() and p.name != RESERVE)
        left = max(0, self.trials - finished)
        return (max(per_trial, default=0) / _MB, 2 * tables / _MB, left)

    def message(self, storage: str, finished: int, resume: str) -> str:
        per, tables, left = self.needed(finished)
        free = "" if self.free_at_stop is None else f" ({self.free_at_stop / _MB:.1f} MB free when it stopped)"
        need = (f"To finish its {left} remaining trial(s) it needs about {per * left + tables + reserve_bytes() / _MB:.0f} MB "
                f"more ({per:.1f} MB a trial, as its trials took so far; {tables:.1f} MB for its tables and Tune's state; "
                f"{reserve_bytes() / _MB:.0f} MB kept in reserve)") if left else \
            f"It needs about {tables + reserve_bytes() / _MB:.0f} MB free to write its tables and report"
        return (f"the disk of run {self.run_dir.name!r} is full: {self.run_dir} on --storage {storage}{free}; first sign: "
                f"{self.cause}. The run stopped: finished trials and results are kept, the trials it cut short are marked "
                f"interrupted and restart from their checkpoints. {need}: free that much (or move the run to a larger "
                f"--storage), then resume with\n  {resume}")


class DiskEvents(Callback):
    """Tune's side of the watch (no state of its own: Tune pickles callbacks with the run)."""

    def on_step_end(self, iteration, trials, **info):
        guard = current()
        if guard is not None:
            guard.check()
            if trials:  # where Tune saves its state before copying it into the run (search/tune_state.py)
                guard.staging = getattr(getattr(trials[0], "storage", None), "experiment_driver_staging_path", None)
                if guard.staging != guard.staging_noted:  # noted in the run: a resume after a kill -9 may need it
                    from search.tune_state import note_staging

                    try:
                        note_staging(guard.run_dir, guard.staging)
                        guard.staging_noted = guard.staging
                    except OSError:
                        pass  # (a full disk: the guard's own checks tell)
            if guard.cause is not None and guard.stop is not None and guard.stop.forwarded and not guard.final_room:
                guard.final_room = True
                guard.release_some()  # Tune's loop ends now and saves its state one last time: room for it

    def _trial_failed(self, trial) -> None:
        guard = current()
        if guard is None or guard.cause is not None:
            return
        try:
            text = Path(trial.error_file).read_text(errors="replace") if trial.error_file else ""
        except OSError:
            text = ""
        if is_disk_full(text):
            last = [line for line in text.strip().splitlines() if any(t in line for t in _TEXTS)]
            guard.full(f"trial {trial.trial_id}: {last[-1].strip() if last else 'no space left'}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._trial_failed(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._trial_failed(trial)
