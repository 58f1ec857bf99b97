"""A full disk during a run, on a real filesystem that fills: a 3 MB tmpfs mounted as the run's
storage, in a mount namespace of its own (`unshare -m`, or `unshare -Urm` without root), so
the machine's disks are never filled. A 4-trial search fills it mid-run; then the tmpfs is made
larger and the run resumed, as a user who freed space would. Checked, as users meet it:

* the run ends with exit 1 and a message naming the storage and the space needed, no traceback;
* results.parquet, every trial's status.json and the study journal agree on every trial, and the
  journal holds only whole lines; Tune's state reads whole;
* nothing already written is lost: the trials complete at the stop keep their files unchanged,
  and the resumed run ends with exactly its 4 trials complete.

Marked slow (two tiny searches).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
AGREE = {"complete": "COMPLETE", "interrupted": "RUNNING", "failed": "FAIL"}


def _state(run: Path) -> dict:
    """What the run holds, read the way the platform reads it."""
    import pyarrow.parquet as pq

    from search.study import check_readable, trial_states
    from search.tune_state import cut_off

    check_readable(run)  # whole lines only
    rows = {}
    if (run / "results.parquet").exists():
        rows = {r["trial_id"]: r["status"] for r in pq.read_table(run / "results.parquet", columns=["trial_id", "status"]).to_pylist()}
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in run.glob("trials/*/status.json")}
    points = {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.glob("trials/*/points.json")}
    return {"results": rows, "statuses": statuses, "journal": trial_states(run), "cut_off": cut_off(run),
            "points": points, "reserve_left": (run / ".space-reserve").exists()}


def _scenario(storage: Path) -> dict:
    """Run inside the mount namespace, with a 3 MB tmpfs on `storage`."""
    env = {**os.environ, "EXITSEARCH_SPACE_RESERVE": "600000"}
    cmd = [sys.executable, "-m", "search.run", "--space", "gran_hbn", "--storage", str(storage), "--name", "f"]
    first = subprocess.run([*cmd, "--data", "synthetic", "--data-size", "tiny", "--trials", "4"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=900)
    out = {"first": {"code": first.returncode, "stderr": first.stderr[-6000:], **_state(storage / "f")}}
    subprocess.run(["mount", "-o", "remount,size=20000k", str(storage)], check=True)  # the user frees space
    second = subprocess.run([*cmd, "--resume", "--no-report"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out["second"] = {"code": second.returncode, "stderr": second.stderr[-6000:], **_state(storage / "f")}
    return out


def _namespace() -> list[str] | None:
    if shutil.which("unshare") is None:
        return None
    ns = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-Urm"]
    probe = subprocess.run([*ns, "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt 2>/dev/null || "
                                             "mount -t tmpfs -o size=1m tmpfs \"$TMPDIR\""], capture_output=True,
                           env={**os.environ, "TMPDIR": "/tmp"})
    return ns if probe.returncode == 0 else None


def test_a_full_disk_ends_the_run_cleanly_and_the_run_resumes_without_loss(tmp_path):
    ns = _namespace()
    if ns is None:  # an OS capability, not a dependency of the project
        pytest.skip("cannot mount a tmpfs in a mount namespace here (`unshare -m` / `unshare -Urm`)")
    storage = tmp_path / "small-disk"
    storage.mkdir()
    report = tmp_path / "report.json"
    script = (f"mount -t tmpfs -o size=3000k tmpfs {storage} && "
              f"{sys.executable} -c 'import json, sys; from pathlib import Path; "
              f"from tests.search.test_full_disk import _scenario; "
              f"Path(sys.argv[2]).write_text(json.dumps(_scenario(Path(sys.argv[1]))))' {storage} {report}")
    p = subprocess.run([*ns, "sh", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=2400,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    assert p.returncode == 0 and report.exists(), p.stdout[-3000:] + p.stderr[-3000:]
    first, second = (json.loads(report.read_text())[k] for k in ("first", "second"))

    err = " ".join(first["stderr"].split())
    assert first["code"] == 1, err
    assert f"error: the disk of run 'f' is full: {storage}/f on --storage {storage}" in err, err
    assert "needs about" in err and "MB" in err and f"--storage {storage} --name f --resume" in err
    assert "Traceback" not in err
    assert first["results"], "results.parquet is written at the stop"
    for tid, status in first["results"].items():  # results, statuses and journal agree on every trial
        assert first["statuses"][tid] == status and first["journal"].get(tid) == AGREE[status], (tid, first)
    assert set(first["statuses"]) == set(first["results"]) and first["cut_off"] == []
    assert not first["reserve_left"]

    assert second["code"] == 0, second["stderr"]
    assert sorted(second["journal"].values()) == ["COMPLETE"] * 4  # exactly the trials asked for
    assert set(second["results"].values()) == {"complete"} and len(second["results"]) == 4
    for tid, status in first["statuses"].items():  # what was complete at the stop is kept as it was
        if status == "complete":
            assert second["points"][tid] == first["points"][tid]
    assert second["cut_off"] == [] and not second["reserve_left"]
