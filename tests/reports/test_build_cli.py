"""Building a report (reports.build): files written atomically, stale figures removed, the previous report
kept on failure, the terminal summary, and `python3 -m reports.build RUN_DIR` run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from reports import build as rb
from reports import figures
from reports.overview import compute_report_info
from reports.summary import print_summary
from reports.tables import load_run
from tests.reports.fabricate import GRAN, SINGLE, Case, make_run_dir
from trainables import atomic

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120", "EXITSEARCH_SPACES": "tests.fault_spaces"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_build_writes_figures_and_report(case: Case, built: Path) -> None:
    assert (built / "report.html").is_file()
    assert {p.name for p in (built / "figures").iterdir()} == case.figures
    assert not list(built.rglob("*.tmp"))


# the build's own behaviour does not depend on the declaration: one case is enough
ONE_CASE = pytest.mark.parametrize("case", [GRAN], ids=[GRAN.name])


@ONE_CASE
def test_stale_figures_are_removed(built_copy: Path) -> None:
    run_dir = built_copy
    learning = run_dir / "figures" / "learning_curves.png"
    renamed = run_dir / "figures" / "front_old_vs_renamed.png"  # e.g. a front pair the declaration no longer has
    renamed.write_bytes(b"old")
    assert learning.exists()
    (run_dir / "curves.parquet").unlink()
    rb.build_report(run_dir)
    assert not learning.exists() and not renamed.exists()
    assert "No learning curves" in (run_dir / "report.html").read_text()


@ONE_CASE
def test_previous_report_survives_a_failed_write(built_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = built_copy
    previous = (run_dir / "report.html").read_bytes()
    calls: list[Path] = []

    def half_write_then_crash(path: str | os.PathLike, text: str) -> Path:
        calls.append(Path(path))

        def writer(tmp: str) -> None:
            Path(tmp).write_text(text[: len(text) // 2])
            raise KeyboardInterrupt("interrupted mid-write")

        return atomic.atomic_write(path, writer)

    monkeypatch.setattr(atomic, "write_text", half_write_then_crash)
    with pytest.raises(KeyboardInterrupt):
        rb.build_report(run_dir)
    assert calls == [run_dir / "report.html"]
    assert (run_dir / "report.html").read_bytes() == previous
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def _backdate(path: Path, seconds: float) -> None:
    t = path.stat().st_mtime - seconds
    os.utime(path, (t, t))


@ONE_CASE
def test_build_removes_stale_temporaries_of_killed_writes(built_copy: Path) -> None:
    run_dir, fig_dir = built_copy, built_copy / "figures"
    # a write killed for real: the process dies inside atomic_write, so its cleanup never runs
    code = "import os, sys; from trainables import atomic; atomic.atomic_write(sys.argv[1], lambda tmp: os._exit(9))"
    assert _run("-c", code, str(run_dir / "report.html")).returncode == 9
    (killed,) = [p for p in run_dir.iterdir() if p.name.startswith(".report.html.") and p.name.endswith(".tmp")]
    stale = [killed, run_dir / ".results.parquet.q1w2e3r4.tmp", fig_dir / ".learning_curves.png.zz_9xy0a.tmp"]
    for path in stale[1:]:
        path.write_bytes(b"half a file")
    kept = {
        run_dir / ".curves.parquet.fresh123.tmp": b"a write in progress elsewhere",  # young: may still be written
        run_dir / "notes.tmp": b"not hidden",
        run_dir / ".notes.tmp": b"no random part",
        run_dir / ".spec.json.ABCDEFGH.tmp": b"not mkstemp's alphabet",
        fig_dir / ".x.png.abcdefghi.tmp": b"nine random characters",
        run_dir / "trials" / "t0" / ".status.json.abcd1234.tmp": b"below the run directory: not the report's",
    }
    for path, data in kept.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if "fresh" not in path.name:
            _backdate(path, 3600)
    for path in stale:
        _backdate(path, atomic.STALE_SECONDS + 60)

    assert rb.build_report(run_dir) == run_dir / "report.html"
    assert not [p for p in stale if p.exists()]
    assert {p: p.read_bytes() for p in kept} == kept


@ONE_CASE
def test_previous_report_survives_a_rendering_error(built_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = built_copy
    previous = (run_dir / "report.html").read_bytes()
    pngs = {p.name: p.read_bytes() for p in (run_dir / "figures").iterdir()}

    def boom(*args: Any, **kwargs: Any) -> dict[str, bytes]:
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(figures, "render_figures", boom)
    stale = run_dir / ".report.html.abcd1234.tmp"
    stale.write_bytes(b"")
    _backdate(stale, 3600)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        rb.build_report(run_dir)
    assert stale.exists()  # a build that fails before writing touches nothing, not even old temporaries
    assert (run_dir / "report.html").read_bytes() == previous
    assert {p.name: p.read_bytes() for p in (run_dir / "figures").iterdir()} == pngs


def test_summary_mentions_trials_front_failures_and_report(case: Case, built: Path) -> None:
    console = Console(record=True, width=160, color_system=None)
    print_summary(built, console)
    out = console.export_text()
    assert "2 complete" in out and "1 partial" in out and "1 failed" in out
    assert f"{len(case.front)} points" in out and "Global front (test scores)" in out
    assert "loss diverged to nan at epoch 1 <script>alert(1)</script>" in out
    assert str(built / "report.html") in out.replace("\n", "")
    if case is not SINGLE:
        assert f"best {next(iter(case.decl.objectives))}" in out and "0.45 (trial #2)" in out
    if case is GRAN:
        assert "42" in out and "MFLOPs" in out and "none: no front point meets" in out.replace("\n", " ")
    tables = load_run(built)
    for source in (tables, compute_report_info(tables)):  # also from loaded tables or computed infos
        again = Console(record=True, width=160, color_system=None)
        print_summary(source, again)
        assert again.export_text() == out


def test_main_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = make_run_dir(tmp_path, GRAN, all_failed=True, with_curves=False)
    assert rb.main([str(run_dir)]) == 0
    assert (run_dir / "report.html").exists() and "Failed trials" in capsys.readouterr().out
    assert rb.main([str(run_dir.parent / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("reports.build: error: no results.parquet")


def test_cli_missing_results_exits_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text("{}")
    proc = _run("-m", "reports.build", str(tmp_path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("reports.build: error: no results.parquet") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def _files(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}


@pytest.mark.parametrize("where", ["missing", "a-file"])
def test_cli_run_dir_missing_or_a_file_exits_2(tmp_path: Path, where: str) -> None:
    target = tmp_path / "nowhere"
    if where == "a-file":
        target.write_text("{}")
    proc = _run("-m", "reports.build", str(target))
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    what = "does not exist" if where == "missing" else "is not a directory"
    assert proc.stderr == (f"reports.build: error: no results.parquet: {target} {what}; pass the run directory a "
                           "search wrote (STORAGE/NAME, e.g. runs/my-run)\n")


@pytest.mark.parametrize("damage", [lambda raw: raw[: len(raw) // 2], lambda raw: b"", lambda raw: b"not parquet"],
                         ids=["truncated", "empty", "text"])
def test_cli_corrupt_results_exits_2_and_changes_nothing(tmp_path: Path, damage: Any) -> None:
    run_dir = make_run_dir(tmp_path, GRAN)
    results = run_dir / "results.parquet"
    results.write_bytes(damage(results.read_bytes()))
    before = _files(run_dir)
    proc = _run("-m", "reports.build", str(run_dir))
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"reports.build: error: cannot read {results} (") and proc.stderr.count("\n") == 1
    assert "the file is truncated or not Parquet. Restore it from a copy" in proc.stderr
    assert f"python -m search.recalibrate {run_dir}" in proc.stderr
    assert _files(run_dir) == before and not (run_dir / "report.html").exists()


def test_cli_builds_and_never_imports_pyplot(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, SINGLE)
    code = ("import sys; from reports.build import main; rc = main([sys.argv[1]]); "
            "print('PYPLOT', 'matplotlib.pyplot' in sys.modules); raise SystemExit(rc)")
    proc = _run("-c", code, str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert "PYPLOT False" in proc.stdout and "Global front" in proc.stdout and "report.html" in proc.stdout


def test_importing_reports_pulls_in_no_heavy_module() -> None:
    code = ("import sys, reports, reports.schema; heavy = [m for m in ('matplotlib', 'pandas', 'rich') if m in sys.modules]; "
            "print(heavy); assert reports.load_run.__module__ == 'reports.tables'")
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_cli_on_a_real_run(tmp_path: Path) -> None:
    """`python3 -m reports.build RUN_DIR`, as documented, on a run made by search.local on tiny_gran."""
    from search.local import run_local
    from search.spec import RunSpec

    run_dir = run_local(RunSpec(space="tiny_gran", data="synthetic", name="real", storage=str(tmp_path), trials=2))
    proc = _run("-m", "reports.build", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert "run real" in proc.stdout and "2 complete" in proc.stdout and "Global front (test scores)" in proc.stdout
    assert "best hypervolume" in proc.stdout and str(run_dir / "report.html") in proc.stdout.replace("\n", "").replace("│", "")
    assert (run_dir / "report.html").is_file() and (run_dir / "figures" / "learning_curves.png").is_file()
