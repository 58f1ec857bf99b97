"""A run is safe to open and cannot be mixed with another, the parts that need no Ray: the run lock
(one driver per run, on this machine, another node, a bucket), what a resume may change, numeric
flags, messages printed verbatim, Ray processes a killed driver left, Tune's state read whole,
the journal's whole lines, and statuses agreeing with the journal. The CLI cases run
`python -m search.run` in a subprocess, as users do; the end-to-end ones (Ray) are in
test_one_driver.py, test_full_disk.py and test_cluster_gone.py."""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search.checks import BadInput
from search.resume import changes, differences, history, resumed_document, resumed_fields
from search.run_lock import RunBusy, RunLock
from search.spec import NUMBERS, RunSpec, check_numbers

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search.run", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# -- the run lock --------------------------------------------------------------------------------
def test_a_second_driver_on_this_machine_is_refused_and_told_who_holds_the_run(tmp_path):
    first = RunLock(str(tmp_path), "r", command="first")
    assert first.acquire() is None
    second = RunLock(str(tmp_path), "r", command="second")
    with pytest.raises(RunBusy, match=rf"in use: .*host {socket.gethostname()}, pid {os.getpid()}, since .*\(first\)"):
        second.acquire()
    first.release()
    assert not (tmp_path / ".r.lock").exists()  # released: the record goes
    assert second.acquire() is None
    second.release()


def test_a_lock_left_by_a_killed_driver_is_taken_over_and_explained(tmp_path):
    (tmp_path / ".r.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": 999999, "since": "then",
                                                  "token": "old"}))  # no process holds its flock: it was killed
    lock = RunLock(str(tmp_path), "r")
    note = lock.acquire()
    assert "pid 999999" in note and "ended without releasing it (it was killed)" in note
    assert json.loads((tmp_path / ".r.lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_a_lock_of_another_node_is_refused_while_renewed_and_taken_over_once_abandoned(tmp_path, monkeypatch):
    record = {"host": "othernode", "pid": 7, "since": "then", "token": "theirs"}
    (tmp_path / ".r.lock").write_text(json.dumps(record))
    with pytest.raises(RunBusy, match="host othernode, pid 7.*its last sign of life 0 s ago"):
        RunLock(str(tmp_path), "r").acquire()
    assert json.loads((tmp_path / ".r.lock").read_text()) == record  # theirs: left as it was
    monkeypatch.setenv("EXITSEARCH_LOCK_STALE_S", "5")
    os.utime(tmp_path / ".r.lock", (time.time() - 30, time.time() - 30))
    lock = RunLock(str(tmp_path), "r")
    assert "not renewed for 30 s" in lock.acquire()
    lock.release()


def test_the_lock_makes_no_storage_folder_it_does_not_keep(tmp_path):
    lock = RunLock(str(tmp_path / "new" / "runs"), "r")
    lock.acquire()
    assert (tmp_path / "new" / "runs" / ".r.lock").is_file()
    lock.release()
    assert list(tmp_path.iterdir()) == []


def test_a_bucket_run_has_one_driver_too(s3, monkeypatch):
    uri = s3.bucket()
    first = RunLock(uri, "r", command="first")
    assert first.acquire() is None
    with pytest.raises(RunBusy, match=r"in use: .*\(first\).*lock s3://"):
        RunLock(uri, "r").acquire()
    first._stop.set()  # the driver is gone (its heartbeat stops) without releasing the lock
    monkeypatch.setenv("EXITSEARCH_LOCK_STALE_S", "2")
    time.sleep(3)
    taker = RunLock(uri, "r")
    assert "not renewed for" in taker.acquire()
    first.held = False  # the old driver no longer releases what is not its own
    taker.release()
    fs, base = s3.fs(uri)
    import pyarrow.fs as pafs

    assert fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)) == []  # released: nothing left


_HOLD = """
import sys, time
from search.run_lock import RunLock
lock = RunLock(sys.argv[1], sys.argv[2], command="the holder")
lock.acquire()
print("held", flush=True)
time.sleep(300)
"""


def _kept(storage: Path) -> None:
    from tests.search.test_bad_input import _kept_run

    storage.mkdir(parents=True, exist_ok=True)
    _kept_run(storage)


def test_cli_refuses_a_held_run_and_takes_over_the_lock_of_a_killed_driver(tmp_path):
    storage = tmp_path / "runs"
    _kept(storage)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(storage), "kept"], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        p = _cli("--space", "gran_hbn", "--storage", str(storage), "--name", "kept", "--resume")
        assert p.returncode == 2, p.stderr
        assert f"run 'kept' in {storage} is in use: held by another driver: host {socket.gethostname()}, pid {holder.pid}" \
            in " ".join(p.stderr.split())
        assert "(the holder)" in p.stderr and "Traceback" not in p.stderr
    finally:
        holder.send_signal(signal.SIGKILL)  # killed: its flock goes with it, its record stays
        holder.wait()
    assert (storage / ".kept.lock").exists()
    p = _cli("--space", "gran_hbn", "--storage", str(storage), "--name", "kept", "--resume", "--seed", "3")
    out = " ".join(p.stderr.split())
    assert p.returncode == 2 and f"took over the lock of run 'kept' left by host {socket.gethostname()}, pid {holder.pid}" \
        in out and "it was killed" in out, p.stderr
    assert "--seed: the run has 7, this command gives 3" in out  # then refused for what it asked, releasing the lock
    assert not (storage / ".kept.lock").exists()


def test_recalibrate_refuses_a_run_a_search_holds(tmp_path):
    storage = tmp_path / "runs"
    _kept(storage)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(storage), "kept"], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        p = subprocess.run([sys.executable, "-m", "search.recalibrate", str(storage / "kept"), "--no-report"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and f"is in use: held by another driver: host {socket.gethostname()}, pid {holder.pid}" \
            in " ".join(p.stderr.split()), p.stderr
    finally:
        holder.kill()
        holder.wait()


# -- what a resume may change --------------------------------------------------------------------
STORED = {"space": "gran_hbn", "data": "synthetic", "budget": "smoke", "data_size": None, "seed": 7, "trials": 4,
          "scheduler": "fifo", "options": {"tree": "given"}, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0,
          "workers_per_trial": 1, "device": "auto", "retries": 1, "reuse_actors": True, "address": None,
          "node_timeout": 300.0, "report": True, "storage": "/r", "budget_detail": {"data_size": "tiny"}}


def test_a_resume_names_every_fixed_value_it_would_change():
    assert differences(STORED, {"space": "gran_hbn", "seed": 7, "data_size": "tiny", "trials": 9}) == []
    lines = differences(STORED, {"space": "branchynet", "seed": 8, "data_size": "smoke", "options": {"tree": "induced"},
                                 "cpus_per_trial": 2.0, "retries": 0, "reuse_actors": False})
    assert [line.split(":")[0] for line in lines] == ["--space", "--data-size", "--seed", "--cpus-per-trial", "--retries",
                                                      "--no-reuse-actors", "--tree"]
    assert "the run has tiny, this command gives smoke" in lines[1]


def test_what_a_resume_may_change_takes_effect_and_is_recorded():
    fields = resumed_fields(STORED, {"trials": 9, "node_timeout": 10.0, "seed": 7}, {"trials", "seed", "node_timeout", "space"})
    assert fields == {"space": "gran_hbn", "seed": 7, "trials": 9, "node_timeout": 10.0}
    assert changes(STORED, {**STORED, "trials": 9, "storage": "/moved"}) == {"trials": [4, 9], "storage": ["/r", "/moved"]}
    (first,) = history(STORED, {"trials": [4, 9]})
    assert first["changed"] == {"trials": [4, 9]} and first["pid"] == os.getpid()
    assert len(history({**STORED, "history": [first]}, {})) == 2


def test_a_resume_keeps_what_the_run_recorded_about_itself():
    """spec.json after a resume: this session's document, with the run's first start, its earlier
    resumes and the conventions search.recalibrate moved it to (a resume once dropped those)."""
    moved = [{"name": "class_distance", "from": None, "to": 2, "by": "search.recalibrate", "at": "2026-12-06T08:00:00+00:00"}]
    earlier = {"resumed_at": "2026-12-05T10:00:00+00:00", "changed": {"trials": [2, 4]}}
    stored = {**STORED, "history": [earlier], "convention_changes": moved,
              "provenance": {"started_at": "2026-12-06T09:00:00+00:00", "first_started_at": "2026-12-05T09:00:00+00:00"}}
    doc = {**STORED, "trials": 9, "provenance": {"started_at": "2026-12-06T10:00:00+00:00"}}
    out = resumed_document(stored, doc)
    assert out["convention_changes"] == moved and out["trials"] == 9
    assert out["provenance"] == {"started_at": "2026-12-06T10:00:00+00:00", "first_started_at": "2026-12-05T09:00:00+00:00"}
    assert out["history"][0] == earlier and out["history"][1]["changed"] == {"trials": [4, 9]}
    assert "provenance" in doc and "first_started_at" not in doc["provenance"]  # the session's document is not changed
    assert "convention_changes" not in resumed_document(STORED, doc)  # none recorded, none made up


# -- numbers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(NUMBERS))
def test_every_numeric_flag_refuses_nan_infinities_and_out_of_range(key):
    flag, whole, low, high, _ = NUMBERS[key]
    for bad in (float("nan"), float("inf"), -float("inf"), low - 1, high + 1, "3"):
        with pytest.raises(ValueError, match=flag):
            check_numbers({key: bad})
    if whole:
        with pytest.raises(ValueError, match=flag):
            check_numbers({key: low + 0.5})
    check_numbers({key: low})
    check_numbers({key: high})


def test_a_spec_refuses_a_tiny_share_and_workers_without_cores():
    with pytest.raises(ValueError, match="--gpus-per-trial"):
        RunSpec(space="gran_hbn", data="synthetic", name="n", storage="/r", gpus_per_trial=0.001)
    with pytest.raises(ValueError, match="too little for 3 workers"):
        RunSpec(space="gran_hbn", data="synthetic", name="n", storage="/r", cpus_per_trial=0.03, workers_per_trial=3)


# -- messages verbatim ---------------------------------------------------------------------------
def test_messages_keep_what_the_user_typed_verbatim():
    from rich.console import Console

    from search.say import error, say

    out = io.StringIO()
    console = Console(file=out, width=60, color_system=None)
    error(console, "no run in /tmp/r[x]/a[/]b:smile:[bold]")
    say(console, ("run", "bold"), " [/] [red]x[/red]")
    text = out.getvalue()
    assert "error: no run in /tmp/r[x]/a[/]b:smile:[bold]" in text and "run [/] [red]x[/red]" in text


def test_the_resume_command_names_the_storage_given_and_survives_a_shell():
    import shlex

    spec = RunSpec(space="gran_hbn", data="synthetic", name="n", storage="/data/my runs[x]")
    cmd = spec.resume_command()
    assert shlex.split(cmd)[3:] == ["--space", "gran_hbn", "--storage", "/data/my runs[x]", "--name", "n", "--resume"]


# -- Ray processes a killed driver left ----------------------------------------------------------
def test_the_next_command_ends_the_processes_a_dead_drivers_ray_left_and_only_those(tmp_path):
    from search.ray_session import MARK, driver_mark

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone_mark = f"{dead.pid}-1"  # a driver that is gone (its pid and start time name no process now)
    orphan = subprocess.Popen(["sleep", "300"], env={**os.environ, MARK: gone_mark})
    kept = subprocess.Popen(["sleep", "300"], env={**os.environ, MARK: driver_mark()})  # this process is alive
    try:
        p = _cli("--help")
        assert p.returncode == 0
        assert f"cleaned up 1 Ray process(es) left by a search driver that was killed (pid {dead.pid}): {orphan.pid}" \
            in " ".join(p.stderr.split()), p.stderr
        assert orphan.wait(timeout=10) == -signal.SIGTERM
        assert kept.poll() is None
    finally:
        for proc in (orphan, kept):
            proc.kill()
            proc.wait()


# -- Tune's state, the journal, statuses ---------------------------------------------------------
def test_tune_state_is_read_whole_without_unpickling_and_copied_whole(tmp_path):
    from search.tune_state import cut_off, resync, writable_by_others

    staging, run = tmp_path / "staging", tmp_path / "run"
    staging.mkdir()
    run.mkdir()
    payload = pickle.dumps({"a": 1})
    (staging / "tuner.pkl").write_bytes(payload)
    (staging / "experiment_state-x.json").write_text('{"trial_data": []}')
    (staging / "searcher-state-x.pkl").write_bytes(payload[:-3])  # cut off in the staging folder too: left out
    (run / "experiment_state-x.json").write_text('{"trial_da')
    (run / "searcher-state-x.pkl").write_bytes(payload)
    assert cut_off(run) == ["experiment_state-x.json"]
    assert resync(staging, run) == ["experiment_state-x.json", "tuner.pkl"]
    assert cut_off(run) == [] and (run / "searcher-state-x.pkl").read_bytes() == payload
    assert writable_by_others(run) == []
    os.chmod(run / "tuner.pkl", 0o646)
    assert writable_by_others(run) == [f"{run / 'tuner.pkl'} (writable by all)"]


def test_a_resume_puts_back_tune_state_cut_off_by_a_kill_from_the_noted_staging_copy(tmp_path):
    from search.tune_state import cut_off, note_staging, recover

    staging, run = tmp_path / "staging", tmp_path / "run"
    staging.mkdir()
    run.mkdir()
    (staging / "tuner.pkl").write_bytes(pickle.dumps({"a": 1}))
    (staging / "experiment_state-x.json").write_text('{"trial_data": [1]}')
    (run / "tuner.pkl").write_bytes(pickle.dumps({"a": 1}))
    (run / "experiment_state-x.json").write_text('{"trial_da')  # the driver was killed mid-copy
    assert recover(run) == []  # no staging folder noted: nothing to go on
    assert note_staging(run, staging) and not note_staging(run, staging)  # written once
    (staging / "experiment_state-x.json").write_text('{"trial_da')  # cut off there too: not put back
    assert recover(run) == [] and cut_off(run) == ["experiment_state-x.json"]
    (staging / "experiment_state-x.json").write_text('{"trial_data": [1]}')
    os.chmod(staging, 0o777)  # a folder others can write to: its pickles are not taken
    assert recover(run) == []
    os.chmod(staging, 0o755)
    assert recover(run) == ["experiment_state-x.json"] and cut_off(run) == []
    assert recover(run) == []  # whole: nothing to do
    shutil.rmtree(staging)
    (run / "experiment_state-x.json").write_text('{"trial_da')
    assert recover(run) == []  # the folder is gone (another machine, a reboot)


def test_a_failed_journal_append_leaves_no_cut_off_line_and_gets_room_from_the_reserve(tmp_path, monkeypatch):
    from optuna.storages.journal import JournalFileBackend

    from search.disk import DiskGuard
    from search.signals import StopRequest
    from search.study import WholeLinesBackend

    path = tmp_path / "study.journal"
    path.write_text('{"op_code": 0}\n')
    calls = []

    def append(self, logs):  # a disk that fills in the middle of the first write
        calls.append(logs)
        with open(self._file_path, "ab") as f:
            f.write(b'{"op_code": 1, "cut')
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        with open(self._file_path, "ab") as f:
            f.write(b'"}\n')

    monkeypatch.setattr(JournalFileBackend, "append_logs", append)
    backend = WholeLinesBackend(str(path))
    with pytest.raises(OSError):  # no run to take room from: the error stands, the file as it was
        backend.append_logs([{}])
    assert path.read_text() == '{"op_code": 0}\n'
    monkeypatch.setenv("EXITSEARCH_SPACE_RESERVE", str(1 << 20))
    stop = StopRequest()
    guard = DiskGuard(tmp_path, stop, trials=1)
    guard.keep_reserve()
    calls.clear()
    backend.append_logs([{}])
    assert path.read_text() == '{"op_code": 0}\n{"op_code": 1, "cut"}\n'  # retried whole, after a truncation
    assert stop.reason == "disk full" and "No space left" in guard.cause
    assert (tmp_path / ".space-reserve").stat().st_size == 1 << 19  # half of the reserve given back
    guard.done()
    assert not (tmp_path / ".space-reserve").exists()


def test_statuses_agree_with_the_journal_when_the_run_stops(tmp_path):
    import optuna

    from search.collect import settle_with_journal
    from search.study import open_storage
    from trainables.atomic import write_json

    study = optuna.create_study(study_name="s", storage=open_storage(tmp_path), directions=["maximize"])
    states = {"done": "complete", "cut": "complete", "disk": "failed", "bug": "failed"}
    for tid in states:
        trial = study.ask()
        trial.set_user_attr("tune_trial_id", tid)
        if tid == "done":
            study.tell(trial, 1.0)
        if tid == "bug":
            study.tell(trial, None, state=optuna.trial.TrialState.FAIL)
    for tid, state in states.items():
        error = "OSError: [Errno 28] No space left on device" if tid == "disk" else ("ValueError" if tid == "bug" else None)
        write_json(tmp_path / "trials" / tid / "status.json", {"status": state, **({"error": error} if error else {})})
    assert settle_with_journal(tmp_path, stopped=False) == {"disk": "interrupted"}  # a full disk: always
    write_json(tmp_path / "trials" / "disk" / "status.json", {"status": "failed", "error": "OSError: [Errno 28] No space"})
    assert settle_with_journal(tmp_path, stopped=True) == {"cut": "interrupted", "disk": "interrupted"}
    status = {tid: json.loads((tmp_path / "trials" / tid / "status.json").read_text()) for tid in states}
    assert {tid: s["status"] for tid, s in status.items()} == {"done": "complete", "cut": "interrupted",
                                                               "disk": "interrupted", "bug": "failed"}
    assert "error" not in status["disk"] and status["disk"]["cut_short_by"] == "a full disk"
    assert status["disk"]["last_error"].startswith("OSError: [Errno 28]")


def test_disk_full_is_recognised_through_ray_and_tune_wrappers(tmp_path, monkeypatch):
    from search.disk import DiskGuard, is_disk_full

    inner = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError("trial failed") from exc
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    assert is_disk_full("RayTaskError(OSError): ... OSError: [Errno 28] No space left on device")
    assert not is_disk_full(ValueError("x")) and not is_disk_full(OSError(errno.EACCES, "denied"))
    monkeypatch.setenv("EXITSEARCH_SPACE_RESERVE", str(10**15))
    with pytest.raises(BadInput, match="less than the .* MB a run keeps in reserve"):
        DiskGuard(tmp_path / "run", None, 1).check_room(str(tmp_path))


# -- what is fetched stays inside the copy --------------------------------------------------------
@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/x", "a//b", "./a", "a\\..\\b", "a/\x00b", ""])
def test_a_key_that_would_escape_the_copy_is_refused(tmp_path, key):
    from trainables.storage import StorageError, safe_destination

    with pytest.raises(StorageError, match="refused to fetch .* outside this machine's copy"):
        safe_destination(tmp_path, key, f"s3://b/runs/r {key!r}")


def test_a_key_through_a_link_out_of_the_copy_is_refused(tmp_path):
    from trainables.storage import StorageError, safe_destination

    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "trials").symlink_to(tmp_path / "elsewhere")
    assert safe_destination(tmp_path / "copy", "a/b.json", "k") == tmp_path / "copy" / "a" / "b.json"
    with pytest.raises(StorageError):
        safe_destination(tmp_path / "copy", "trials/x", "k")
