"""Cell values of a run's tables as plain Python, their units, and their compact text.

Parquet cells come back from pandas as None, NaN, NaT, numpy scalars or numpy arrays (list
columns). Everything the report computes or shows goes through these few functions, so that a
null is always treated, and shown ("—"), the same way.

`unit_scale` is the report's only unit conversion. It is keyed by a declared column's unit
string, never by the column's name: a column whose unit is "FLOPs" is shown in MFLOPs, whatever
the family calls it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MISSING",
    "UNIT_SCALES",
    "fmt_num",
    "fmt_value",
    "float_list",
    "is_null",
    "plain",
    "to_float",
    "to_int",
    "to_str",
    "trial_label",
    "unit_scale",
]

MISSING = "—"

#: declared unit -> (divisor, unit shown): big counts get a readable unit in axes and tables
UNIT_SCALES: dict[str, tuple[float, str]] = {"FLOPs": (1e6, "MFLOPs")}


def unit_scale(unit: str) -> tuple[float, str]:
    """(divisor, shown unit) for values of a column declared with `unit`."""
    return UNIT_SCALES.get(unit, (1.0, unit))


def is_null(v: Any) -> bool:
    """None, NaN, NaT or pandas' NA; a list or array cell is never null (it may be empty)."""
    if v is None:
        return True
    if isinstance(v, (str, bytes, bool, int, list, tuple, dict, np.ndarray)):
        return False
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def to_float(v: Any) -> float:
    """A float; NaN for a null or anything that is not a number."""
    if is_null(v) or isinstance(v, (str, bytes, list, tuple, dict, np.ndarray)):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def to_int(v: Any) -> int | None:
    f = to_float(v)
    return None if math.isnan(f) else int(f)


def to_str(v: Any) -> str | None:
    return None if is_null(v) else str(v)


def float_list(v: Any, digits: int | None = None) -> tuple[float, ...] | None:
    """A list cell as floats (NaN for null entries), rounded to `digits`; None for a null, empty or scalar cell."""
    if not isinstance(v, (list, tuple, np.ndarray)) or len(v) == 0:
        return None
    values = tuple(to_float(x) for x in v)
    if digits is not None:
        values = tuple(round(x, digits) if math.isfinite(x) else x for x in values)
    return values


def plain(v: Any) -> Any:
    """A cell as a plain Python value: None for null, numpy scalars unwrapped, arrays as tuples."""
    if isinstance(v, (np.ndarray, list, tuple)):
        return tuple(plain(x) for x in v)
    if is_null(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def fmt_num(v: Any, digits: int = 4) -> str:
    """A number with `digits` significant digits; "—" for null or non-finite."""
    f = to_float(v)
    if not math.isfinite(f):
        return MISSING
    if isinstance(plain(v), int) and not isinstance(plain(v), bool):
        return str(plain(v))
    return f"{f:.{digits}g}"


def fmt_value(v: Any, digits: int = 4, scale: float = 1.0) -> str:
    """Any cell as short text: numbers (divided by `scale`), lists as "a / b / c", "—" for null."""
    v = plain(v)
    if v is None:
        return MISSING
    if isinstance(v, tuple):
        return " / ".join(fmt_value(x, digits, scale) for x in v) if v else MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return fmt_num(v / scale if scale != 1.0 else v, digits)
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={fmt_value(x, digits)}" for k, x in v.items())
    return str(v)


def trial_label(number: int | None, trial_id: str = "") -> str:
    """"#3" for trial number 3; the trial id when it has no number."""
    return f"#{number}" if number is not None else (trial_id or "?")
