"""better_mistakes' class distance, end to end: a `--tree deep` trial on a CIFAR-100 fixture in the
official format with the real WordNet file stores severity, hdist@k and hierarchical precision@k
computed with LCA node heights (checked here against a definition built by hand from the tree
file); and a run made before the distance was versioned (an old-style spec.json) is reported as
such, cannot be resumed silently, and is converted by recalibration, which records it."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pyarrow.parquet as pq
import pytest

from search.collect import collect, write_tables
from search.prepare import reference_costs, run_document, trial_context
from search.spec import RunSpec
from spaces import Budget, get_space
from tests.trainables.test_datasets import write_cifar100
from trainables.atomic import write_json
from trainables.contract import Declaration
from trainables.data import cifar
from trainables.engine.loop import LocalReporter
from trainables.exits import ExitCache

ROOT = Path(__file__).resolve().parents[2]
SHARED_C100 = ROOT.parent / "shared" / "data" / "cifar100"
KS = (1, 5, 20)
# one tiny, fixed trial: a soft-label loss, so training uses the class distance too
PARAMS = {"backbone": "resnet", "resnet.width": 8, "resnet.blocks": 1, "epochs": 1, "loss": "soft", "soft_beta": 4.0,
          "optimizer": "sgd", "lr_sgd": 0.05, "weight_decay": 5e-4, "lr_schedule": "multistep", "batch_size": 64}


def _one_trial_run(storage: Path, data: str, options: dict[str, str], data_root: str | None = None) -> Path:
    """A run directory with one tiny better_mistakes trial, written and collected as the runners do."""
    registered = get_space("better_mistakes")
    budget = Budget("smoke", epochs=1, data_size="tiny", trials=1, calibration={})
    space = dataclasses.replace(registered, budgets={"smoke": budget})
    spec = RunSpec(space="better_mistakes", data=data, name="bm", storage=str(storage), trials=1, data_size="tiny",
                   data_root=data_root, options=options)
    refs = reference_costs(space, spec)
    doc = run_document(space, spec, refs, runner="distance test")
    spec.run_dir.mkdir(parents=True)
    write_json(spec.run_dir / "spec.json", doc)
    ctx = trial_context(space, spec, "t0", LocalReporter(spec.run_dir / "trials" / "t0"), refs)
    config = {**PARAMS, **space.search_space(budget)(optuna.trial.FixedTrial(PARAMS))}
    space.train(config, ctx, budget, space.resolve_options(options))
    write_tables(spec.run_dir, *collect(spec.run_dir, doc, Declaration.from_dict(doc["declaration"]), {"t0": {"number": 0}}))
    return spec.run_dir


# ---------------------------------------------------------------------------- the hand-built definition


def lca_heights_by_hand(text: str, fine_names: list[str]) -> np.ndarray:
    """D[a, b] = height of the lowest common ancestor node, straight from the indented tree text:
    parents by indentation, heights by recursion, the LCA by walking up from one leaf."""
    names, parent, stack = [], [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip("-"))) // 2
        del stack[depth:]
        parent.append(stack[-1] if stack else -1)
        stack.append(len(names))
        names.append(line.lstrip("-").strip())
    children = {v: [c for c, p in enumerate(parent) if p == v] for v in range(len(names))}

    def height(v: int) -> int:
        return max((height(c) + 1 for c in children[v]), default=0)

    def up(v: int) -> list[int]:
        chain = [v]
        while parent[chain[-1]] >= 0:
            chain.append(parent[chain[-1]])
        return chain

    leaf = {names[v]: v for v in range(len(names)) if not children[v]}
    paths = [up(leaf[n]) for n in fine_names]
    heights = [height(v) for v in range(len(names))]
    d = np.zeros((len(fine_names), len(fine_names)))
    for a, pa in enumerate(paths):
        for b, pb in enumerate(paths):
            d[a, b] = heights[next(v for v in pa if v in pb)]
    return d


def lca_rule_v1_by_hand(text: str, fine_names: list[str]) -> np.ndarray:
    """The rule before version 2: max(depth a, depth b) - depth(LCA)."""
    names, depth_of, parent, stack = [], [], [], []
    for line in text.splitlines():
        if line.strip():
            depth = (len(line) - len(line.lstrip("-"))) // 2
            del stack[depth:]
            parent.append(stack[-1] if stack else -1)
            stack.append(len(names))
            names.append(line.lstrip("-").strip())
            depth_of.append(depth)
    has_child = set(parent)
    leaf = {names[v]: v for v in range(len(names)) if v not in has_child}
    paths = []
    for n in fine_names:
        chain = [leaf[n]]
        while parent[chain[-1]] >= 0:
            chain.append(parent[chain[-1]])
        paths.append(chain)
    d = np.zeros((len(fine_names), len(fine_names)))
    for a, pa in enumerate(paths):
        for b, pb in enumerate(paths):
            if a != b:
                d[a, b] = max(depth_of[pa[0]], depth_of[pb[0]]) - depth_of[next(v for v in pa if v in pb)]
    return d


def metrics_by_hand(scores: np.ndarray, labels: np.ndarray, d: np.ndarray) -> dict[str, float]:
    """Severity, hdist@k and hprecision@k sample by sample: classes ranked by score, ties to the
    lower index; hprecision's ideal similarities are the label's own best k."""
    n, c = scores.shape
    ranked = [sorted(range(c), key=lambda j: (-scores[i, j], j)) for i in range(n)]
    mistakes = [d[labels[i], ranked[i][0]] for i in range(n) if ranked[i][0] != labels[i]]
    out = {"mistake_severity": sum(mistakes) / len(mistakes) if mistakes else 0.0}
    top = d.max()
    for k in KS:
        out[f"hdist_{k}"] = sum(sum(d[labels[i], ranked[i][j]] for j in range(k)) / k for i in range(n)) / n
        got = sum(1 - d[labels[i], ranked[i][j]] / top for i in range(n) for j in range(k))
        ideal = sum(1 - v / top for i in range(n) for v in sorted(d[labels[i]])[:k])
        out[f"hprecision_{k}"] = got / ideal
    return out


# ---------------------------------------------------------------------------- --tree deep on the WordNet tree


@pytest.fixture(scope="module")
def deep_run(tmp_path_factory):
    tree_file, names_file, meta = SHARED_C100 / "wordnet-hierarchy.txt", SHARED_C100 / "fine_to_coarse.json", SHARED_C100 / "meta"
    if not (tree_file.is_file() and names_file.is_file() and meta.is_file()):
        pytest.skip(f"real CIFAR-100 label files (meta, fine_to_coarse.json, wordnet-hierarchy.txt) not under {SHARED_C100}")
    names = json.loads(names_file.read_text(encoding="utf-8"))
    root = tmp_path_factory.mktemp("c100")
    folder = write_cifar100(root, n_train=3, n_test=2, coarse_of=names["fine_to_coarse"], meta=meta, textured=True)
    shutil.copy(tree_file, folder / "wordnet-hierarchy.txt")
    # the fixture pickles are not the official files: their checksums stand in for the official ones
    with pytest.MonkeyPatch.context() as mp:
        for part in ("train", "test"):
            mp.setitem(cifar.CIFAR100_MD5, part, cifar.file_md5(folder / part))
        run_dir = _one_trial_run(tmp_path_factory.mktemp("runs"), "cifar100", {"tree": "deep"}, str(root))
    return run_dir, names["fine_label_names"], tree_file.read_text(encoding="utf-8")


@pytest.mark.real_data
def test_deep_tree_run_stores_lca_height_figures(deep_run):
    run_dir, fine_names, text = deep_run
    d = lca_heights_by_hand(text, fine_names)
    assert d.max() == 8 and d[fine_names.index("cloud"), fine_names.index("mushroom")] == 8
    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    assert {r["split"] for r in rows} == {"calibration", "test"} and all(r["tree"] == "deep" for r in rows)
    assert all(r["tree_height"] == 8 for r in rows)
    for row in rows:
        cache = ExitCache.load(run_dir / "trials" / "t0" / f"exit_cache_{row['split']}.npz")
        scores = np.asarray(cache.logits["fine"][-1], dtype=np.float32)
        labels = np.asarray(cache.labels["fine"])
        assert len({tuple(np.argsort(-s)[:5]) for s in scores}) > 1  # rankings differ from image to image
        want = metrics_by_hand(scores, labels, d)
        for name, value in want.items():
            assert row[name] == pytest.approx(value, rel=1e-9, abs=1e-12), (row["split"], name)
        # and not the rule before version 2, which differs on these answers
        old = metrics_by_hand(scores, labels, lca_rule_v1_by_hand(text, fine_names))
        assert abs(old["mistake_severity"] - row["mistake_severity"]) > 0.1
    decl = json.loads((run_dir / "spec.json").read_text())["declaration"]
    (conv,) = decl["conventions"]
    assert (conv["name"], conv["version"]) == ("class distance", 2) and "hdist_5" in conv["columns"]


# ---------------------------------------------------------------------------- a run made before the change


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    return _one_trial_run(tmp_path_factory.mktemp("runs"), "synthetic", {"tree": "superclass"})


@pytest.fixture()
def old_style_run(synthetic_run, tmp_path):
    """A copy of the run whose spec.json is what the code before the change wrote: a declaration
    without conventions, and the old note on distances."""
    run_dir = tmp_path / "old"
    shutil.copytree(synthetic_run, run_dir)
    spec = json.loads((run_dir / "spec.json").read_text())
    del spec["declaration"]["conventions"]
    spec["declaration"]["notes"]["distances"] = "LCA distance = height of the lowest common ancestor (old text)"
    write_json(run_dir / "spec.json", spec)
    return run_dir


def test_a_new_run_has_no_convention_note(synthetic_run):
    from reports.tables import load_run

    assert not [n for n in load_run(synthetic_run).notes if "class distance" in n]


def test_report_of_an_old_run_says_which_distance_it_used(old_style_run):
    from reports.build import build_report
    from reports.tables import load_run

    (note,) = [n for n in load_run(old_style_run).notes if "class distance" in n]
    assert "states no version" in note and "version 1: (depth of the deeper of the two classes) - (depth of their LCA)" in note
    assert "This code uses version 2" in note and "mistake_severity" in note
    html = Path(build_report(old_style_run)).read_text()
    assert "states no version" in html and "version 1" in html


def test_an_old_run_is_not_resumed_by_the_new_code(old_style_run):
    p = subprocess.run([sys.executable, "-m", "search.run", "--space", "better_mistakes", "--data", "synthetic",
                        "--tree", "superclass", "--data-size", "tiny", "--storage", str(old_style_run.parent),
                        "--name", old_style_run.name, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    err = " ".join(p.stderr.split())  # rich may wrap
    assert p.returncode == 2, p.stderr[-2000:]
    assert "cannot be resumed by this code" in err and "states no version" in err and "search.recalibrate" in err
    assert "Traceback" not in p.stderr


def test_recalibration_converts_an_old_run_and_records_it(old_style_run):
    from reports.tables import load_run
    from search.checks import check_conventions
    from search.recalibrate import recalibrate

    before = pq.read_table(old_style_run / "results.parquet").to_pylist()
    assert recalibrate(old_style_run, {}) == 1
    spec = json.loads((old_style_run / "spec.json").read_text())
    assert [c["version"] for c in spec["declaration"]["conventions"]] == [2]
    (change,) = spec["convention_changes"]
    assert (change["name"], change["from"], change["to"], change["by"]) == ("class distance", None, 2, "search.recalibrate")
    notes = [n for n in load_run(old_style_run).notes if "class distance" in n]
    assert len(notes) == 1 and "recomputed" in notes[0] and "learning curves" in notes[0]
    space = get_space("better_mistakes")
    check_conventions(old_style_run, space.declaration(space.budget("smoke"), {"tree": "superclass"}))  # resumable now
    # on the two-level superclass tree both rules agree: the recomputed figures are the same
    after = {(r["point_id"], r["split"]): r for r in pq.read_table(old_style_run / "results.parquet").to_pylist()}
    for r in before:
        assert after[(r["point_id"], r["split"])]["mistake_severity"] == pytest.approx(r["mistake_severity"])
