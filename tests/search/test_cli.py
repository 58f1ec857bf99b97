"""`python -m search.run` refuses bad input as a user meets it: exit 2, a message that says what to
do, and no run directory left behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "search.run", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args, msg", [
    (["--space", "nope"], "unknown space"),
    (["--space", "gran_hbn", "--data", "nope"], "unknown dataset"),
    (["--space", "gran_hbn", "--budget", "huge"], "its budgets: smoke, full"),
    (["--space", "gran_hbn", "--objective", "latency"], "has no option --objective"),
    (["--space", "branchynet", "--objective", "speed"], "not one of latency, flops, both"),
    (["--space", "gran_hbn", "--trials", "0"], "--trials must be >= 1"),
])
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(tmp_path, args, msg):
    p = run(*args, "--data-size", "tiny", "--storage", str(tmp_path / "runs")) if "--data" in args or "nope" in args \
        else run(*args, "--data", "synthetic", "--storage", str(tmp_path / "runs"))
    assert p.returncode == 2 and msg in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_missing_dataset_is_a_clear_error(tmp_path):
    p = run("--space", "gran_hbn", "--data", "cifar100", "--data-root", str(tmp_path), "--storage", str(tmp_path / "runs"))
    assert p.returncode == 2
    assert "--download" in p.stderr and "synthetic" in p.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no empty run directory


def test_help_lists_spaces_and_datasets():
    p = run("--help")
    assert p.returncode == 0
    for word in ("gran_hbn", "branchynet", "cifar100", "synthetic", "--objective"):
        assert word in p.stdout
