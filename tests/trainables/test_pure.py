"""The pure layer imports no torch: a report, or a test of the math, loads none of it."""

from __future__ import annotations

import subprocess
import sys

PURE = ["trainables.contract", "trainables.pareto", "trainables.stratify", "trainables.multilabel", "trainables.engine", "trainables.engine.plan", "trainables.engine.batch_latency", "trainables.engine.augment", "trainables.engine.family", "trainables.predictor",
        "trainables.exits", "trainables.exits.policy", "trainables.exits.search", "trainables.exits.risk", "trainables.exits.modes",
        "trainables.exits.plain",
        "trainables.hierarchy", "trainables.data_info", "trainables.metrics", "trainables.hierarchy_heads.routing",
        "trainables.hierarchy_heads.induce", "reports.tables", "reports.progress", "search.rungs"]


def test_pure_modules_import_no_torch():
    code = ("import importlib, sys\n"
            f"for m in {PURE!r}:\n"
            "    importlib.import_module(m)\n"
            "    assert 'torch' not in sys.modules, m + ' imported torch'\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
