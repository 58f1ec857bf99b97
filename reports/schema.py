"""The results tables of a run, in code: common columns plus the columns its space declares.

`RUN_DIR/results.parquet` holds one row per (trial, operating point, split), plus one row per
failed or partial trial (point columns null). Its schema follows from the space's Declaration
(trainables/contract.py):

    common columns (COMMON, every space)
    + the space's declared trial columns, point columns and policy columns (typed)
    + one `config.<name>` column per searched value (type inferred: int64, float64, bool, string)

A row carrying a key that is neither common, declared nor `config` raises: nothing a trial
yields is dropped silently. `RUN_DIR/curves.parquet` holds one row per (trial, epoch): the
common curve columns plus the space's declared curve columns. Writes are atomic.

Common columns (the README documents the same list):

    run, space, dataset           the run's name, the space and the dataset
    trial_id, trial_number        Tune's trial id; the Optuna trial number
    status, error                 complete | partial (stopped early: fidelity < 1) | failed (with why)
    epochs_done, epochs_planned,  how much of its training the trial did; fidelity = done / planned
      fidelity
    point_id                      "<trial_id>/<policy>/<index>", the same on both splits
    policy                        how the point was made (e.g. "calibrated", a calibration mode, or a
                                  fixed reference policy "fixed:<level>@<exit>")
    reference                     a fixed reference policy: drawn for comparison, never on a front
    split                         "calibration" (where points are chosen) or "test" (only scored)
    trial_front, on_front         on the trial's own calibration front; on the run's global front
                                  (chosen on calibration scores; the test row of a chosen point
                                  carries the flag too)
    seed, config_json             the trial's seed and full config (JSON)
    git_rev, versions_json,       provenance: git revision (with "+dirty"), package versions, the
    device, hostname, created_at  device and host the trial ran on, when the trial wrote its result
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from trainables.atomic import atomic_write
from trainables.contract import Column, Declaration

__all__ = [
    "COMMON",
    "COMMON_CURVES",
    "CONFIG_PREFIX",
    "arrow_type",
    "curves_schema",
    "curves_table",
    "read_results",
    "result_schema",
    "results_table",
    "write_table",
]

CONFIG_PREFIX = "config."

COMMON = pa.schema([
    ("run", pa.string()),
    ("space", pa.string()),
    ("dataset", pa.string()),
    ("trial_id", pa.string()),
    ("trial_number", pa.int64()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("epochs_done", pa.int64()),
    ("epochs_planned", pa.int64()),
    ("fidelity", pa.float64()),
    ("point_id", pa.string()),
    ("policy", pa.string()),
    ("reference", pa.bool_()),
    ("split", pa.string()),
    ("trial_front", pa.bool_()),
    ("on_front", pa.bool_()),
    ("seed", pa.int64()),
    ("config_json", pa.string()),
    ("git_rev", pa.string()),
    ("versions_json", pa.string()),
    ("device", pa.string()),
    ("hostname", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
])

COMMON_CURVES = pa.schema([
    ("trial_id", pa.string()),
    ("epoch", pa.int64()),
    ("train_loss", pa.float64()),
    ("calib_loss", pa.float64()),  # the family's loss on the calibration split after this epoch
    ("lr", pa.float64()),
    ("epoch_seconds", pa.float64()),
    ("images_per_second", pa.float64()),
    ("evaluation_seconds", pa.float64()),  # the per-epoch signal's own cost (calibration on the cached outputs)
    ("stage", pa.string()),  # the training plan's stage of this epoch (plans of several stages, or with a stop rule)
    ("restored_epoch", pa.int64()),  # the stage ended here with the weights of this (earlier) epoch
    ("ended_at", pa.timestamp("us", tz="UTC")),  # when the epoch ended, its signal computed (the search's progress)
])

_TYPES = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(), "str": pa.string(), "floats": pa.list_(pa.float64())}


def arrow_type(column: Column) -> pa.DataType:
    return _TYPES[column.kind]


def _declared(columns: Iterable[Column], taken: set[str]) -> list[pa.Field]:
    out = []
    for c in columns:
        if c.name in taken:
            raise ValueError(f"declared column {c.name!r} clashes with a common column")
        out.append(pa.field(c.name, arrow_type(c)))
    return out


def result_schema(decl: Declaration) -> pa.Schema:
    """Common columns, then the declared ones (config.* columns are added per table)."""
    return pa.schema(list(COMMON) + _declared(decl.columns(), set(COMMON.names)))


def curves_schema(decl: Declaration) -> pa.Schema:
    return pa.schema(list(COMMON_CURVES) + _declared(decl.curves, set(COMMON_CURVES.names)))


def _config_type(values: list[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()


def _check_keys(rows: list[Mapping[str, Any]], allowed: set[str], what: str) -> None:
    for r in rows:
        unknown = sorted(set(r) - allowed)
        if unknown:
            raise ValueError(f"{what} row has undeclared key(s) {unknown}: declare them in the space's "
                             f"Declaration or drop them (row of trial {r.get('trial_id')!r})")


def results_table(rows: Iterable[Mapping[str, Any]], decl: Declaration) -> pa.Table:
    """The results table from row dicts: common and declared keys (missing ones null) and a `config`
    dict whose entries become `config.<name>` columns. An undeclared key raises ValueError."""
    rows = list(rows)
    schema = result_schema(decl)
    _check_keys(rows, set(schema.names) | {"config"}, "results")
    now = datetime.now(timezone.utc)
    arrays = []
    for f in schema:
        values = []
        for r in rows:
            v = r.get(f.name)
            if f.name == "config_json" and v is None and r.get("config") is not None:
                v = json.dumps(r["config"], sort_keys=True, default=str)
            if f.name == "created_at" and v is None:
                v = now
            values.append(v)
        arrays.append(pa.array(values, type=f.type))
    fields = list(schema)
    config_keys = sorted({k for r in rows for k in (r.get("config") or {})})
    for k in config_keys:
        vals = [(r.get("config") or {}).get(k) for r in rows]
        typ = _config_type(vals)
        if typ == pa.string():
            vals = [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in vals]
        elif typ == pa.float64():
            vals = [None if v is None else float(v) for v in vals]
        arrays.append(pa.array(vals, type=typ))
        fields.append(pa.field(CONFIG_PREFIX + k, typ))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def curves_table(rows: Iterable[Mapping[str, Any]], decl: Declaration) -> pa.Table:
    rows = list(rows)
    schema = curves_schema(decl)
    _check_keys(rows, set(schema.names), "curves")
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)


def write_table(table: pa.Table, path: str | Path) -> Path:
    """Write a Parquet file atomically (previous complete file or none survives a crash)."""
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def read_results(run_dir: str | Path) -> pa.Table:
    path = Path(run_dir) / "results.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no results.parquet in {run_dir}: has the search written any result yet?")
    return pq.read_table(path)
