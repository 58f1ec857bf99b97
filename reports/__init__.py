"""Reports of a search run: Pareto computations, report.html with its figures, terminal summary.

Names are re-exported lazily (PEP 562), so `import reports.pareto` from the search code does not
pull in pandas, matplotlib or rich.

* `reports.pareto`  - non-dominated sorting and hypervolume (pure numpy);
* `reports.build`   - reads RUN_DIR, computes what each figure/table shows, writes report.html
                      (`python -m reports.build RUN_DIR`);
* `reports.render`  - draws those info objects (matplotlib Agg) and the HTML page;
* `reports.summary` - the rich terminal summary.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reports.build import (
        ReportInfo,
        ReportInputError,
        RunTables,
        build_report,
        compute_report_info,
        failed_trials_info,
        front_plot_info,
        front_table_info,
        header_info,
        hypervolume_info,
        learning_curves_info,
        load_run,
        spec_info,
        threshold_curves_info,
        trials_info,
    )
    from reports.pareto import ParetoFront, hypervolume, non_dominated_mask, pareto_front
    from reports.render import render_figures, render_html
    from reports.summary import print_summary

_EXPORTS: dict[str, str] = {
    "ParetoFront": "reports.pareto",
    "hypervolume": "reports.pareto",
    "non_dominated_mask": "reports.pareto",
    "pareto_front": "reports.pareto",
    "ReportInfo": "reports.build",
    "ReportInputError": "reports.build",
    "RunTables": "reports.build",
    "build_report": "reports.build",
    "compute_report_info": "reports.build",
    "failed_trials_info": "reports.build",
    "front_plot_info": "reports.build",
    "front_table_info": "reports.build",
    "header_info": "reports.build",
    "hypervolume_info": "reports.build",
    "learning_curves_info": "reports.build",
    "load_run": "reports.build",
    "spec_info": "reports.build",
    "threshold_curves_info": "reports.build",
    "trials_info": "reports.build",
    "render_figures": "reports.render",
    "render_html": "reports.render",
    "print_summary": "reports.summary",
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
