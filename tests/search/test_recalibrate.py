"""`python -m search.recalibrate RUN_DIR` on bad input, run as a user runs it: exit status 2, a message
naming the trial and the file and saying what to do, no traceback, and every file of the run
directory left exactly as it was (bytes and mtimes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.search.test_local import local_run  # noqa: F401 (the fixture: a real two-trial run made by search.local)

ROOT = Path(__file__).resolve().parents[2]


def _recalibrate(run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "search.recalibrate", str(run_dir)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def _snapshot(run_dir: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every path under run_dir: a file's bytes and mtime, None for a folder."""
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
            for p in sorted(run_dir.rglob("*"))}


@pytest.fixture()
def run_copy(local_run: Path, tmp_path: Path) -> Path:  # noqa: F811
    """A private copy of the real run that a test may damage."""
    return Path(shutil.copytree(local_run, tmp_path / "run"))


def _refused(run_dir: Path, *fragments: str) -> str:
    """Run the command on run_dir; assert it refused cleanly and changed nothing; return stderr."""
    before = _snapshot(run_dir) if run_dir.is_dir() else None
    p = _recalibrate(run_dir)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout and "recalibrated" not in p.stdout, p.stderr
    assert p.stderr.startswith("error: "), p.stderr
    for fragment in fragments:
        assert fragment in p.stderr, p.stderr
    if before is not None:
        assert _snapshot(run_dir) == before
    return p.stderr


def _trials(run_dir: Path) -> list[Path]:
    trials = sorted(p for p in (run_dir / "trials").iterdir() if (p / "points.json").is_file())
    assert len(trials) == 2
    return trials


@pytest.mark.parametrize("cache", ["exit_cache_calibration.npz", "exit_cache_test.npz"])
def test_deleted_cache_of_a_complete_trial(run_copy: Path, cache: str) -> None:
    trial = _trials(run_copy)[1]
    (trial / cache).unlink()
    err = _refused(run_copy, f"error: trial {trial.name}: {trial / cache} is missing",
                   f"move the trial folder(s) named above out of {run_copy / 'trials'}", "Nothing was changed")
    assert _trials(run_copy)[0].name not in err  # the sound trial is not blamed


@pytest.mark.parametrize("cache", ["exit_cache_calibration.npz", "exit_cache_test.npz"])
def test_truncated_cache_of_a_complete_trial(run_copy: Path, cache: str) -> None:
    trial = _trials(run_copy)[0]
    raw = (trial / cache).read_bytes()
    (trial / cache).write_bytes(raw[: len(raw) // 3])
    _refused(run_copy, f"error: trial {trial.name}: {trial / cache} cannot be read", "truncated or damaged",
             "cannot rebuild them without retraining")


def test_every_damaged_trial_is_named_at_once(run_copy: Path) -> None:
    first, second = _trials(run_copy)
    (first / "model.pt").write_bytes(b"")
    (second / "exit_cache_test.npz").unlink()
    lines = _refused(run_copy).splitlines()
    assert lines[0].startswith(f"error: trial {first.name}: {first / 'model.pt'} cannot be read ("), lines
    assert lines[1] == f"trial {second.name}: {second / 'exit_cache_test.npz'} is missing", lines


def test_run_dir_that_does_not_exist(tmp_path: Path) -> None:
    _refused(tmp_path / "nowhere", f"error: {tmp_path / 'nowhere'} does not exist or is not a directory",
             "STORAGE/NAME")
    assert not (tmp_path / "nowhere").exists()


def test_run_dir_without_spec(run_copy: Path) -> None:
    (run_copy / "spec.json").unlink()
    _refused(run_copy, f"error: {run_copy} is not a run directory (no spec.json)")


@pytest.mark.parametrize("text, fragment", [
    ('{"space": "tiny_gran", ', "cannot be read (JSONDecodeError"),
    ("", "cannot be read (JSONDecodeError"),
    ("[1, 2]", 'names no space (expected a JSON object with a "space" key)'),
    ('{"budget": "smoke"}', 'names no space'),
    ('{"space": "no_such_space"}', "unknown space 'no_such_space'"),
], ids=["truncated", "empty", "not-an-object", "no-space", "unknown-space"])
def test_corrupt_spec(run_copy: Path, text: str, fragment: str) -> None:
    (run_copy / "spec.json").write_text(text)
    _refused(run_copy, f"error: {run_copy / 'spec.json'}", fragment)


def test_corrupt_status_of_a_complete_trial(run_copy: Path) -> None:
    trial = _trials(run_copy)[1]
    (trial / "status.json").write_text(json.dumps([1, 2]))
    _refused(run_copy, f"error: trial {trial.name}: {trial / 'status.json'} cannot be read")


def test_corrupt_results_table_is_refused_before_any_trial_is_rewritten(run_copy: Path) -> None:
    results = run_copy / "results.parquet"
    results.write_bytes(results.read_bytes()[:300])
    _refused(run_copy, f"error: {results} cannot be read (", "Move it aside and run again", "Nothing was changed")
    results.rename(run_copy.parent / "aside.parquet")  # as the message says: the table is rebuilt from the trials
    p = _recalibrate(run_copy)
    assert p.returncode == 0 and "recalibrated 2 trials" in p.stdout, p.stderr
    assert results.is_file() and (run_copy / "report.html").is_file()
