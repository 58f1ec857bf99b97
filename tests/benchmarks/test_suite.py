"""The benchmark suite runs as a user runs it (`python -m benchmarks.suite --quick`, a subprocess,
CPU, synthetic data): every figure is emitted with its reference and ratios, on stdout and in the
JSON file. The figures' values are not asserted (speed is measured by running the suite, not by
timed tests); what is asserted is that each figure was measured against its reference, that the
two packing arms ran the same trials with the same seeds, and that a figure without time left,
one that runs past its time, and one whose Ray is missing are reported with a reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("throughput", "exits_vs_plain", "fixed_cost", "whole_search", "dynamic_inference", "packing")


def suite(args, env=None, timeout=1500):
    p = subprocess.run([sys.executable, "-m", "benchmarks.suite", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env=env)
    lines = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    return p, lines


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "suite.json"
    p, lines = suite(["--quick", "--out", str(out)])
    assert p.returncode == 0, p.stderr[-3000:]
    return lines, json.loads(out.read_text())


@pytest.mark.slow
def test_quick_suite_emits_every_figure_with_its_reference(quick):
    lines, doc = quick
    assert lines[0]["event"] == "start" and lines[0]["mode"] == "quick"
    figures = {ln["figure"]: ln for ln in lines if "figure" in ln}
    assert tuple(figures) == FIGURES
    for name, f in figures.items():
        assert f["status"] == "ok", (name, f.get("reason"))
        assert f["measure"] and f["data"] and f["seconds"] > 0, name
        for part in ("value", "reference", "ratio"):
            assert f[part] and all(v is not None for v in f[part].values()), (name, part, f[part])
    assert set(figures["throughput"]["ratio"]) == {"platform_over_bare", "platform_over_dataloader"}
    assert "gap_points_plain_minus_exits" in figures["exits_vs_plain"]["ratio"]
    # fixed_cost is `python -m benchmarks.trial_overhead` run as a user runs it: its two arms and their ratios
    fixed = figures["fixed_cost"]
    assert fixed["value"]["reuse_actors"] is True and fixed["reference"]["reuse_actors"] is False
    assert fixed["value"]["trials"] == fixed["reference"]["trials"] == 2
    assert fixed["value"]["fixed_cost_per_trial_s"] is not None and fixed["reference"]["fixed_cost_per_trial_s"] is not None
    assert {"no_reuse_over_reuse", "wall_ratio_off_over_on"} <= set(fixed["ratio"])
    assert "wall_over_training_epochs" in figures["whole_search"]["ratio"]
    dyn = figures["dynamic_inference"]["ratio"]
    assert {"measured_over_flops_speedup_batch1", "measured_over_flops_speedup_batched"} <= set(dyn)
    assert {"trials_per_hour_packed_over_alone", "hypervolume_packed_over_alone"} <= set(figures["packing"]["ratio"])
    # the JSON file holds what was printed, and the end line says how each figure went
    assert doc["figures"] == list(figures.values()) and doc["complete"] is True and doc["mode"] == "quick"
    assert lines[-1]["event"] == "end" and lines[-1]["figures"] == {n: "ok" for n in FIGURES}


@pytest.mark.slow
def test_quick_suite_packing_compares_the_same_trials_and_says_what_stands_in(quick):
    lines, _ = quick
    packing = next(ln for ln in lines if ln.get("figure") == "packing")
    setting = packing["setting"]
    assert setting["same_configs"] is True and setting["same_seeds"] is True and setting["trials_compared"] == 2
    assert "no GPU" in setting["stand_in"]  # CI has no GPU: the figure says what stands in for packing
    assert setting["packed"]["cpus_per_trial"] == 1.0 and setting["alone"]["cpus_per_trial"] == float(os.cpu_count())
    assert all("synthetic" in ln["data"] for ln in lines if "figure" in ln)


def test_a_figure_without_time_left_is_skipped_with_the_reason(tmp_path):
    out = tmp_path / "s.json"
    p, lines = suite(["--quick", "--budget-s", "1", "--only", "throughput,dynamic_inference", "--out", str(out)])
    assert p.returncode == 0, p.stderr[-2000:]
    figures = {ln["figure"]: ln for ln in lines if "figure" in ln}
    assert figures["throughput"]["status"] == "skipped" and "would overrun" in figures["throughput"]["reason"]
    assert figures["dynamic_inference"]["status"] == "skipped" and "whole_search" in figures["dynamic_inference"]["reason"]
    assert json.loads(out.read_text())["figures"] == list(figures.values())


def test_a_figure_past_its_time_is_stopped_with_the_reason(tmp_path):
    # 2 s cannot start Python with torch and train both networks
    p, lines = suite(["--quick", "--cap-s", "2", "--only", "exits_vs_plain", "--out", str(tmp_path / "s.json")])
    assert p.returncode == 0, p.stderr[-2000:]
    f = next(ln for ln in lines if ln.get("figure") == "exits_vs_plain")
    assert f["status"] == "stopped" and "was stopped" in f["reason"] and f["seconds"] < 40


def test_without_ray_the_search_figures_fail_with_a_clear_message(tmp_path):
    # a Python that cannot import Ray: a finder that refuses it, loaded at start-up by sitecustomize
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoRay:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (hidden by the test)')\n"
        "sys.meta_path.insert(0, _NoRay())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    p, lines = suite(["--quick", "--only", "fixed_cost", "--out", str(tmp_path / "s.json")], env=env, timeout=300)
    assert p.returncode == 1
    f = next(ln for ln in lines if ln.get("figure") == "fixed_cost")
    assert f["status"] == "failed" and "ray cannot be imported" in f["reason"] and "site.tar.xz" in f["reason"]


def test_bad_input_is_refused_with_exit_2(tmp_path):
    p, _ = suite(["--only", "throughput,nonsense", "--out", str(tmp_path / "s.json")], timeout=120)
    assert p.returncode == 2 and "nonsense" in p.stderr and not (tmp_path / "s.json").exists()
    p, _ = suite(["--data-root", str(tmp_path / "missing")], timeout=120)
    assert p.returncode == 2 and "no such folder" in p.stderr


def _fake_cifar(path: Path, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10, dtype=np.uint8), per_class)
    rng.shuffle(y)
    x = rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8)
    np.savez(path, x=x, y=y)
    return x, y


def test_cifar_subset_writes_what_the_cifar10_loader_reads(tmp_path):
    from trainables.data import get_dataset

    src = tmp_path / "cifar10-train.npz"
    x, y = _fake_cifar(src, 30)
    out = tmp_path / "subset"
    p = subprocess.run([sys.executable, "-m", "benchmarks.cifar_subset", str(src), "--per-class", "20", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["images"] == 200 and info["per_class"] == 20 and info == json.loads((out / "subset.json").read_text())
    with np.load(out / "cifar10-train.npz") as z:
        sx, sy = z["x"], z["y"]
    keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:20] for c in range(10)]))  # the first 20 of each class, in order
    assert sx.dtype == np.uint8 and np.array_equal(sx, x[keep]) and np.array_equal(sy, y[keep])
    assert info["bytes"] == (out / "cifar10-train.npz").stat().st_size
    ds = get_dataset("cifar10", str(out), size="full", seed=0)
    assert len(ds.train) + len(ds.calib) + len(ds.test) == 200


def test_cifar_subset_refuses_a_source_with_too_few_images(tmp_path):
    src = tmp_path / "cifar10-train.npz"
    _fake_cifar(src, 5)
    p = subprocess.run([sys.executable, "-m", "benchmarks.cifar_subset", str(src), "--per-class", "20", "--out",
                        str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "need 20 images of each" in p.stderr and not (tmp_path / "o").exists()
