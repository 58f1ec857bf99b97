"""The run's Optuna study (`RUN_DIR/study.journal`): the one source of a trial's identity.

Each Optuna trial carries the Tune trial id it ran as (user attribute `tune_trial_id`, set when
the searcher suggests it). Trial numbers in results.parquet, the report and the summary are read
from here, so they agree with the study after any sequence of interrupts and resumes, whatever
the searcher object in memory knows (after `Tuner.restore` it is Tune's unpickled copy).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend

from search.relocate import relocated

__all__ = ["StudyUnreadable", "check_readable", "journal_path", "open_storage", "trial_numbers", "trial_states",
           "WholeLinesBackend"]


class StudyUnreadable(ValueError):
    """study.journal exists but cannot be read."""


JOURNAL = "study.journal"


def journal_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / JOURNAL


#: who gives room when an append fails: (journal path, error) -> True when it did (search/disk.py's
#: guard of the run, on a full disk: part of its reserve)
ON_FAILED_APPEND: list[Callable[[str, OSError], bool]] = []


class WholeLinesBackend(JournalFileBackend):
    """Optuna's journal file, whose append never leaves a cut-off line: a failed append (a full
    disk) is truncated back to the last whole line, and tried once more when room was given
    (`ON_FAILED_APPEND`). Module-level: Tune pickles the searcher."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Tune pickles the searcher with its storage: on a resume elsewhere, this machine's copy of the journal
        self.__dict__.update(state)
        path = relocated(self._file_path, JOURNAL)
        if path != self._file_path:
            JournalFileBackend.__init__(self, path)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        for attempt in (1, 2):
            size = os.stat(self._file_path).st_size
            try:
                return super().append_logs(logs)
            except OSError as exc:
                if os.stat(self._file_path).st_size > size:
                    os.truncate(self._file_path, size)
                if attempt == 2 or not any([give(self._file_path, exc) for give in list(ON_FAILED_APPEND)]):
                    raise


def open_storage(run_dir: str | Path):
    from optuna.storages import JournalStorage

    return JournalStorage(WholeLinesBackend(str(journal_path(run_dir))))


def _trials(run_dir: str | Path) -> list[Any]:
    import optuna

    path = journal_path(run_dir)
    if not path.exists():
        return []
    try:
        storage = open_storage(run_dir)
        studies = storage.get_all_studies()
        return [t for s in studies for t in storage.get_all_trials(s._study_id, deepcopy=False)]
    except Exception as exc:  # a torn or foreign file: optuna raises many kinds
        raise StudyUnreadable(f"{path} cannot be read ({type(exc).__name__}: {exc})") from exc
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def trial_numbers(run_dir: str | Path) -> dict[str, int]:
    """Tune trial id -> Optuna trial number, from the journal (empty when there is none yet).
    Should two Optuna trials name one Tune trial, the one that finished wins, then the later."""
    out: dict[str, tuple[bool, int]] = {}
    for t in _trials(run_dir):
        tid = t.user_attrs.get("tune_trial_id")
        if not tid:
            continue
        key = (t.state.is_finished(), t.number)
        if tid not in out or key > out[tid]:
            out[tid] = key
    return {tid: number for tid, (_, number) in out.items()}


def trial_states(run_dir: str | Path) -> dict[str, str]:
    """Tune trial id -> the Optuna state the journal holds for it (RUNNING, COMPLETE, FAIL, ...);
    as in `trial_numbers`, a finished trial wins over an unfinished one of the same id."""
    out: dict[str, tuple[tuple[bool, int], str]] = {}
    for t in _trials(run_dir):
        tid = t.user_attrs.get("tune_trial_id")
        key = (t.state.is_finished(), t.number)
        if tid and (tid not in out or key > out[tid][0]):
            out[tid] = (key, t.state.name)
    return {tid: state for tid, (_, state) in out.items()}


def check_readable(run_dir: str | Path) -> None:
    """Raise StudyUnreadable if the run's journal exists and is not whole: Optuna itself skips a
    last line it cannot parse (and would append after it, which breaks every later read), so
    each line is checked here: one JSON operation, ending in a newline."""
    import json

    path = journal_path(run_dir)
    if not path.exists():
        return
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("the line is incomplete (a write was cut off)")
                if "op_code" not in json.loads(line):
                    raise ValueError("not an Optuna journal operation")
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                raise StudyUnreadable(f"{path} cannot be read: line {n}: {exc}") from exc
    _trials(run_dir)
