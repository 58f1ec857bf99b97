"""A Ctrl-C at start-up ends `python -m search.run` with exit 130, the message "interrupted (SIGINT)
before the search started", no traceback and nothing written, whatever was being imported.

The signal is made to arrive at a chosen import, deterministically: a finder put first on
`sys.meta_path` sends SIGINT to the driver itself when that module is looked for, and the driver is
then run as `python -m search.run` runs it (runpy, `__main__`). The cases are the moments a real
Ctrl-C can land in: halfway through `import ray` (`ray._private.worker` has registered Ray's
`shutdown` with atexit, but the `ray` package is half made: that shutdown then crashed with
"module 'ray' has no attribute 'actor'" and a traceback, CI of 2026-12-06), and while search.run's
own module-level imports run (before `main` and its handler are reached); and (slow: it starts
Ray's head processes) halfway through `ray.init`, after which no process of that Ray may remain,
for a new run and for a resume (whose run directory exists: spec.json must stay as it was).

Not covered, and not ours to cover: a signal in the first ~0.1 s, while the interpreter itself
starts (site-packages, `import search`), before search.signals can install its handler: Python's
own KeyboardInterrupt traceback. Nothing is written by then."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_DRIVER = r"""
import os, runpy, signal, sys

class SignalAt:
    def __init__(self, name):
        self.name, self.sent = name, False

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name and not self.sent:
            self.sent = True
            worker = "ray._private.worker" in sys.modules  # Ray's atexit shutdown is registered
            print(f"[test] SIGINT while importing {fullname} (ray's worker loaded: {worker}) pid {os.getpid()}", flush=True)
            os.kill(os.getpid(), signal.SIGINT)
        return None  # the real finders import it (unless the signal's handler raised first)

sys.meta_path.insert(0, SignalAt(sys.argv[1]))
sys.argv = ["search.run", *sys.argv[2:]]
runpy.run_module("search.run", run_name="__main__", alter_sys=True)
"""


def _processes_of_session(pid: int) -> list[str]:
    """Ray processes of the session a driver of this pid started (Ray names its sessions
    session_<time>_<driver pid>, and every process of it carries the name)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if re.search(rf"session_\S*_{pid}(?:[\s/]|$)", cmd):
                found.append(f"{proc.name}: {cmd[:120]}")
    return found


def _driver(module: str, *args: str) -> tuple[subprocess.CompletedProcess, str, int | None]:
    p = subprocess.run([sys.executable, "-c", _DRIVER, module, *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = p.stdout + p.stderr
    sent = re.search(rf"\[test\] SIGINT while importing {re.escape(module)} \(ray's worker loaded: \w+\) pid (\d+)", out)
    return p, out, int(sent.group(1)) if sent else None


@pytest.mark.slow
def test_a_resume_stopped_halfway_through_ray_init_keeps_the_run_as_it_was(tmp_path):
    """The run directory exists on a resume, so a stop while Ray starts goes the way a stop
    mid-search does (the run is collected, the resume command printed): still exit 130, no
    traceback, the run's spec.json untouched, and no process of that Ray left."""
    runs = tmp_path / "runs"
    common = ["--space", "gran_hbn", "--storage", str(runs), "--name", "r"]
    # a run stopped after its spec.json was written, before any trial (the searcher's module is imported then)
    p, out, pid = _driver("ray.tune.search.optuna", *common, "--data", "synthetic", "--budget", "smoke",
                          "--data-size", "tiny", "--trials", "1")
    assert pid is not None and p.returncode == 130 and "Traceback" not in out, out
    spec = (runs / "r" / "spec.json").read_bytes()
    p, out, pid = _driver("ray.autoscaler._private.cli_logger", *common, "--resume")
    assert pid is not None, out  # the signal came halfway through ray.init
    assert p.returncode == 130, out
    assert "interrupted (SIGINT)" in out and "--resume" in out, out
    assert "Traceback" not in out and "Exception ignored" not in out, out
    assert (runs / "r" / "spec.json").read_bytes() == spec
    assert _processes_of_session(pid) == []


@pytest.mark.parametrize("module", [
    "ray.client_builder",  # halfway through `import ray`
    "search.checks",  # search.run's own module-level imports
    # halfway through ray.init: the GCS is up and the head's monitor is being started (Ray's node.py)
    pytest.param("ray.autoscaler._private.cli_logger", marks=pytest.mark.slow),
])
def test_ctrl_c_during_an_import_exits_130_without_traceback(tmp_path, module):
    runs = tmp_path / "runs"
    p, out, pid = _driver(module, "--space", "gran_hbn", "--data", "synthetic", "--budget", "smoke", "--storage", str(runs),
                          "--name", "sig")
    assert pid is not None, out  # the signal came where it was meant to
    # the ray cases: halfway through `import ray` (or later), after its worker module registered Ray's atexit shutdown
    assert f"(ray's worker loaded: {module.startswith('ray.')})" in out, out
    assert p.returncode == 130, out
    assert "interrupted (SIGINT) before the search started" in out, out
    assert "Traceback" not in out and "Exception ignored" not in out, out
    assert not runs.exists() or not any(runs.iterdir()), sorted(runs.rglob("*"))
    assert _processes_of_session(pid) == []  # whatever Ray had started is gone with the driver
