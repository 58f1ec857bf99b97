"""Tests for reports.build / reports.render / reports.summary on small fabricated run directories."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from reports import build as rb
from reports.render import render_front
from reports.summary import print_summary
from search import atomic
from search.results import results_table, write_table

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

FLOPS_CONVENTION = "FlopCounterMode: 2 x MACs per image, heads included"
SPECIFICITY_DEFINITION = "share of answers given at the fine level"
FAIL_REASON = "RuntimeError: loss diverged to nan at epoch 1 <script>alert(1)</script>"
REFERENCE_FLOPS = 100e6

# trial id -> (number, status, hypervolume); #1 is partial with the best hypervolume of all
TRIALS: dict[str, tuple[int, str, float | None]] = {
    "t0": (0, "complete", 0.30),
    "t1": (1, "partial", 0.50),
    "t2": (2, "complete", 0.45),
    "t3": (3, "failed", None),
}
# chosen on calibration; t1's flag must never reach a drawn front (t1 is partial)
ON_FRONT = {"t0/calibrated/0", "t2/calibrated/1", "t2/calibrated/2", "t1/calibrated/0"}
TRIAL_FRONT = {"t0/calibrated/0", "t0/calibrated/2", "t1/calibrated/0",
               "t2/calibrated/0", "t2/calibrated/1", "t2/calibrated/2"}
FIXED = ("fixed:fine@0", "fixed:fine@2", "fixed:coarse@0")


def _config(number: int) -> dict[str, Any]:
    return {"lr": 0.01 * (number + 1), "width": 16 * (number + 1), "augment": number % 2 == 0}


def _point_rows(trial_id: str, number: int, status: str, hv: float | None,
                single_point: bool = False) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    planned = 5
    done = 2 if status == "partial" else planned
    base = {
        "run": "demo-run", "space": "tiny-ee", "dataset": "cifar100", "trial_id": trial_id,
        "trial_number": number, "status": status, "epochs_done": done, "epochs_planned": planned,
        "fidelity": done / planned, "hypervolume": hv, "seed": 7 + number, "config": _config(number),
        "git_rev": "abc1234+dirty", "versions_json": json.dumps({"torch": "2.5.0"}),
        "device": "cpu", "hostname": "testhost",
    }
    policies: list[tuple[str, int]] = [("calibrated", i) for i in range(1 if single_point else 3)]
    if not single_point:
        policies += [(p, 0) for p in FIXED]
    for policy, index in policies:
        pid = f"{trial_id}/{policy}/{index}"
        i = index if policy == "calibrated" else FIXED.index(policy) + 3
        flops = (20e6 + 15e6 * i) * (1.0 + 0.1 * number)
        calib_acc = 0.60 + 0.05 * i + 0.02 * number
        for split, acc in (("calibration", calib_acc), ("test", calib_acc - 0.01 * (i + 1))):
            row = dict(base)
            row.update({
                "point_id": pid, "policy": policy, "split": split, "accuracy": acc,
                "expected_flops": flops, "expected_flops_norm": flops / REFERENCE_FLOPS,
                "trial_front": pid in TRIAL_FRONT, "on_front": pid in ON_FRONT,
            })
            if not single_point:
                row.update({
                    "thresholds_fine": [0.1234567 * (i + 1), 0.5, 1.0],
                    "thresholds_coarse": [0.2, 0.3456789, 1.0],
                    "specificity": 0.9 - 0.1 * i,
                    "exit_fraction": [0.5, 0.3, 0.2],
                    "exit_flops": [10e6, 30e6, 60e6],
                    "fine_acc_per_exit": [0.4, 0.5, 0.6],
                    "coarse_acc_per_exit": [0.6, 0.7, 0.8],
                })
            rows.append(row)
    return rows


def _failed_row(trial_id: str, number: int) -> dict[str, Any]:
    return {
        "run": "demo-run", "space": "tiny-ee", "dataset": "cifar100", "trial_id": trial_id,
        "trial_number": number, "status": "failed", "error": FAIL_REASON, "epochs_done": 1,
        "epochs_planned": 5, "fidelity": 0.2, "config": _config(number), "seed": 7 + number,
    }


def make_run_dir(
    root: Path,
    *,
    all_failed: bool = False,
    single_point: bool = False,
    with_curves: bool = True,
    with_spec: bool = True,
) -> Path:
    """Fabricate a small RUN_DIR: 4 trials (2 complete, 1 partial, 1 failed), curves and spec."""
    run_dir = root / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for trial_id, (number, status, hv) in TRIALS.items():
        if status == "failed" or all_failed:
            rows.append(_failed_row(trial_id, number))
        else:
            rows.extend(_point_rows(trial_id, number, status, hv, single_point))
    write_table(results_table(rows), run_dir / "results.parquet")

    if with_curves:
        import pyarrow as pa

        from search.results import CURVES_SCHEMA

        crow: dict[str, list[Any]] = {name: [] for name in CURVES_SCHEMA.names}
        for trial_id, (number, status, _) in TRIALS.items():
            epochs = {"complete": 5, "partial": 2, "failed": 1}[status]
            for e in range(1, epochs + 1):
                crow["trial_id"].append(trial_id)
                crow["epoch"].append(e)
                crow["train_loss"].append(2.0 / e + 0.1 * number)
                crow["lr"].append(0.1 * 0.8 ** e)
                crow["calib_fine_acc_per_exit"].append([0.1 * e, 0.12 * e, 0.15 * e])
                crow["calib_coarse_acc_per_exit"].append([0.15 * e, 0.16 * e, 0.18 * e])
                crow["hypervolume"].append(0.05 * e)
                crow["epoch_seconds"].append(3.0)
                crow["images_per_second"].append(1000.0)
        write_table(pa.table(crow, schema=CURVES_SCHEMA), run_dir / "curves.parquet")

    if with_spec:
        spec = {
            "run": "demo-run", "space": "tiny-ee", "dataset": "cifar100",
            "budget": {"max_epochs": 5, "gpus": 1}, "trials": 4, "seed": 7,
            "objectives": {"hypervolume": "max"},
            "point_objectives": {"accuracy": "max", "specificity": "max", "expected_flops_norm": "min"},
            "hv_reference": [0.0, 0.0, 1.0], "reference_flops": REFERENCE_FLOPS,
            "flops_convention": FLOPS_CONVENTION, "specificity_definition": SPECIFICITY_DEFINITION,
            "provenance": {"git_rev": "abc1234+dirty", "versions": {"torch": "2.5.0", "numpy": "2.1"},
                           "device": "cpu", "hostname": "testhost", "python": "3.11.2",
                           "started_at": "2025-01-01T00:00:00Z"},
            "args": {"resume": False, "out": "runs/demo"},
        }
        atomic.write_json(run_dir / "spec.json", spec)
    return run_dir


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    return make_run_dir(tmp_path)


@pytest.fixture()
def tables(run_dir: Path) -> rb.RunTables:
    return rb.load_run(run_dir)


@pytest.fixture(scope="module")
def built_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with its report built once for the module (tests must not modify it)."""
    run_dir = make_run_dir(tmp_path_factory.mktemp("built"))
    rb.build_report(run_dir)
    return run_dir


@pytest.fixture()
def built_copy(built_run: Path, tmp_path: Path) -> Path:
    """A private copy of `built_run` (report.html and figures included) that a test may modify."""
    return Path(shutil.copytree(built_run, tmp_path / "copy"))


# ---------------------------------------------------------------------------------------------
# Info functions
# ---------------------------------------------------------------------------------------------


def test_trials_and_header(tables: rb.RunTables) -> None:
    trials = rb.trials_info(tables.results)
    assert [t.trial_id for t in trials] == ["t0", "t1", "t2", "t3"]
    assert rb.trial_counts(trials) == rb.TrialCounts(complete=2, partial=1, failed=1, other=0)
    assert trials[0].config == {"augment": True, "lr": 0.01, "width": 16}
    h = rb.header_info(tables)
    assert (h.run, h.space, h.dataset) == ("demo-run", "tiny-ee", "cifar100")
    # the partial trial's 0.50 is not the best trial: only complete trials count
    assert h.best_hypervolume == pytest.approx(0.45) and h.best_trial_number == 2
    assert h.front_size == 3
    assert h.flops_convention == FLOPS_CONVENTION and h.flops_convention_from_spec
    assert h.specificity_definition == SPECIFICITY_DEFINITION
    assert h.reference_mflops == pytest.approx(100.0)
    assert any("not complete" in n for n in h.notes)  # the partial trial's on_front flag is reported


def test_front_plot_info_draws_only_complete_test_rows(tables: rb.RunTables) -> None:
    info = rb.front_plot_info(tables, "expected_flops", "accuracy")
    assert set(info.front.point_id) == {"t0/calibrated/0", "t2/calibrated/1", "t2/calibrated/2"}
    assert not any(pid.startswith(("t1/", "t3/")) for pid in info.front.point_id)
    assert not any(pid.startswith(("t1/", "t3/")) for pid in info.background.point_id)
    assert set(info.partial.point_id) == {"t1/calibrated/0", "t1/calibrated/1", "t1/calibrated/2"}
    assert len(info.background) == 6  # 3 calibrated points x 2 complete trials
    # test scores, in MFLOPs: t2/calibrated/1 -> flops (20 + 15) * 1.2 = 42 MFLOPs, acc 0.69 - 0.02
    i = info.front.point_id.index("t2/calibrated/1")
    assert info.front.x[i] == pytest.approx(42.0)
    assert info.front.y[i] == pytest.approx(0.60 + 0.05 + 0.04 - 0.02)
    assert list(info.front.x) == sorted(info.front.x)
    assert [f.policy for f in info.fixed] == ["fixed:coarse@0", "fixed:fine@0", "fixed:fine@2"]
    assert all(len(f.points) == 2 for f in info.fixed)  # complete trials only
    assert info.fixed[1].level == "fine" and info.fixed[2].exit_index == 2
    assert info.x_reference == pytest.approx(100.0)
    assert not info.x_maximize and info.y_maximize
    # staircase starts at the cheapest front point and ends at the most accurate
    assert tuple(info.staircase[0]) == pytest.approx((info.front.x[0], info.front.y[0]))
    assert info.staircase[-1][1] == pytest.approx(info.front.y.max())

    spec_info = rb.front_plot_info(tables, "specificity", "accuracy")
    assert spec_info.x_maximize and spec_info.drawable
    assert set(spec_info.front.point_id) == set(info.front.point_id)


def test_staircase_by_hand() -> None:
    # FLOPs (min) vs accuracy (max): (3, .6) is dominated by (2, .7)
    st = rb.staircase(np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.7, 0.6]), False, True)
    np.testing.assert_allclose(st, [[1, 0.5], [2, 0.5], [2, 0.7]])
    # both maximised: walk from the largest x
    st = rb.staircase(np.array([0.2, 0.8]), np.array([0.9, 0.6]), True, True)
    np.testing.assert_allclose(st, [[0.8, 0.6], [0.2, 0.6], [0.2, 0.9]])
    assert rb.staircase(np.array([np.nan]), np.array([1.0]), False, True).shape == (0, 2)


def test_threshold_curves_info(tables: rb.RunTables) -> None:
    info = rb.threshold_curves_info(tables)
    assert [c.trial_id for c in info.curves] == ["t0", "t2"]  # partial and failed: none
    t0, t2 = info.curves
    assert len(t0.mflops) == 2 and len(t2.mflops) == 3  # t0/calibrated/1 is off its trial front
    np.testing.assert_allclose(t0.mflops, [20.0, 50.0])
    assert info.labelled == ("t2", "t0") and info.hidden_in_legend == 0  # best hypervolume first
    capped = rb.threshold_curves_info(tables, max_legend=1)
    assert capped.labelled == ("t2",) and capped.hidden_in_legend == 1


def test_front_table_rows(tables: rb.RunTables) -> None:
    info = rb.front_table_info(tables)
    assert [r.point_id for r in info.rows] == ["t0/calibrated/0", "t2/calibrated/1", "t2/calibrated/2"]
    assert info.config_names == ("augment", "lr", "width")
    r = info.rows[1]
    assert r.trial_number == 2 and r.policy == "calibrated"
    assert r.calib_accuracy == pytest.approx(0.69) and r.test_accuracy == pytest.approx(0.67)
    assert r.test_mflops == pytest.approx(42.0) and r.calib_mflops == pytest.approx(42.0)
    assert r.test_flops_norm == pytest.approx(0.42)
    assert r.test_specificity == pytest.approx(0.8)
    assert r.thresholds_fine == (0.247, 0.5, 1.0) and r.thresholds_coarse == (0.2, 0.346, 1.0)
    assert r.exit_fraction == (0.5, 0.3, 0.2)
    assert r.config == {"augment": True, "lr": pytest.approx(0.03), "width": 48}


def test_hypervolume_running_best_by_hand(tables: rb.RunTables) -> None:
    info = rb.hypervolume_info(tables)
    np.testing.assert_array_equal(info.trial_number, [0, 1, 2])  # the failed trial has none
    np.testing.assert_allclose(info.hypervolume, [0.30, 0.50, 0.45])
    assert info.status == ("complete", "partial", "complete")
    # the partial trial's 0.50 does not raise the running best
    np.testing.assert_allclose(info.running_best, [0.30, 0.30, 0.45])
    assert info.best_trial_number == 2 and info.best_hypervolume == pytest.approx(0.45)


def test_learning_curves_and_failed_and_spec(tables: rb.RunTables) -> None:
    lc = rb.learning_curves_info(tables)
    assert lc.n_exits == 3 and [t.trial_id for t in lc.trials] == ["t0", "t1", "t2", "t3"]
    assert lc.trials[1].fine_acc.shape == (2, 3) and lc.trials[1].status == "partial"
    failed = rb.failed_trials_info(tables)
    assert [(t.trial_id, t.trial_number, t.error) for t in failed.trials] == [("t3", 3, FAIL_REASON)]
    assert failed.trials[0].config["width"] == 64
    spec = rb.spec_info(tables)
    keys = dict(spec.spec_items)
    assert keys["budget.max_epochs"] == "5" and keys["hv_reference"] == "[0.0, 0.0, 1.0]"
    assert dict(spec.provenance_items)["provenance.versions.torch"] == "2.5.0"
    assert dict(spec.row_provenance)["git_rev"] == "abc1234+dirty"


def test_single_point_space_without_specificity(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, single_point=True)
    tables = rb.load_run(run_dir)
    spec_plot = rb.front_plot_info(tables, "specificity", "accuracy")
    assert not spec_plot.drawable and spec_plot.skipped > 0
    assert rb.front_plot_info(tables).drawable
    row = rb.front_table_info(tables).rows[0]
    assert row.thresholds_fine is None and row.exit_fraction is None and math.isnan(row.test_specificity)


# ---------------------------------------------------------------------------------------------
# Report, figures, CLI
# ---------------------------------------------------------------------------------------------


def _external_resources(text: str) -> list[str]:
    patterns = [r"""(?:src|href|action|poster)\s*=\s*["']?\s*(?:https?:)?//""",
                r"url\(\s*['\"]?\s*(?:https?:)?//", r"@import"]
    return [m.group(0) for p in patterns for m in re.finditer(p, text, flags=re.I)]


def test_build_report_html_and_pngs(built_run: Path) -> None:
    run_dir = built_run
    report = run_dir / "report.html"
    text = report.read_text(encoding="utf-8")
    assert _external_resources(text) == []
    assert "http://" not in text and "https://" not in text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == len(rb.FIGURE_NAMES)
    assert all(base64.b64decode(img).startswith(PNG_SIGNATURE) for img in images)
    # the failed trial's reason, HTML-escaped
    assert "loss diverged to nan at epoch 1 &lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script" not in text
    assert FLOPS_CONVENTION in text and SPECIFICITY_DEFINITION in text
    assert "demo-run" in text and "provenance.versions.torch" in text
    for name in rb.FIGURE_NAMES.values():
        data = (run_dir / "figures" / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    assert not [p for p in run_dir.rglob("*.tmp")]


def test_render_front_returns_figure_without_pyplot(tables: rb.RunTables) -> None:
    fig = render_front(rb.front_plot_info(tables))
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert any(lbl.startswith("global front (3)") for lbl in labels)
    assert "fixed fine@2" in labels


def test_report_builds_when_every_trial_failed(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, all_failed=True, with_curves=False)
    info = rb.compute_report_info(rb.load_run(run_dir))
    assert info.header.counts == rb.TrialCounts(0, 0, 4, 0)
    assert not info.front_flops.drawable and info.front_table.rows == ()
    assert math.isnan(info.header.best_hypervolume)
    text = rb.build_report(run_dir).read_text()
    assert "Failed trials (4)" in text and "No global-front points" in text
    assert not list((run_dir / "figures").glob("*.png"))


def test_report_builds_with_empty_results_and_no_spec_or_curves(tmp_path: Path) -> None:
    run_dir = tmp_path / "empty"
    write_table(results_table([]), run_dir / "results.parquet")
    (run_dir / "spec.json").write_text("")
    text = rb.build_report(run_dir).read_text()
    assert "no curves.parquet" in text
    assert "results schema" in text  # FLOPs convention falls back to the schema's, and says so


def test_stale_figures_are_removed(built_copy: Path) -> None:
    run_dir = built_copy
    stale = run_dir / "figures" / rb.FIGURE_NAMES["learning_curves"]
    assert stale.exists()
    (run_dir / "curves.parquet").unlink()
    rb.build_report(run_dir)
    assert not stale.exists()


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


def test_previous_report_survives_a_rendering_error(built_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reports import render

    run_dir = built_copy
    previous = (run_dir / "report.html").read_bytes()
    figures = {p.name: p.read_bytes() for p in (run_dir / "figures").iterdir()}

    def boom(*args: Any, **kwargs: Any) -> dict[str, bytes]:
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(render, "render_figures", boom)
    with pytest.raises(RuntimeError):
        rb.build_report(run_dir)
    assert (run_dir / "report.html").read_bytes() == previous
    assert {p.name: p.read_bytes() for p in (run_dir / "figures").iterdir()} == figures


def test_summary_mentions_front_failures_and_report(built_run: Path) -> None:
    run_dir = built_run
    report = run_dir / "report.html"
    console = Console(record=True, width=160, color_system=None)
    print_summary(run_dir, console)
    out = console.export_text()
    assert "2 complete" in out and "1 partial" in out and "1 failed" in out
    assert "0.45" in out and "Global front" in out and "42" in out
    assert "loss diverged to nan at epoch 1 <script>alert(1)</script>" in out
    assert str(report) in out.replace("\n", "")


def test_main_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = make_run_dir(tmp_path, all_failed=True, with_curves=False)
    assert rb.main([str(run_dir)]) == 0
    assert (run_dir / "report.html").exists()
    assert "Failed trials" in capsys.readouterr().out
    assert rb.main([str(run_dir.parent / "nowhere")]) == 2
    assert "results.parquet" in capsys.readouterr().err


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env: Mapping[str, str] = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=dict(env), capture_output=True,
                          text=True, timeout=60)


def test_cli_missing_results_exits_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text("{}")
    proc = _run_cli("-m", "reports.build", str(tmp_path))
    assert proc.returncode == 2
    assert "results.parquet" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_builds_single_point_run_and_never_imports_pyplot(tmp_path: Path) -> None:
    # a space with one operating point per trial: null specificity and per-exit lists
    run_dir = make_run_dir(tmp_path, single_point=True)
    code = ("import sys; from reports.build import main; rc = main([sys.argv[1]]); "
            "print('PYPLOT', 'matplotlib.pyplot' in sys.modules); raise SystemExit(rc)")
    proc = _run_cli("-c", code, str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert "PYPLOT False" in proc.stdout
    assert "Global front" in proc.stdout and "report.html" in proc.stdout
    assert "specificity not drawn" in (run_dir / "report.html").read_text()
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    assert rb.FIGURE_NAMES["front_flops"] in figures
    assert rb.FIGURE_NAMES["front_specificity"] not in figures


def test_report_tolerates_damaged_optional_inputs(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, with_curves=False, with_spec=False)
    (run_dir / "curves.parquet").write_bytes(b"not parquet")
    (run_dir / "spec.json").write_text("[1, 2]")
    tables = rb.load_run(run_dir)
    assert tables.curves.empty and tables.spec == {}
    assert any("curves.parquet could not be read" in n for n in tables.notes)
    assert any("spec.json is not a JSON object" in n for n in tables.notes)
    info = rb.compute_report_info(tables)
    assert not info.learning_curves.drawable
    assert info.front_flops.x_reference is None  # no reference_flops without a spec
    assert info.header.run == "demo-run"  # taken from the rows
