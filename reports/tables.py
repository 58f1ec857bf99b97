"""Read a run directory into the tables a report is computed from, with the space's Declaration.

`RUN_DIR/results.parquet` is required (`ReportInputError` when it is missing or unreadable);
`RUN_DIR/curves.parquet` and `RUN_DIR/spec.json` are optional: when absent or damaged the report is
still built, and `RunTables.notes` says what is missing. The Declaration, which decides everything
the report draws, comes from spec.json (`spec["declaration"]`, written when the run started); when
the spec lacks one, from the space registry's current code; when neither works the run cannot be
reported on (`ReportInputError`). The versioned conventions of a stored declaration (e.g. which
class distance its figures use) are compared with those of the space's current code, and every
difference, a convention the run does not state included, is a note: a report never presents
figures made under another definition than the code's without saying so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import pyarrow.parquet as pq

from reports.schema import curves_schema, result_schema
from reports.values import is_null
from trainables.contract import Declaration, convention_changes

__all__ = ["ReportInputError", "RunTables", "load_run"]


class ReportInputError(Exception):
    """The run directory cannot be reported on (no readable results.parquet, or no declaration)."""


class RunTables(NamedTuple):
    """Everything read from a run directory. `notes` lists what was absent, unreadable or odd."""

    run_dir: Path
    results: pd.DataFrame  # every common and declared column present (null where the file lacked one)
    curves: pd.DataFrame  # common and declared curve columns; empty when curves.parquet is absent/unreadable
    spec: dict[str, Any]  # {} when spec.json is absent, empty or not a JSON object
    declaration: Declaration
    notes: tuple[str, ...]


def _with_columns(df: pd.DataFrame, names: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """`df` with a null column for each of `names` it lacks, and the names that were missing."""
    missing = [n for n in names if n not in df.columns]
    if missing:
        df = df.copy()
        for n in missing:
            df[n] = pd.Series([None] * len(df), index=df.index, dtype=object)
    return df, missing


def _read_spec(run_dir: Path, notes: list[str]) -> dict[str, Any]:
    path = run_dir / "spec.json"
    if not path.is_file():
        notes.append("no spec.json: the run's settings are taken from the results rows only.")
        return {}
    try:
        text = path.read_text(encoding="utf-8")
        loaded = json.loads(text) if text.strip() else {}
    except (OSError, ValueError) as exc:
        notes.append(f"spec.json could not be read ({exc}); it is ignored.")
        return {}
    if not isinstance(loaded, dict):
        notes.append("spec.json is not a JSON object; it is ignored.")
        return {}
    return loaded


def _space_name(spec: dict[str, Any], results: pd.DataFrame) -> str | None:
    name = spec.get("space")
    if not name and "space" in results.columns:
        name = next((str(v) for v in results["space"] if not is_null(v)), None)
    return str(name) if name else None


def _code_declaration(spec: dict[str, Any], space_name: str) -> Declaration:
    """The declaration the space's current code gives for this run's budget and options (imported
    here: the registry pulls in the families' code). Raises whatever that raises."""
    from spaces import get_space

    space = get_space(space_name)
    budget = spec.get("budget", "smoke")
    options = spec.get("options")
    return space.declaration(space.budget(budget if isinstance(budget, str) else "smoke"),
                             options if isinstance(options, dict) else None)


def _declaration(spec: dict[str, Any], results: pd.DataFrame, notes: list[str]) -> tuple[Declaration, bool]:
    """(declaration, whether it is the stored one): from spec.json, else from the space registry."""
    problems = []
    if "declaration" in spec:
        try:
            return Declaration.from_dict(spec["declaration"]), True
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"spec.json's declaration is unusable ({type(exc).__name__}: {exc})")
    else:
        problems.append("spec.json has no declaration")
    space_name = _space_name(spec, results)
    if not space_name:
        raise ReportInputError("; ".join(problems) + ", and no space is named to look it up in the registry")
    try:
        decl = _code_declaration(spec, space_name)
    except Exception as exc:  # an unknown space, or its code failing to import: either way, no declaration
        raise ReportInputError("; ".join(problems) + f", and space {space_name!r} gives none from the registry "
                               f"({type(exc).__name__}: {exc})") from exc
    notes.append("; ".join(problems) + f": the declaration is taken from the current code of space {space_name!r}.")
    return decl, False


def _convention_notes(spec: dict[str, Any], results: pd.DataFrame, stored: Declaration) -> list[str]:
    """One note per versioned convention on which the stored declaration and the current code
    disagree, plus what a recalibration recorded; nothing when the code cannot be consulted (a
    space that is not registered here)."""
    notes = []
    for change in spec.get("convention_changes") or ():
        if isinstance(change, dict) and isinstance(change.get("note"), str):
            notes.append(f"Conventions: {change['note']}")
    space_name = _space_name(spec, results)
    try:
        current = _code_declaration(spec, space_name) if space_name else None
    except Exception:  # an unknown space or broken code: there is nothing to compare with
        current = None
    if current is not None:
        notes += [f"Conventions: {n}" for n in convention_changes(stored, current)]
    return notes


def load_run(run_dir: str | Path) -> RunTables:
    """Read a run directory. Raises ReportInputError when it cannot be reported on."""
    run_dir = Path(run_dir)
    notes: list[str] = []
    results_path = run_dir / "results.parquet"
    if not run_dir.is_dir():
        what = "is not a directory" if run_dir.exists() else "does not exist"
        raise ReportInputError(f"no results.parquet: {run_dir} {what}; pass the run directory a search wrote "
                               "(STORAGE/NAME, e.g. runs/my-run)")
    if not results_path.is_file():
        raise ReportInputError(f"no results.parquet in {run_dir}: has the search written any result yet?")
    try:
        results = pq.read_table(results_path).to_pandas()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        why = " ".join(str(exc).split())  # pyarrow's text may span lines; the message is one line
        raise ReportInputError(
            f"cannot read {results_path} ({type(exc).__name__}: {why}): the file is truncated or not Parquet. "
            f"Restore it from a copy, or move it aside and rebuild it from the trial folders with "
            f"`python -m search.recalibrate {run_dir}` (which also recalibrates the trials with the run's settings)."
        ) from exc

    spec = _read_spec(run_dir, notes)
    decl, stored = _declaration(spec, results, notes)
    if stored:
        notes.extend(_convention_notes(spec, results, decl))
    results, missing = _with_columns(results, result_schema(decl).names)
    declared_missing = [n for n in missing if n in {c.name for c in decl.columns()}]
    if declared_missing and len(results):
        notes.append(f"results.parquet lacks declared column(s) {', '.join(declared_missing)}: shown as empty.")

    curves_path = run_dir / "curves.parquet"
    curve_names = curves_schema(decl).names
    curves, _ = _with_columns(pd.DataFrame(), curve_names)
    if curves_path.is_file():
        try:
            curves, _ = _with_columns(pq.read_table(curves_path).to_pandas(), curve_names)
        except Exception as exc:
            notes.append(f"curves.parquet could not be read ({exc}); learning curves are omitted.")
    else:
        notes.append("no curves.parquet: learning curves are omitted.")
    return RunTables(run_dir=run_dir, results=results, curves=curves, spec=spec, declaration=decl, notes=tuple(notes))
