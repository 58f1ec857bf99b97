"""Terminal summary of a run, printed with rich: trials by status, best hypervolume, the global
front's operating points (test scores), failed trials with their reasons, and where report.html is.

It reads the same info objects as the HTML report (`reports.build`), so both always agree.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

if TYPE_CHECKING:
    from reports.build import ReportInfo, RunTables

__all__ = ["print_summary", "summary_renderable"]

_MAX_FRONT_ROWS = 15
_MAX_REASON_CHARS = 120


def _num(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if math.isfinite(value) else "—"


def _one_line(text: str | None, limit: int = _MAX_REASON_CHARS) -> str:
    if not text:
        return "(no reason recorded)"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    # a traceback's last line says what went wrong; a one-line reason is itself
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _as_info(run_dir_or_tables: str | Path | RunTables | ReportInfo) -> ReportInfo:
    from reports.build import ReportInfo, RunTables, compute_report_info, load_run

    if isinstance(run_dir_or_tables, ReportInfo):
        return run_dir_or_tables
    if isinstance(run_dir_or_tables, RunTables):
        return compute_report_info(run_dir_or_tables)
    return compute_report_info(load_run(run_dir_or_tables))


def summary_renderable(info: ReportInfo, report_path: Path | None = None) -> Group:
    """The summary as a rich renderable (tables in a group); strings from the data are escaped."""
    h = info.header
    c = h.counts
    overview = Table(box=box.SIMPLE_HEAD, show_header=False, pad_edge=False)
    overview.add_column(style="bold")
    overview.add_column()
    overview.add_row("space / dataset", escape(f"{h.space} / {h.dataset}"))
    status = (f"[green]{c.complete} complete[/]  [yellow]{c.partial} partial[/]  "
              f"[red]{c.failed} failed[/]" + (f"  {c.other} other" if c.other else "")
              + f"  ({c.total} total)")
    overview.add_row("trials", status)
    best = "—"
    if math.isfinite(h.best_hypervolume):
        best = f"{h.best_hypervolume:.6g} (trial #{h.best_trial_number})"
    overview.add_row("best hypervolume", best)
    overview.add_row("global front", f"{h.front_size} points")
    report = report_path if report_path is not None else info.run_dir / "report.html"
    overview.add_row("report", escape(str(report)) + ("" if report.exists() else " [dim](not built)[/]"))

    parts: list[object] = [overview]

    rows = info.front_table.rows
    if rows:
        front = Table(title="Global front (test scores)", box=box.SIMPLE_HEAD, title_justify="left")
        for name in ("trial", "policy", "accuracy", "specificity", "MFLOPs"):
            front.add_column(name, justify="left" if name in ("trial", "policy") else "right")
        for r in rows[:_MAX_FRONT_ROWS]:
            trial = f"#{r.trial_number}" if r.trial_number is not None else r.trial_id
            front.add_row(escape(trial), escape(r.policy), _num(r.test_accuracy),
                          _num(r.test_specificity), _num(r.test_mflops))
        if len(rows) > _MAX_FRONT_ROWS:
            front.caption = f"… {len(rows) - _MAX_FRONT_ROWS} more in report.html"
        parts.append(front)

    if info.failed.trials:
        failed = Table(title="Failed trials", box=box.SIMPLE_HEAD, title_justify="left")
        failed.add_column("trial")
        failed.add_column("id", overflow="fold")
        failed.add_column("reason", overflow="fold")
        for t in info.failed.trials:
            number = f"#{t.trial_number}" if t.trial_number is not None else "?"
            failed.add_row(number, escape(t.trial_id), escape(_one_line(t.error)))
        parts.append(failed)

    for note in h.notes:
        parts.append(f"[dim]note: {escape(note)}[/]")
    return Group(*parts)


def print_summary(
    run_dir_or_tables: str | Path | RunTables | ReportInfo,
    console: Console | None = None,
    report_path: Path | None = None,
) -> None:
    """Print the run's summary. Accepts a run directory, loaded RunTables, or a computed ReportInfo."""
    info = _as_info(run_dir_or_tables)
    console = console if console is not None else Console()
    console.print(Panel(summary_renderable(info, report_path),
                        title=f"run {escape(info.header.run)}", title_align="left", expand=False))
