"""The results table: its Arrow schema, how rows are built, and the atomic Parquet writes.

`RUN_DIR/results.parquet` holds one row per (trial, operating point, split), plus one row per
failed trial (split and point columns null). The fixed columns are `RESULT_SCHEMA`; each
searched hyperparameter is appended as a `config.<name>` column (its type inferred: int64,
float64, bool or string), so the table can be filtered by any searched value.

Columns (README "Reading results" documents the same list):

    run, space, dataset           the run's name, the space and the dataset
    trial_id, trial_number        Tune's trial id; its order of creation in the run
    status                        complete | partial (stopped early: fidelity < 1) | failed
    error                         why a failed trial failed (exception or divergence), else null
    epochs_done, epochs_planned   fidelity in epochs; fidelity = epochs_done / epochs_planned
    fidelity
    point_id                      "<trial_id>/<policy>/<index>", same on both splits
    policy                        "calibrated" (found by the threshold search) or a fixed
                                  reference policy such as "fixed:fine@2" / "fixed:coarse@0"
    split                         "calibration" (where the point was chosen) or "test"
    thresholds_fine/_coarse       per-exit normalised-entropy thresholds (list, one per exit)
    accuracy                      fraction of answers that are right at the level answered
    specificity                   fraction of answers given at the fine level
    expected_flops                mean FLOPs per image (FlopCounterMode convention: 2 x MACs)
    expected_flops_norm           expected_flops / FLOPs of the space's largest network
    exit_fraction                 fraction of samples answered at each exit (list)
    exit_flops                    cumulative FLOPs per image up to each exit, heads included
    fine_acc_per_exit             each exit's fine-head top-1 accuracy on the whole split (list)
    coarse_acc_per_exit           each exit's coarse-head top-1 accuracy on the whole split (list)
    trial_front                   on the trial's own calibration front
    on_front                      on the run's global front (chosen on calibration scores; the
                                  test row of a chosen point carries the flag too)
    hypervolume                   the trial's calibration-front hypervolume (its search signal)
    seed, config_json             the trial's seed and full config (JSON)
    git_rev, versions_json,       provenance: git revision (with "+dirty"), package versions,
    device, hostname, created_at  device the trial ran on, host, UTC time the row was made
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from search.atomic import atomic_write

__all__ = [
    "CONFIG_PREFIX",
    "CURVES_SCHEMA",
    "RESULT_SCHEMA",
    "read_results",
    "results_table",
    "write_table",
]

CONFIG_PREFIX = "config."

_f64 = pa.float64()
_list_f64 = pa.list_(pa.float64())

RESULT_SCHEMA = pa.schema(
    [
        ("run", pa.string()),
        ("space", pa.string()),
        ("dataset", pa.string()),
        ("trial_id", pa.string()),
        ("trial_number", pa.int64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("epochs_done", pa.int64()),
        ("epochs_planned", pa.int64()),
        ("fidelity", _f64),
        ("point_id", pa.string()),
        ("policy", pa.string()),
        ("split", pa.string()),
        ("thresholds_fine", _list_f64),
        ("thresholds_coarse", _list_f64),
        ("accuracy", _f64),
        ("specificity", _f64),
        ("expected_flops", _f64),
        ("expected_flops_norm", _f64),
        ("exit_fraction", _list_f64),
        ("exit_flops", _list_f64),
        ("fine_acc_per_exit", _list_f64),
        ("coarse_acc_per_exit", _list_f64),
        ("trial_front", pa.bool_()),
        ("on_front", pa.bool_()),
        ("hypervolume", _f64),
        ("seed", pa.int64()),
        ("config_json", pa.string()),
        ("git_rev", pa.string()),
        ("versions_json", pa.string()),
        ("device", pa.string()),
        ("hostname", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

# Learning curves, RUN_DIR/curves.parquet: one row per (trial, epoch).
CURVES_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("epoch", pa.int64()),
        ("train_loss", _f64),
        ("lr", _f64),
        ("calib_fine_acc_per_exit", _list_f64),
        ("calib_coarse_acc_per_exit", _list_f64),
        ("hypervolume", _f64),  # quick-grid calibration hypervolume after this epoch
        ("epoch_seconds", _f64),
        ("images_per_second", _f64),
    ]
)


def _config_type(values: list[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()


def results_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build the results table from row dicts.

    Each row has the RESULT_SCHEMA keys (missing ones become null) and a `config` dict whose
    entries become `config.<name>` columns.
    """
    rows = list(rows)
    now = datetime.now(timezone.utc)
    columns: dict[str, list[Any]] = {f.name: [] for f in RESULT_SCHEMA}
    config_keys: list[str] = []
    for r in rows:
        for k in (r.get("config") or {}):
            if k not in config_keys:
                config_keys.append(k)
    for r in rows:
        for f in RESULT_SCHEMA:
            v = r.get(f.name)
            if f.name == "config_json" and v is None and r.get("config") is not None:
                v = json.dumps(r["config"], sort_keys=True, default=str)
            if f.name == "created_at" and v is None:
                v = now
            columns[f.name].append(v)
    arrays = [pa.array(columns[f.name], type=f.type) for f in RESULT_SCHEMA]
    fields = list(RESULT_SCHEMA)
    for k in sorted(config_keys):
        vals = [(r.get("config") or {}).get(k) for r in rows]
        typ = _config_type(vals)
        if typ == pa.string():
            vals = [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in vals]
        elif typ == pa.float64():
            vals = [None if v is None else float(v) for v in vals]
        arrays.append(pa.array(vals, type=typ))
        fields.append(pa.field(CONFIG_PREFIX + k, typ))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_table(table: pa.Table, path: str | Path) -> Path:
    """Write a Parquet file atomically (previous complete file or none survives a crash)."""
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def read_results(run_dir: str | Path) -> pa.Table:
    path = Path(run_dir) / "results.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no results.parquet in {run_dir}: has the search written any result yet?")
    return pq.read_table(path)
