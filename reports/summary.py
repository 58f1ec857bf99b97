"""Terminal summary of a run, printed with rich: trials by status, the best outer objective, the
default operating point, the global front's points (test scores), failed trials with their reasons,
and where report.html is.

It renders the same info objects as the HTML report (`reports.overview.compute_report_info`), so
both always agree. Every string from the data is escaped for rich markup.
"""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from reports.info import ReportInfo
from reports.overview import compute_report_info
from reports.tables import RunTables, load_run
from reports.values import fmt_num, fmt_value, trial_label

__all__ = ["print_summary", "summary_renderable"]

_MAX_FRONT_ROWS = 15
_MAX_REASON_CHARS = 120


def _one_line(text: str | None, limit: int = _MAX_REASON_CHARS) -> str:
    if not text:
        return "(no reason recorded)"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else ""  # a traceback's last line says what went wrong; a one-line reason is itself
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _as_info(source: str | Path | RunTables | ReportInfo) -> ReportInfo:
    if isinstance(source, ReportInfo):
        return source
    if isinstance(source, RunTables):
        return compute_report_info(source)
    return compute_report_info(load_run(source))


def summary_renderable(info: ReportInfo, report_path: Path | None = None) -> Group:
    """The summary as a rich renderable; strings from the data are escaped."""
    h, c = info.header, info.header.counts
    overview = Table(box=box.SIMPLE_HEAD, show_header=False, pad_edge=False)
    overview.add_column(style="bold")
    overview.add_column(overflow="fold")
    overview.add_row("space / dataset", escape(f"{h.space} / {h.dataset}"))
    overview.add_row("trials", f"[green]{c.complete} complete[/]  [yellow]{c.partial} partial[/]  [red]{c.failed} failed[/]"
                     + "".join(f"  {n} {name}" for n, name in ((c.interrupted, "interrupted"), (c.running, "running"), (c.other, "other")) if n)
                     + f"  ({c.total} total)")
    if h.best is not None:
        best = f"{fmt_num(h.best.value, 6)} (trial #{h.best.trial_number})" if h.best.trial_number is not None else "—"
        overview.add_row(escape(f"best {h.best.name}"), best)
    overview.add_row("global front", f"{h.front_size} points")
    d = h.default
    pick = (f"trial {trial_label(d.trial_number)}, {d.policy}, {d.point_id}" if d.point_id else f"none: {d.error}")
    overview.add_row("default point", escape(pick))
    report = report_path if report_path is not None else info.run_dir / "report.html"
    overview.add_row("report", escape(str(report)) + ("" if report.exists() else " [dim](not built)[/]"))
    parts: list[object] = [overview]

    t = info.front_table
    if t.rows:
        front = Table(title="Global front (test scores)", box=box.SIMPLE_HEAD, title_justify="left")
        front.add_column("trial")
        front.add_column("policy")
        # the metrics the front figures draw: the full table (every declared metric) is in report.html
        drawn = {m.name for f in info.fronts for m in (f.x, f.y)} | {o.name for o in h.point_objectives}
        shown = [m for m in t.metrics if m.name in drawn] or list(t.metrics)
        for m in shown:  # the unit on a second line, so that narrow terminals keep the names whole
            front.add_column(escape(m.name + (f"\n[{m.shown_unit}]" if m.shown_unit else "")), justify="right",
                             overflow="fold")
        for r in t.rows[:_MAX_FRONT_ROWS]:
            trial = trial_label(r.trial_number, r.trial_id) + (" (default)" if r.default else "")
            front.add_row(escape(trial), escape(r.policy), *(escape(fmt_value(r.test.get(m.name), scale=m.scale)) for m in shown))
        if len(t.rows) > _MAX_FRONT_ROWS:
            front.caption = f"… {len(t.rows) - _MAX_FRONT_ROWS} more in report.html"
        parts.append(front)

    if info.failed.trials:
        failed = Table(title="Failed trials", box=box.SIMPLE_HEAD, title_justify="left")
        failed.add_column("trial")
        failed.add_column("id", overflow="fold")
        failed.add_column("reason", overflow="fold")
        for f in info.failed.trials:
            failed.add_row(trial_label(f.trial_number, "?"), escape(f.trial_id), escape(_one_line(f.error)))
        parts.append(failed)
    parts += [f"[dim]note: {escape(note)}[/]" for note in h.notes]
    return Group(*parts)


def print_summary(run_dir_or_tables_or_info: str | Path | RunTables | ReportInfo, console: Console | None = None,
                  report_path: Path | None = None) -> None:
    """Print the run's summary. Accepts a run directory, loaded RunTables, or a computed ReportInfo."""
    info = _as_info(run_dir_or_tables_or_info)
    console = console if console is not None else Console()
    console.print(Panel(summary_renderable(info, report_path), title=f"run {escape(info.header.run)}", title_align="left",
                        expand=False))
