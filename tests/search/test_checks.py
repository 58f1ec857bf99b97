"""Checks made before a run directory exists (search/checks.py), the stop request (signals.py),
trial identity from the study journal (study.py) and the driver's settling of unfinished trials."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest

from search.checks import BadInput, check_address, check_device, check_fits, check_resume, check_storage
from search.collect import settle_unfinished
from search.signals import Interrupted, StopRequest, exit_code
from search.study import StudyUnreadable, check_readable, open_storage, trial_numbers


def test_fits_needs_one_node_with_room_for_a_whole_trial():
    nodes = [{"CPU": 2.0}, {"CPU": 4.0, "GPU": 1.0}]
    check_fits(4, 0.5, nodes, "the cluster")  # the second node holds it
    with pytest.raises(BadInput, match=r"at most 4 CPU core\(s\) on a node; use --cpus-per-trial <= 4"):
        check_fits(5, 0, nodes, "the cluster")
    with pytest.raises(BadInput, match="at most 1 GPU"):
        check_fits(1, 2, nodes, "the cluster")
    with pytest.raises(BadInput, match=r"this machine has no GPU; use --gpus-per-trial 0"):
        check_fits(1, 0.3, [{"CPU": 2.0}], "this machine")
    with pytest.raises(BadInput, match="no trial can ever be placed"):
        check_fits(1, 0, [], "the cluster")  # no alive node at all


def test_fits_a_multi_worker_trial_over_several_nodes_or_refuses_it():
    two = [{"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}]
    check_fits(2, 2, two, "the cluster", workers=2)  # one worker (1 CPU, 1 GPU) on each node
    check_fits(2, 0, [{"CPU": 2.0}], "this machine", workers=2)  # two CPU workers side by side
    with pytest.raises(BadInput, match=r"--workers-per-trial 3 .*not enough for 3 workers at once"):
        check_fits(3, 3, two, "the cluster", workers=3)
    with pytest.raises(BadInput, match=r"each worker\).*at most 2 CPU core\(s\) on a node; use --cpus-per-trial <= 8"):
        check_fits(12, 0, [{"CPU": 2.0}], "this machine", workers=4)  # 3 CPUs a worker: no node has them


def test_storage_must_be_a_writable_directory(tmp_path):
    check_storage(tmp_path / "new" / "runs")  # made later, with its parents
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []  # the probe left nothing
    (tmp_path / "f").write_text("x")
    with pytest.raises(BadInput, match="is a file"):
        check_storage(tmp_path / "f")
    with pytest.raises(BadInput, match="its ancestor .* is a file"):
        check_storage(tmp_path / "f" / "runs")
    with pytest.raises(BadInput, match="not writable"):
        check_storage("/proc/nope/runs")


def test_resume_needs_an_existing_readable_run(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "spec.json").write_text("{}")
    check_resume(tmp_path / "a", True, tmp_path)
    check_resume(tmp_path / "b", False, tmp_path)
    with pytest.raises(BadInput, match="exists: pick another --name"):
        check_resume(tmp_path / "a", False, tmp_path)
    with pytest.raises(BadInput, match=r"no run 'b' to resume .* runs in .*: a\b"):
        check_resume(tmp_path / "b", True, tmp_path)
    (tmp_path / "a" / "spec.json").write_text("{torn")
    with pytest.raises(BadInput, match="cannot be read"):
        check_resume(tmp_path / "a", True, tmp_path)


def test_device_and_address():
    check_device("cuda", True)
    check_device("auto", False)
    with pytest.raises(BadInput, match="no CUDA GPU"):
        check_device("cuda", False)
    with pytest.raises(BadInput, match="is not HOST:PORT"):
        check_address("somewhere")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        t0 = time.monotonic()
        with pytest.raises(BadInput, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
            check_address(f"127.0.0.1:{port}", timeout=5)
        assert time.monotonic() - t0 < 10
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_address(f"127.0.0.1:{s.getsockname()[1]}")
    check_address("auto")
    check_address(None)


def test_first_signal_at_start_up_raises_and_later_ones_are_recorded():
    stop = StopRequest()
    with pytest.raises(Interrupted) as e:
        stop._handle(signal.SIGTERM, None)
    assert e.value.signum == signal.SIGTERM and exit_code(e.value.signum) == 143
    stop = StopRequest()
    stop.phase = "tune"
    stop._handle(signal.SIGINT, None)  # recorded: the Tune callback passes it on
    assert stop.requested and exit_code(stop.signum) == 130
    with pytest.raises(Interrupted):  # a second one: the user insists
        stop._handle(signal.SIGINT, None)
    with pytest.raises(Interrupted):
        stop.check()


def test_signals_while_the_driver_module_loads_are_recorded_and_raised_by_check():
    stop = StopRequest(phase="load")
    stop._handle(signal.SIGINT, None)
    stop._handle(signal.SIGINT, None)  # even a second one: no exception may escape a module import
    assert stop.signum == signal.SIGINT and stop.count == 2
    stop.phase = "start"  # what search.run's main does first, inside its handler
    with pytest.raises(Interrupted) as e:
        stop.check()
    assert exit_code(e.value.signum) == 130


def test_installed_handler_catches_a_real_sigint():
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop = StopRequest().install()
        stop.phase = "finish"
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.signum == signal.SIGINT and os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_trial_numbers_come_from_the_journal(tmp_path):
    import optuna

    assert trial_numbers(tmp_path) == {}
    study = optuna.create_study(storage=open_storage(tmp_path), study_name="r")
    for tid in ("x", "y"):
        t = study.ask()
        t.set_user_attr("tune_trial_id", tid)
    again = study.ask()  # a second Optuna trial for "x" (a resumed run): the finished one wins
    again.set_user_attr("tune_trial_id", "x")
    study.tell(again, 1.0)
    study.ask()  # no Tune id: not a trial of the run
    assert trial_numbers(tmp_path) == {"x": 2, "y": 1}
    check_readable(tmp_path)
    whole = (tmp_path / "study.journal").read_bytes()
    (tmp_path / "study.journal").write_bytes(whole + b'{"op_code": 5, "wor')  # a write cut off
    lines = whole.count(b"\n")
    with pytest.raises(StudyUnreadable, match=f"line {lines + 1}: the line is incomplete"):
        check_readable(tmp_path)
    (tmp_path / "study.journal").write_bytes(b"\x00\xffnot a journal\n" + whole)
    with pytest.raises(StudyUnreadable, match="study.journal cannot be read: line 1"):
        check_readable(tmp_path)
    with pytest.raises(StudyUnreadable):
        trial_numbers(tmp_path)


def test_settle_unfinished_rewrites_only_running_and_interrupted_trials(tmp_path):
    for tid, state in [("a", "running"), ("b", "interrupted"), ("c", "complete"), ("d", "failed")]:
        d = tmp_path / "trials" / tid
        d.mkdir(parents=True)
        (d / "status.json").write_text(json.dumps({"status": state, "epochs_done": 1}))
    changed = settle_unfinished(tmp_path, lambda tid: "stopped" if tid == "a" else "interrupted")
    assert changed == {"a": "stopped"}
    states = {p.parent.name: json.loads(p.read_text())["status"] for p in tmp_path.glob("trials/*/status.json")}
    assert states == {"a": "stopped", "b": "interrupted", "c": "complete", "d": "failed"}
    assert json.loads((tmp_path / "trials/a/status.json").read_text())["epochs_done"] == 1


def _fake_nodes(monkeypatch, answers):
    import ray

    calls = iter(answers)
    last = [answers[-1]]

    def nodes():
        last[0] = next(calls, last[0])
        return [{"Alive": True, "Resources": r} for r in last[0]]

    monkeypatch.setattr(ray, "nodes", nodes)
    monkeypatch.setattr("search.tuner._request_node", lambda spec: None)
    monkeypatch.setattr("search.tuner.time.sleep", lambda s: None)


def test_a_cluster_is_given_time_to_add_a_node_and_this_machine_is_not(monkeypatch, tmp_path):
    from rich.console import Console

    from search.spec import RunSpec
    from search.tuner import _check_resources

    spec = RunSpec(space="gran_hbn", data="synthetic", name="r", storage=str(tmp_path), gpus_per_trial=1,
                   address="10.0.0.1:6379", node_timeout=60)
    console = Console(record=True, width=200)
    _fake_nodes(monkeypatch, [[{"CPU": 4}], [{"CPU": 4}], [{"CPU": 4}, {"CPU": 8, "GPU": 1}]])
    _check_resources(spec, console)  # the GPU node joined on the third look
    said = console.export_text()
    assert "waiting up to 60 s for a node with 1 CPU and 1 GPU" in said
    _fake_nodes(monkeypatch, [[{"CPU": 4}]])
    with pytest.raises(BadInput, match=r"no GPU.*waited 0 s"):
        _check_resources(RunSpec(**{**spec.to_dict(), "node_timeout": 1e-6}), console)
    local = RunSpec(**{**spec.to_dict(), "address": None})
    with pytest.raises(BadInput, match="this machine has no GPU"):
        _check_resources(local, console)
