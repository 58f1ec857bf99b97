"""`python -m search.run --help`, as a user runs it. Bad input (exit 2, a clear message, nothing
written) is the matrix in test_bad_input.py."""

from __future__ import annotations

import subprocess
import sys

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "search.run", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_spaces_and_datasets():
    p = run("--help")
    assert p.returncode == 0
    for word in ("gran_hbn", "branchynet", "cifar100", "synthetic", "--objective"):
        assert word in p.stdout
