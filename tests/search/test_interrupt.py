"""Stopping a search with a signal, as a user does (Ctrl-C, `kill`): at start-up nothing is
written and the exit code is 128 + the signal; mid-search the running trials are `interrupted`,
the results and report are written, and the message says how to resume. Resuming after these
stops is exercised on a two-node cluster in test_cluster_faults.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _start(tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "search.run", "--space", "gran_hbn", "--data", "synthetic",
                             "--budget", "smoke", "--storage", str(tmp_path / "runs"), "--name", "sig", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_ctrl_c_at_start_up_writes_nothing(tmp_path):
    p = _start(tmp_path)
    time.sleep(2.0)  # imports and argument checks: well before the search
    os.killpg(p.pid, signal.SIGINT)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 130, out
    assert "interrupted (SIGINT) before the search started" in out and "Traceback" not in out
    assert not (tmp_path / "runs" / "sig").exists()


def test_sigterm_mid_search_marks_running_trials_interrupted(tmp_path):
    p = _start(tmp_path, "--data-size", "smoke")
    run = tmp_path / "runs" / "sig"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300:
        st = [json.loads(f.read_text()) for f in run.glob("trials/*/status.json")]
        if any(s.get("status") == "running" and s.get("epochs_done", 0) >= 1 for s in st):
            break
        time.sleep(0.5)
    else:
        p.kill()
        pytest.fail("no trial got past its first epoch")
    os.kill(p.pid, signal.SIGTERM)  # `kill PID`: the driver only
    out, _ = p.communicate(timeout=180)
    assert p.returncode == 143, out
    assert "interrupted (SIGTERM)" in out and "--resume" in out and "--name sig" in out
    rows = pq.read_table(run / "results.parquet").to_pylist()
    states = {r["trial_id"]: r["status"] for r in rows}
    assert "interrupted" in states.values() and set(states.values()) <= {"complete", "interrupted"}, states
    assert not any(r["on_front"] for r in rows if r["status"] == "interrupted")
    assert (run / "report.html").exists()
    on_disk = {f.parent.name: json.loads(f.read_text())["status"] for f in run.glob("trials/*/status.json")}
    assert on_disk == states
