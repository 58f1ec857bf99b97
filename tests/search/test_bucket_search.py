"""Whole searches with `--storage s3://…` against an S3 server on 127.0.0.1 (moto's): everything a
run writes ends up in the bucket (failed trials with their reasons too); a run interrupted on one
machine resumes on another that has no copy of it, each interrupted trial from its checkpoint in
the bucket; a multi-worker trial keeps Ray Train's checkpoints there. Marked `cluster` (the shared
storage a cluster needs) and run by .ci/run."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest


ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "search.run", *args]


class Bucket:
    """Read a run's files straight from the bucket (as another machine would)."""

    def __init__(self, s3, uri: str, name: str) -> None:
        self.fs, base = s3.fs(uri)
        self.root = f"{base}/{name}"

    def files(self) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True, allow_not_found=True))
        return sorted(i.path[len(self.root) + 1:] for i in infos if i.type == pafs.FileType.File)

    def read(self, rel: str) -> bytes:
        with self.fs.open_input_stream(f"{self.root}/{rel}") as f:
            return f.read()

    def json(self, rel: str):
        return json.loads(self.read(rel))

    def results(self) -> list[dict]:
        return pq.read_table(io.BytesIO(self.read("results.parquet"))).to_pylist()


def test_a_bucket_search_keeps_everything_in_the_bucket(s3, tmp_path):
    uri = s3.bucket()
    env = s3.env(tmp_path / "staging")
    r = subprocess.run(_cmd("--space", "faulty", "--trials", "3", "--storage", uri, "--name", "b1"), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    bucket = Bucket(s3, uri, "b1")
    files = bucket.files()
    for rel in ("spec.json", "study.journal", "results.parquet", "curves.parquet", "report.html", "tuner.pkl"):
        assert rel in files, files
    assert any(f.startswith("figures/") and f.endswith(".png") for f in files)
    rows = bucket.results()
    states = {r["trial_id"]: (r["status"], r["error"]) for r in rows}
    assert sorted(s for s, _ in states.values()) == ["complete", "failed", "failed"], states
    errors = sorted(e for s, e in states.values() if s == "failed")
    assert "injected failure" in errors[0] + errors[1] and "TrialDiverged" in errors[0] + errors[1], errors
    for tid, (state, _) in states.items():  # each trial's own files, pushed from its scratch directory
        status = bucket.json(f"trials/{tid}/status.json")
        assert status["status"] == state
        if state == "complete":
            assert {f"trials/{tid}/points.json", f"trials/{tid}/model.pt", f"trials/{tid}/exit_cache_test.npz"} <= set(files)
    assert not any((tmp_path / "staging" / "scratch").rglob("*.json"))  # finished trials leave no scratch behind
    mirror = next((tmp_path / "staging" / "runs").rglob("b1"))
    assert pq.read_table(mirror / "results.parquet").to_pylist() == rows
    assert f"this machine's copy: {mirror}" in " ".join(r.stderr.split())
    again = subprocess.run(_cmd("--space", "faulty", "--storage", uri, "--name", "b1"), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "run 'b1' exists in" in again.stderr, again.stderr

    # the commands that read a finished run take it from the bucket, on a machine with no copy
    from trainables.storage import join_uri

    run_uri, other = join_uri(uri, "b1"), s3.env(tmp_path / "other")
    (done,) = [t for t, (state, _) in states.items() if state == "complete"]
    written = bucket.fs.get_file_info(f"{bucket.root}/results.parquet").mtime
    time.sleep(1.1)
    r = subprocess.run([sys.executable, "-m", "search.recalibrate", run_uri, "--max-points", "3", "--no-report"],
                       cwd=ROOT, env=other, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    points = bucket.json(f"trials/{done}/points.json")
    assert points["recalibrated_with"]["max_points"] == 3  # pushed back to the bucket, with the tables
    assert bucket.fs.get_file_info(f"{bucket.root}/results.parquet").mtime > written
    assert "pushed" in r.stdout and "rewritten files" in r.stdout
    before = bucket.fs.get_file_info(f"{bucket.root}/report.html").mtime
    time.sleep(1.1)
    r = subprocess.run([sys.executable, "-m", "reports.build", run_uri], cwd=ROOT, env=other, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert bucket.fs.get_file_info(f"{bucket.root}/report.html").mtime > before
    r = subprocess.run([sys.executable, "-m", "reports.build", join_uri(uri, "nope")], cwd=ROOT, env=other,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no run there" in r.stderr and "b1" in r.stderr, r.stderr
    load = ("import sys; from search.load import load_operating_point; clf = load_operating_point(sys.argv[1]); "
            "print(clf.point['calibration']['trial_id'])")
    r = subprocess.run([sys.executable, "-c", load, run_uri], cwd=ROOT, env=s3.env(tmp_path / "third"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == done, r.stderr[-3000:]


def test_an_interrupted_bucket_run_resumes_on_a_machine_without_a_copy(s3, tmp_path):
    uri = s3.bucket()
    bucket = Bucket(s3, uri, "sig")
    # five to ten epochs a trial: one seen in its third epoch, with three or more to go, is still
    # running when the stop reaches it
    args = ("--space", "long_gran", "--trials", "2", "--storage", uri,
            "--name", "sig", "--no-report")
    p = subprocess.Popen(_cmd(*args), cwd=ROOT, env=s3.env(tmp_path / "first"), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    t0 = time.monotonic()
    # watch the bucket for a trial in its third epoch: the checkpoint of its first is then surely
    # registered by the driver (Tune resumes from the last checkpoint the driver had taken in)
    while time.monotonic() - t0 < 300:
        statuses = [bucket.json(f) for f in bucket.files() if f.endswith("/status.json")]
        if any(s.get("status") == "running" and 2 <= s.get("epochs_done", 0) <= s["epochs_planned"] - 3 for s in statuses):
            break
        time.sleep(0.5)
    else:
        p.kill()
        pytest.fail("no trial reported its second epoch to the bucket")
    os.kill(p.pid, signal.SIGTERM)
    out, _ = p.communicate(timeout=180)
    assert p.returncode == 143, out[-3000:]
    interrupted = {r["trial_id"] for r in bucket.results() if r["status"] == "interrupted"}
    assert interrupted, bucket.results()
    done_at_stop = {t: bucket.json(f"trials/{t}/status.json").get("epochs_done", 0) for t in interrupted}
    advanced = [t for t, n in done_at_stop.items() if n >= 2]  # its first epoch's checkpoint is surely registered
    assert advanced, done_at_stop
    # another machine: nothing of the run but what the bucket holds (Tune's pickled searcher names the
    # first machine's copy of the study journal: it must read this machine's)
    shutil.rmtree(tmp_path / "first")
    r = subprocess.run(_cmd(*args, "--resume"), cwd=ROOT, env=s3.env(tmp_path / "second"), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = bucket.results()
    assert {row["status"] for row in rows} == {"complete"}, {row["trial_id"]: row["status"] for row in rows}
    for tid in advanced:
        starts = bucket.json(f"trials/{tid}/status.json")["starts"]
        assert len(starts) == 2 and starts[1]["from_epoch"] >= 1, starts  # from its checkpoint in the bucket
    assert (tmp_path / "second" / "runs").exists() and not (tmp_path / "first").exists()  # nothing went to the old copy


def test_a_multi_worker_trial_keeps_ray_trains_checkpoints_in_the_bucket(s3, tmp_path):
    uri = s3.bucket()
    r = subprocess.run(_cmd("--space", "tiny_gran", "--trials", "1", "--workers-per-trial", "2", "--cpus-per-trial", "2",
                            "--storage", uri, "--name", "mw", "--no-report"),
                       cwd=ROOT, env=s3.env(tmp_path / "staging"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    bucket = Bucket(s3, uri, "mw")
    rows = bucket.results()
    assert {row["status"] for row in rows} == {"complete"}
    tid = rows[0]["trial_id"]
    files = bucket.files()
    assert any(f.startswith(f"train/{tid}/") and "checkpoint_" in f for f in files), files
    status = bucket.json(f"trials/{tid}/status.json")
    assert status["provenance"]["workers"] == 2 and status["provenance"]["backend"] == "gloo"
    assert f"trials/{tid}/points.json" in files


def test_a_moasha_bucket_run_resumed_on_another_machine_goes_on_with_its_rungs(s3, tmp_path):
    """The scheduler's rungs (scheduler/rungs.json) go up to the bucket; a resume on a machine with
    no copy of the run pulls them and the restored scheduler reads them there."""
    from search.moasha import STATE_FILE

    uri = s3.bucket()
    args = ("--space", "tiny_asha", "--scheduler", "moasha", "--storage", uri, "--name", "mo", "--no-report")
    r = subprocess.run(_cmd(*args, "--trials", "3"), cwd=ROOT, env=s3.env(tmp_path / "first"), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    bucket = Bucket(s3, uri, "mo")
    first = bucket.json(STATE_FILE)
    first_ids = {tid for rung in first["rungs"].values() for tid, _ in rung}
    assert first_ids == {row["trial_id"] for row in bucket.results()}  # every trial reached the first rung
    shutil.rmtree(tmp_path / "first")  # the first machine's copy (which the pickled scheduler names) is not here
    r = subprocess.run(_cmd(*args, "--trials", "5", "--resume"), cwd=ROOT, env=s3.env(tmp_path / "second"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming without" not in r.stderr + r.stdout  # the restored scheduler found its rungs
    after = bucket.json(STATE_FILE)
    for epoch, rung in first["rungs"].items():
        assert after["rungs"][epoch][:len(rung)] == rung  # kept, in their order, before the new trials
    assert {k: v for k, v in after["stopped"].items() if k in first_ids} == first["stopped"]
    assert len({row["trial_id"] for row in bucket.results()}) == 5
    assert not (tmp_path / "first").exists()  # nothing went to the first machine's copy
    copy = next((tmp_path / "second").rglob(STATE_FILE))
    assert json.loads(copy.read_text()) == after
