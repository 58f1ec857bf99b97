"""`--scheduler moasha` in a real Tune search, as a user runs it (`python3 -m search.run`), on simulated
learning curves (benchmarks/learning_curves.py: two objectives, eight epochs of a hundredth of a
second). One search serves every assertion: it is killed (SIGKILL to the driver) once the
scheduler has stopped trials, then resumed with `--resume` to its end. It must stop trials, never
stop one that no earlier trial at its rung dominates, record each stopped trial's fidelity
(results, Optuna), keep its rungs across the kill, and the report must show the search's progress."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pyarrow.parquet as pq
import pytest

from search.rungs import as_minimisation, nondominated_ranks

pytestmark = pytest.mark.slow  # two searches (Ray started twice): about 80 s on 2 cores

ROOT = Path(__file__).resolve().parents[2]
TRIALS, EPOCHS = 16, 8
ARGS = ["--space", "simulated_curves", "--data", "synthetic", "--budget", "smoke", "--trials", str(TRIALS), "--seed", "0",
        "--scheduler", "moasha", "--name", "mo"]


def _env() -> dict[str, str]:
    # TUNE_GLOBAL_CHECKPOINT_S=0: Tune saves its experiment state at every step, so that a trial running at the
    # kill restarts from a checkpoint Tune still has (otherwise a simulated epoch of 10 ms outruns the snapshot)
    return {**os.environ, "EXITSEARCH_SPACES": "benchmarks.learning_curves", "PYTHONPATH": str(ROOT),
            "TUNE_GLOBAL_CHECKPOINT_S": "0"}


def _leftovers(session: int) -> list[int]:
    out = subprocess.run(["ps", "-s", str(session), "-o", "pid="], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    storage = tmp_path_factory.mktemp("moasha")
    run_dir = storage / "mo"
    log = open(storage / "first.log", "w")
    # the report is on (a resume keeps the run's own settings): the killed driver never gets to build it, the resume does
    p = subprocess.Popen([sys.executable, "-m", "search.run", *ARGS, "--storage", str(storage)], cwd=ROOT,
                         env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    state = run_dir / "scheduler" / "rungs.json"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and p.poll() is None:
            kept = json.loads(state.read_text()) if state.exists() else {"stopped": {}, "rungs": {}}
            if len(kept["stopped"]) >= 2 and len(kept["rungs"].get("1", ())) <= TRIALS - 4:  # trials left to resume
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the search ended or stopped no trial in time: {(storage / 'first.log').read_text()[-3000:]}")
        before = json.loads(state.read_text())
        os.kill(p.pid, signal.SIGKILL)  # kill -9 the driver, mid-search
        p.wait(30)
    finally:
        for pid in _leftovers(p.pid):  # Ray's agents of the killed driver (its session; started here)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
    resumed = subprocess.run([sys.executable, "-m", "search.run", *ARGS, "--storage", str(storage), "--resume"], cwd=ROOT,
                             env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    study = optuna.load_study(study_name="mo", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(run_dir / "study.journal"))))
    return {"dir": run_dir, "before": before, "after": json.loads(state.read_text()), "rows": rows,
            "trials": {r["trial_id"]: r for r in rows}, "study": study, "out": resumed.stdout + resumed.stderr,
            "first_out": (storage / "first.log").read_text()}


# Tune keeps one checkpoint per trial (search/tuner.py) and names it in its experiment snapshot; a kill that
# lands after a new checkpoint replaced the old one on disk but before the next snapshot leaves the snapshot
# naming a deleted checkpoint, and Tune cannot restart that trial ("does not exist on storage anymore"): a
# race of the platform's resume, not of the scheduler, which the search records as a failed trial and survives
LOST_CHECKPOINT = "Could not recover from checkpoint as it does not exist on storage anymore"


def test_it_stops_trials_and_records_their_fidelity(run):
    trials, stopped = run["trials"], run["after"]["stopped"]
    failed = {t: r["error"] for t, r in trials.items() if r["status"] == "failed"}
    assert all(LOST_CHECKPOINT in (e or "") for e in failed.values()) and len(failed) <= 1, failed
    assert len(trials) == TRIALS and {r["status"] for r in trials.values()} - {"failed"} == {"complete", "partial"}, \
        {t: r["status"] for t, r in trials.items()}
    partial = {t for t, r in trials.items() if r["status"] == "partial"}
    assert partial == set(stopped) - set(failed) and len(partial) >= 2
    # a trial the scheduler stopped just before the kill may not have been ended by Tune yet: Tune restarts it
    # on --resume from whatever checkpoint its last snapshot names, and it is stopped at its first result
    # (what it trained is then what that start trained); every other stopped trial ends at its rung exactly
    racing = set(run["before"]["stopped"])
    for t in partial:
        r = trials[t]
        assert 1 <= r["epochs_done"] <= stopped[t] + 1 if t in racing else r["epochs_done"] == stopped[t], (t, r)
        assert r["fidelity"] == r["epochs_done"] / EPOCHS < 1, r
    assert all(r["fidelity"] == 1.0 and r["epochs_done"] == EPOCHS for r in trials.values() if r["status"] == "complete")
    assert not any(r["on_front"] for r in run["rows"] if r["status"] != "complete")
    assert any(r["on_front"] for r in run["rows"] if r["status"] == "complete")
    # Optuna: stopped trials are PRUNED (never told their partial values as final), with what their rung taught
    # (a trial Optuna was asked for just before the kill, never given to Tune, carries no Tune id)
    by_id = {t.user_attrs["tune_trial_id"]: t for t in run["study"].trials if "tune_trial_id" in t.user_attrs}
    for t in partial:
        ot = by_id[t]
        assert ot.state.name == "PRUNED" and ot.values is None and ot.user_attrs["fidelity"] < 1
        assert len(ot.user_attrs["rung_values"]) == 2 and (t in racing or ot.user_attrs["rung_epoch"] == stopped[t])
    assert all(by_id[t].state.name == "COMPLETE" and by_id[t].user_attrs["fidelity"] == 1.0
               for t in set(trials) - partial - set(failed))
    # the live log says which trials were stopped early, and where
    said = re.findall(r"trial (\w+) stopped early at epoch (\d+)", run["first_out"] + run["out"])
    assert said and all(t in partial and (t in racing or int(e) == stopped[t]) for t, e in said), said
    assert not set(re.findall(r"trial (\w+) done:", run["first_out"] + run["out"])) & partial


def test_it_never_stops_a_trial_nondominated_at_its_rung(run):
    rungs = {int(m): r for m, r in run["after"]["rungs"].items()}
    assert sorted(rungs) == [1, 2, 4]
    for tid, milestone in run["after"]["stopped"].items():
        ids = [t for t, _ in rungs[milestone]]
        i = ids.index(tid)
        # what the scheduler saw when it decided: the trials recorded at that rung before it, and itself
        pts = as_minimisation([v for _, v in rungs[milestone][: i + 1]], ["min", "min"])
        assert nondominated_ranks(pts)[i] > 0, f"{tid} stopped at rung {milestone} while non-dominated there"
    # and the trials that went on from a rung are recorded at the next one unless they ended first
    assert all(t in {x for x, _ in rungs[2]} for t, _ in rungs[4])


def test_its_rungs_survive_a_kill_and_resume(run):
    before, after = run["before"], run["after"]
    for m, recorded in before["rungs"].items():
        assert after["rungs"][m][: len(recorded)] == recorded  # every decision before the kill, intact and in order
    assert before["stopped"].items() <= after["stopped"].items()
    assert sum(map(len, after["rungs"].values())) > sum(map(len, before["rungs"].values()))  # and it went on deciding
    assert "Traceback" not in run["out"]


def test_the_report_shows_the_search_progress(run):
    from reports.progress import run_progress
    from reports.tables import load_run

    p = run_progress(load_run(run["dir"]))
    partial = {t for t, r in run["trials"].items() if r["status"] == "partial"}
    complete = {t for t, r in run["trials"].items() if r["status"] == "complete"}
    assert set(p.stopped_trials) == partial and set(p.complete_trials) == complete
    assert p.total_epochs == sum(r["epochs_done"] for r in run["trials"].values()) < p.planned_epochs
    assert p.planned_epochs == sum(EPOCHS if r["status"] != "failed" else r["epochs_done"] for r in run["trials"].values())
    assert (np.diff(p.hypervolume) >= 0).all() and (np.diff(p.complete_epochs) >= 0).all() and p.hypervolume[-1] > 0
    assert (run["dir"] / "figures" / "progress.png").exists()
    html = (run["dir"] / "report.html").read_text()
    assert "Search progress" in html and f"Crosses: the {len(partial)} trial(s) a scheduler stopped early" in html
