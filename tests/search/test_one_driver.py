"""One run, one driver, end to end with Ray, as users run it (`python -m search.run` in
subprocesses): two drivers started on one run at once (one refused, exit 2, naming the other),
a resume asking for more trials (the run ends with exactly that many, recorded in spec.json), a
driver killed with SIGKILL (the next command ends the Ray processes it left, the resume takes its
lock over and finishes the run), and `--address auto` finding another search's in-process Ray
(refused). Marked slow: each search is a tiny one, a minute or two on 2 cores."""

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

from search.ray_session import MARK, _cmdline, _environ, _pids, _ppid, driver_mark

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
TINY = ["--space", "gran_hbn", "--data", "synthetic", "--data-size", "tiny", "--no-report"]


def _start(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "search.run", *args], cwd=ROOT, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, text=True)


def _run(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search.run", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _wait_training(run: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for f in run.glob("trials/*/status.json"):
            try:
                if json.loads(f.read_text()).get("epochs_done", 0) >= 1:
                    return
            except (OSError, ValueError):
                pass
        assert proc.poll() is None, "the search ended before a trial trained an epoch"
        time.sleep(0.5)
    raise AssertionError("no trial trained an epoch")


def _journal(run: Path) -> dict[str, str]:
    from search.study import trial_states

    return trial_states(run)


def test_two_drivers_on_one_run_then_a_resume_asking_for_more_trials(tmp_path):
    storage = tmp_path / "runs"
    args = [*TINY, "--trials", "1", "--storage", str(storage), "--name", "one"]
    a = _start(*args, "--seed", "1", log=tmp_path / "a.log")
    b = _start(*args, "--seed", "2", log=tmp_path / "b.log")
    codes = {"a": a.wait(timeout=600), "b": b.wait(timeout=600)}
    logs = {k: " ".join((tmp_path / f"{k}.log").read_text().split()) for k in codes}
    assert sorted(codes.values()) == [0, 2], (codes, logs)
    loser = "a" if codes["a"] == 2 else "b"
    winner = {"a": a, "b": b}["b" if loser == "a" else "a"]
    assert f"run 'one' in {storage} is in use: held by another driver:" in logs[loser]
    assert f"pid {winner.pid}" in logs[loser] and "Traceback" not in logs[loser]
    run = storage / "one"
    assert list(_journal(run).values()) == ["COMPLETE"]  # one search, one trial, one seed
    assert json.loads((run / "spec.json").read_text())["seed"] == (1 if loser == "b" else 2)

    p = _run("--space", "gran_hbn", "--storage", str(storage), "--name", "one", "--resume", "--trials", "3")
    assert p.returncode == 0, p.stderr[-3000:]
    states = _journal(run)
    assert sorted(states.values()) == ["COMPLETE"] * 3  # exactly the trials asked for
    rows = {r["trial_id"]: r["status"] for r in pq.read_table(run / "results.parquet", columns=["trial_id", "status"]).to_pylist()}
    assert rows == {tid: "complete" for tid in states}
    spec = json.loads((run / "spec.json").read_text())
    assert spec["trials"] == 3 and [h["changed"] for h in spec["history"]] == [{"trials": [1, 3]}]
    assert not (storage / ".one.lock").exists()


def _marked(mark: str) -> list[int]:
    return [pid for pid in _pids() if _environ(pid).get(MARK) == mark]


def test_a_killed_driver_leaves_no_ray_processes_once_the_next_command_runs_and_its_run_resumes(tmp_path):
    storage = tmp_path / "runs"
    driver = _start("--space", "gran_hbn", "--data", "synthetic", "--data-size", "smoke", "--trials", "2", "--no-report",
                    "--storage", str(storage), "--name", "killed", log=tmp_path / "killed.log")
    _wait_training(storage / "killed", driver)
    mark = driver_mark(driver.pid)
    assert _marked(mark), "the driver's own Ray processes carry its mark"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    p = subprocess.run([sys.executable, "-m", "search.run", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0
    assert _marked(mark) == [], "the next command ended what the killed driver's Ray left"
    assert (storage / ".killed.lock").exists()  # its record stays; no process holds it
    p = _run("--space", "gran_hbn", "--storage", str(storage), "--name", "killed", "--resume")
    out = " ".join(p.stderr.split())
    assert p.returncode == 0, p.stderr[-3000:]
    assert "took over the lock of run 'killed' left by host" in out and f"pid {driver.pid}" in out and "it was killed" in out
    assert sorted(_journal(storage / "killed").values()) == ["COMPLETE", "COMPLETE"]


def _gcs_of(pid: int, timeout: float = 120) -> str:
    """The GCS address of the Ray that process `pid` started in-process (its raylet's flag)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for child in _pids():
            cmd = _cmdline(child)
            if _ppid(child) == pid and "raylet" in cmd.split(" ", 1)[0]:
                return next(w.split("=", 1)[1] for w in cmd.split() if w.startswith("--gcs-address="))
        time.sleep(0.5)
    raise AssertionError("the search started no Ray")


def test_address_auto_refuses_another_searchs_in_process_ray(tmp_path):
    other = _start("--space", "gran_hbn", "--data", "synthetic", "--data-size", "smoke", "--trials", "2", "--no-report",
                   "--storage", str(tmp_path / "runs"), "--name", "other", log=tmp_path / "other.log")
    try:
        address = _gcs_of(other.pid)
        # `auto` finds a Ray on this machine; RAY_ADDRESS points it at that search's (others may run here). Ray 2.60
        # turns token authentication on: a process that joins uses the token too (~/.ray/auth_token)
        p = _run(*TINY, "--storage", str(tmp_path / "runs"), "--name", "mine", "--address", "auto",
                 env={"RAY_ADDRESS": address, "RAY_AUTH_MODE": "token"}, timeout=300)
        out = " ".join(p.stderr.split())
        assert p.returncode == 2, p.stderr[-3000:]
        assert f"--address auto found the Ray at {address}: the in-process Ray of another search" in out
        assert "start a cluster to share" in out and "Traceback" not in out
        assert not (tmp_path / "runs" / "mine").exists()
    finally:
        other.send_signal(signal.SIGTERM)
        other.wait(timeout=300)
