"""Where a resumed run's pickled objects find the run: this machine's copy, not the one they name.

Tune pickles the scheduler and the searcher of a run (tuner.pkl, searcher-state-*.pkl) and
unpickles them on `--resume`; the MOASHA scheduler keeps its rungs in the run directory and the
searcher's Optuna storage is the run's study.journal, so both name the run directory of the
machine that started the run. A bucket run resumed on another machine has its copy elsewhere
(under that machine's staging folder). The driver restores and runs Tune inside
`restoring_into(run_dir)`; an object that keeps a path inside the run re-points it at this copy
when it is unpickled there (`relocated`). Outside such a block nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["relocated", "restoring_into"]

_into: list[str] = []  # the run directories of the restores in progress, innermost last


@contextmanager
def restoring_into(run_dir: str | Path) -> Iterator[None]:
    """While Tune unpickles a resumed run's objects: the run's files are in `run_dir`, this machine's copy."""
    _into.append(str(run_dir))
    try:
        yield
    finally:
        _into.pop()


def relocated(path: str, rel: str) -> str:
    """`path` as pickled, or, inside `restoring_into`, `rel` (its place in the run) in this machine's copy."""
    return str(Path(_into[-1]) / rel) if _into else path
