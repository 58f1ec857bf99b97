"""Fixtures of the report tests: a fabricated run directory per case (tests/reports/fabricate.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reports.build import build_report
from reports.tables import RunTables, load_run
from tests.reports.fabricate import CASES, Case, make_run_dir


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


@pytest.fixture()
def run_dir(case: Case, tmp_path: Path) -> Path:
    return make_run_dir(tmp_path, case)


@pytest.fixture()
def tables(run_dir: Path) -> RunTables:
    return load_run(run_dir)


@pytest.fixture(scope="session")
def built_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each case's run directory with its report built once for the session (tests must not modify them)."""
    out = {}
    for c in CASES:
        run_dir = make_run_dir(tmp_path_factory.mktemp(c.name), c)
        build_report(run_dir)
        out[c.name] = run_dir
    return out


@pytest.fixture()
def built(case: Case, built_runs: dict[str, Path]) -> Path:
    return built_runs[case.name]


@pytest.fixture()
def built_copy(built: Path, tmp_path: Path) -> Path:
    """A private copy of the case's built run (report.html and figures included) that a test may modify."""
    return Path(shutil.copytree(built, tmp_path / "copy"))
