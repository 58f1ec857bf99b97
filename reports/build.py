"""Build a run's report: read RUN_DIR, compute, draw, write RUN_DIR/figures/*.png and RUN_DIR/report.html.

Usage::

    python -m reports.build RUN_DIR

reads `RUN_DIR/results.parquet` (required), `RUN_DIR/curves.parquet` and `RUN_DIR/spec.json`
(optional), writes every figure as PNG into `RUN_DIR/figures/` and a self-contained
`RUN_DIR/report.html`, all atomically, then prints the terminal summary. Exit status: 0 on success,
2 with a one-line message on stderr when the inputs cannot be read.

Before writing, a build removes the hidden temporary files (`.NAME.XXXXXXXX.tmp`) that atomic
writes killed mid-way left in RUN_DIR and RUN_DIR/figures/, once they are older than
`trainables.atomic.STALE_SECONDS` (5 minutes): younger ones may belong to a write in progress in
another process, e.g. a search writing results.parquet while its report is built, and removing one
of those would make that write fail.

Only orchestration lives here: `reports.tables` reads, `reports.compute` / `reports.overview`
compute, `reports.figures` and `reports.html` draw, `reports.summary` prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from reports.overview import compute_report_info
from reports.tables import ReportInputError, load_run
from trainables import atomic

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["build_report", "main"]


def build_report(run_dir: str | Path, console: Console | None = None) -> Path:
    """Write RUN_DIR/figures/*.png and RUN_DIR/report.html (atomically); return the report's path.

    With a console, also print the terminal summary to it. Everything is computed and drawn in
    memory first, so a failure before the writes leaves the previous report and figures untouched;
    report.html is written last, so a failure while writing figures leaves the previous page whole.
    """
    from reports import figures, html  # drawing is imported on use: computing needs no matplotlib

    run_dir = Path(run_dir)
    info = compute_report_info(load_run(run_dir))
    pngs = figures.render_figures(info)
    page = html.render_html(info, pngs)

    fig_dir = run_dir / "figures"
    for folder in (run_dir, fig_dir):
        atomic.remove_stale_temporaries(folder)
    for name, data in pngs.items():
        atomic.write_bytes(fig_dir / name, data)
    # figure names follow the declaration, so an earlier build's figure that has nothing to show now
    # (or whose front pair was renamed) is any PNG this build did not write
    for stale in sorted(fig_dir.glob("*.png")) if fig_dir.is_dir() else ():
        if stale.name not in pngs:
            stale.unlink()
    report = atomic.write_text(run_dir / "report.html", page)
    if console is not None:
        from reports.summary import print_summary

        print_summary(info, console, report_path=report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.build",
                                     description="Build RUN_DIR/report.html and RUN_DIR/figures/ from a search's results.")
    parser.add_argument("run_dir", help="the run directory (holds results.parquet), or a bucket run: "
                        "s3://BUCKET/PREFIX/RUN (fetched to this machine's copy; the report is pushed back)")
    args = parser.parse_args(argv)
    from rich.console import Console

    from trainables.storage import StorageError, fetch_run

    try:
        run_dir, mirror = fetch_run(args.run_dir)
        build_report(run_dir, console=Console())
        if mirror is not None:
            mirror.push("report.html", "figures")
    except (ReportInputError, StorageError) as exc:
        print(f"reports.build: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
