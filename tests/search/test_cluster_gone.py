"""A cluster that vanishes mid-run: a one-node Ray cluster started with `ray start --head` on
127.0.0.1, a search joined to it (`--address HOST:PORT`: it says which cluster it joined), and
the cluster killed (SIGKILL to its processes) while a trial trains. The search ends with exit 1
and a message saying the cluster went away and how to resume, well before Ray's own 60 s would
end the driver with a bare exit 1; what it had is written down (the trial it was running is
`interrupted` in results.parquet, its status and unfinished in the journal) and its lock is
released. Marked slow and cluster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.ray_cli import ray_cli
from tests.search.test_cluster_faults import _alive_nodes, _env, _free_port, _wait

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_a_cluster_that_vanishes_ends_the_run_with_a_message(tmp_path):
    temp = Path(tempfile.mkdtemp(prefix="rg", dir="/tmp"))  # short: Ray's socket paths must fit
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = subprocess.Popen([ray_cli(), "start", "--head", "--port", str(port), "--include-dashboard=false", "--temp-dir",
                             str(temp), "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats", "--block"],
                            stdout=(temp / "head.log").open("w"), stderr=subprocess.STDOUT,
                            env={**_env(), "PYTHONPATH": str(ROOT)}, start_new_session=True)  # its workers import tests.fault_spaces
    storage = tmp_path / "runs"
    try:
        _wait(lambda: _alive_nodes(address) == 1, 90, "the head node")
        # long_gran (tests/fault_spaces.py): 5-10 epochs a trial, so the cluster goes while a trial still trains (a
        # gran_hbn trial's last epoch could end between the poll and the kill: CI once saw the trial complete)
        driver = subprocess.Popen([sys.executable, "-m", "search.run", "--space", "long_gran", "--data", "synthetic",
                                   "--data-size", "smoke", "--trials", "3", "--address", address, "--storage", str(storage),
                                   "--name", "gone", "--no-report"], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True,
                                  env={**_env(), "PYTHONPATH": str(ROOT), "EXITSEARCH_CLUSTER_GONE_S": "15"})
        run = storage / "gone"

        def training() -> bool:
            assert driver.poll() is None, "the search ended before a trial trained"
            return any(json.loads(f.read_text()).get("epochs_done", 0) >= 1 for f in run.glob("trials/*/status.json"))

        _wait(training, 300, "a trial to train an epoch", every=0.5)
        os.killpg(head.pid, signal.SIGKILL)  # the cluster goes: its head, GCS and raylet
        t0 = time.monotonic()
        out, _ = driver.communicate(timeout=120)
        took = time.monotonic() - t0
    finally:
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)
    text = " ".join(out.split())
    assert driver.returncode == 1, out[-3000:]
    assert f"joined the Ray cluster at 127.0.0.1:{port}" in text or f":{port} (--address {address})" in text
    assert f"(--address {address}) went away: its GCS has not answered for" in text, out[-3000:]
    assert f"resume with python -m search.run --space long_gran --storage {storage} --name gone --resume" in text
    assert took < 55, f"ended after {took:.0f} s: Ray's own 60 s would have ended it with a bare exit 1"
    from search.study import trial_states

    journal = trial_states(run)
    rows = {r["trial_id"]: r["status"] for r in pq.read_table(run / "results.parquet", columns=["trial_id", "status"]).to_pylist()}
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in run.glob("trials/*/status.json")}
    assert "interrupted" in rows.values() and rows == statuses, (rows, statuses)
    assert all(journal[t] == {"complete": "COMPLETE", "interrupted": "RUNNING"}[s] for t, s in rows.items()), journal
    assert not (storage / ".gone.lock").exists()
