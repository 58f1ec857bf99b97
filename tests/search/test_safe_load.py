"""Opening a run runs no one's code: a doctored `model.pt` (or trial checkpoint) whose pickle would
run a payload is refused, naming the file, by `search.recalibrate`, `load_operating_point` and a
resumed trial, and the payload never runs. What the trials save is read back by the safe loader."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.search.test_local import local_run  # noqa: F401 (the fixture: a real two-trial run made by search.local)

ROOT = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickled, it runs `touch MARKER` (the reduce names posix.system: no test code is needed)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _doctor(path: Path, marker: Path) -> None:
    """Replace the torch file at `path` with one that keeps its contents and adds the payload."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload["extra"] = _Payload(marker)
    torch.save(payload, path)


@pytest.fixture()
def doctored(local_run: Path, tmp_path: Path) -> tuple[Path, Path, Path]:  # noqa: F811
    """(run copy, its first trial dir, marker) of a real run whose every model.pt is doctored."""
    run = Path(shutil.copytree(local_run, tmp_path / "run"))
    trials = sorted(p for p in (run / "trials").iterdir() if (p / "model.pt").is_file())
    marker = tmp_path / "PAYLOAD_RAN"
    for trial in trials:
        _doctor(trial / "model.pt", marker)
    return run, trials[0], marker


def test_what_trials_save_reads_back_safely(local_run: Path) -> None:  # noqa: F811
    from trainables.engine.family import DataInfo

    for tdir in (local_run / "trials").iterdir():
        if (tdir / "model.pt").is_file():
            payload = torch.load(tdir / "model.pt", weights_only=True)
            DataInfo.from_plain(payload["data"])  # the trees come back too
        if (tdir / "checkpoint" / "state.pt").is_file():
            torch.load(tdir / "checkpoint" / "state.pt", weights_only=True)


def test_recalibrate_refuses_a_doctored_network(doctored) -> None:
    run, trial, marker = doctored
    p = subprocess.run([sys.executable, "-m", "search.recalibrate", str(run), "--no-report"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert f"{trial / 'model.pt'} was not opened" in p.stderr and "could run code" in p.stderr, p.stderr
    assert "truncated or damaged" not in p.stderr and "Traceback" not in p.stderr
    assert not marker.exists()


def test_load_operating_point_refuses_a_doctored_network(doctored) -> None:
    run, trial, marker = doctored
    code = ("import sys; from search.load import load_operating_point\n"
            "from trainables.safe_load import UnsafeFile\n"
            "try:\n"
            f"    load_operating_point({str(run)!r})\n"
            "except UnsafeFile as exc:\n"
            "    print(exc); sys.exit(3)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 3, (p.stdout, p.stderr)
    assert "model.pt was not opened" in p.stdout and str(run / "trials") in p.stdout, p.stdout
    assert not marker.exists()


def test_a_resumed_trial_refuses_a_doctored_checkpoint(tmp_path: Path) -> None:
    from tests.trainables.test_loop import TINY_CFG, gran_family, tiny_ctx
    from trainables.engine.loop import run_trial
    from trainables.safe_load import UnsafeFile

    ctx = tiny_ctx(tmp_path)
    run_trial(gran_family(), {**TINY_CFG, "epochs": 1}, ctx)
    marker = tmp_path / "PAYLOAD_RAN"
    state = tmp_path / "trial" / "checkpoint" / "state.pt"
    _doctor(state, marker)
    with pytest.raises(UnsafeFile, match="was not opened"):
        run_trial(gran_family(), {**TINY_CFG, "epochs": 2}, ctx)
    assert not marker.exists()


def test_recalibrate_refuses_an_exit_cache_holding_pickled_objects(local_run: Path, tmp_path: Path) -> None:  # noqa: F811
    """An exit cache is arrays only: one that holds a pickled object is refused by name (numpy
    allow_pickle=False), never read as "truncated or damaged", and its payload never runs."""
    import numpy as np

    run = Path(shutil.copytree(local_run, tmp_path / "run"))
    trial = sorted(p for p in (run / "trials").iterdir() if (p / "exit_cache_calibration.npz").is_file())[0]
    marker = tmp_path / "PAYLOAD_RAN"
    cache = trial / "exit_cache_calibration.npz"
    with np.load(cache) as z:
        arrays = {k: z[k] for k in z.files}
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)
    np.savez(cache, **arrays, extra=payload)  # allow_pickle on save: the object array is pickled in
    p = subprocess.run([sys.executable, "-m", "search.recalibrate", str(run), "--no-report"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert f"{cache} was not opened: it holds pickled Python objects" in p.stderr, p.stderr
    assert "truncated or damaged" not in p.stderr and "Traceback" not in p.stderr
    assert not marker.exists()
