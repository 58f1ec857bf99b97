"""Ray's error logs that would print a traceback for what the run already says become one line."""

from __future__ import annotations

import logging

from search.ray_logs import one_line_ray_errors


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _logged(name: str, msg: str, exc: BaseException | None = None) -> str:
    one_line_ray_errors()
    one_line_ray_errors()  # installed once however often it is called
    log = logging.getLogger(name)
    keep = _Keep()
    log.addHandler(keep)
    try:
        if exc is None:
            log.error(msg)
        else:
            try:
                raise exc
            except type(exc):
                log.error(msg, exc_info=True)
    finally:
        log.removeHandler(keep)
    assert len(log.filters) == len({type(f) for f in log.filters})
    return "\n".join(keep.lines)


def test_state_not_saved_on_a_full_disk_is_one_line():
    text = _logged("ray.tune.execution.experiment_state", "Saving experiment state to storage at '/r' failed with exception: ",
                   OSError(28, "No space left on device"))
    assert "Traceback" not in text and len(text.splitlines()) == 1
    assert text.startswith("Saving experiment state to storage at '/r'") and "OSError: [Errno 28] No space left" in text


def test_an_unhandled_task_error_is_its_first_and_last_line():
    err = "ray::ImplicitFunc.train() (pid=1, ip=x)\n  File \"a.py\", line 1, in f\n    g()\nOSError: [Errno 28] No space left on device"
    text = _logged("ray._private.worker", f"Unhandled error (suppress with 'RAY_IGNORE_UNHANDLED_ERRORS=1'): {err}")
    assert len(text.splitlines()) == 1 and "File \"a.py\"" not in text
    assert text.startswith("Unhandled error") and text.endswith("OSError: [Errno 28] No space left on device")


def test_a_trial_failure_is_one_line_and_other_records_pass_unchanged():
    text = _logged("ray.tune.execution.tune_controller", "Trial task failed for trial t1", RuntimeError("boom\nmore"))
    assert text == "Trial task failed for trial t1: RuntimeError: boom"
    assert _logged("ray._private.worker", "something else\nsecond line") == "something else\nsecond line"
