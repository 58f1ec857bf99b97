"""Reports of a search run: the results schema, report.html with its figures, the terminal summary.

Everything a report draws comes from the run's Declaration (trainables/contract.py), never from a
family's metric names. Names are re-exported lazily (PEP 562), so `import reports` or
`import reports.schema` from the search code pulls in neither pandas, matplotlib nor rich.

* `reports.schema`   - the results tables' schema (common + declared columns), atomic Parquet writes;
* `reports.tables`   - reads RUN_DIR into RunTables with its Declaration (`load_run`);
* `reports.info`     - what each figure and table shows (NamedTuples);
* `reports.compute`  - points and fronts: RunTables -> info (pure, no drawing);
* `reports.overview` - header, learning curves, failed trials, spec; `compute_report_info`;
* `reports.figures`  - PNG figures (matplotlib Agg, never pyplot);
* `reports.html`     - the self-contained page (inline SVG fronts via `reports.svg`, sortable tables);
* `reports.summary`  - the rich terminal summary;
* `reports.build`    - `build_report` and `python -m reports.build RUN_DIR`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reports.build import build_report
    from reports.compute import (
        default_pick,
        exit_fraction_info,
        front_plot_info,
        front_table_info,
        objective_info,
        staircase,
        trial_curves_info,
        trials_info,
    )
    from reports.figures import render_figures
    from reports.html import render_html
    from reports.info import ReportInfo
    from reports.overview import compute_report_info, failed_trials_info, header_info, learning_curves_info, spec_info
    from reports.summary import print_summary
    from reports.tables import ReportInputError, RunTables, load_run

_EXPORTS: dict[str, str] = {
    "build_report": "reports.build",
    "default_pick": "reports.compute",
    "exit_fraction_info": "reports.compute",
    "front_plot_info": "reports.compute",
    "front_table_info": "reports.compute",
    "objective_info": "reports.compute",
    "staircase": "reports.compute",
    "trial_curves_info": "reports.compute",
    "trials_info": "reports.compute",
    "render_figures": "reports.figures",
    "render_html": "reports.html",
    "ReportInfo": "reports.info",
    "compute_report_info": "reports.overview",
    "failed_trials_info": "reports.overview",
    "header_info": "reports.overview",
    "learning_curves_info": "reports.overview",
    "spec_info": "reports.overview",
    "print_summary": "reports.summary",
    "ReportInputError": "reports.tables",
    "RunTables": "reports.tables",
    "load_run": "reports.tables",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'reports' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
