"""Ray's error logs that would put a traceback on the user's screen for what the run already says
in its own words: each becomes one line. Pure logging filters; `one_line_ray_errors()` installs them
on Ray's loggers (once per process)."""

from __future__ import annotations

import logging

__all__ = ["one_line_ray_errors"]


class _TrialFailureOneLine(logging.Filter):
    """Tune logs every trial failure with its whole traceback; an expected failure (a trial that
    raised, a lost node) is one line here: the trial's status.json and results.parquet's `error`
    column keep the reason, and its traceback is in status.json."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and str(record.msg).startswith("Trial task failed"):
            exc = record.exc_info[1]
            text = str(exc).strip().splitlines()
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {text[0] if text else ''}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


class _RayErrorOneLine(logging.Filter):
    """Two more of Ray's errors whose tracebacks say nothing the run does not say already, one line
    each: Tune's state not saved (on a full disk, which the run's disk guard reports with what to
    do) and an "Unhandled error" of a trial's task (Tune has the trial's failure; its status.json
    keeps the traceback). A traceback on the screen reads as a crash of the platform."""

    STARTS = ("Saving experiment state to storage", "Unhandled error")

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.STARTS):
            return True
        lines = [line.strip() for line in record.getMessage().strip().splitlines() if line.strip()]
        exc = record.exc_info[1] if record.exc_info and record.exc_info[1] is not None else None
        if exc is not None:
            last = [line for line in str(exc).strip().splitlines() if line.strip()]
            lines.append(f"{type(exc).__name__}: {last[-1].strip() if last else ''}")
        record.msg = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
        record.args, record.exc_info, record.exc_text = (), None, None
        return True


_FILTERS = {"ray.tune.execution.tune_controller": _TrialFailureOneLine,
            "ray.tune.execution.experiment_state": _RayErrorOneLine,
            "ray._private.worker": _RayErrorOneLine}


def one_line_ray_errors() -> None:
    """Install the filters on Ray's loggers (a logger's filters see only its own records)."""
    for name, cls in _FILTERS.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, cls) for f in log.filters):
            log.addFilter(cls())
