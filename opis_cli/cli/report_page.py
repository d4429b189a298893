"""``opis report``: saved runs -> one self-contained HTML page (opis_cli.pages.html_report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from opis_cli.cli.common import _input_files, _stderr, exit_on_errors

EPILOG = (
    "Examples:\n\n"
    "  opis report --out report.html                                  (the last run)\n\n"
    "  opis report .opis/runs/base .opis/runs/tcm --out compare.html    (a comparison, then each run)\n\n"
    "The page has no external links: open it offline, attach it to a ticket or a pull request."
)

RunsArg = Annotated[Optional[List[str]], typer.Argument(
    metavar="[RUN]...", help="Run directories (default: the last run, OUT_DIR/latest); the first is the reference "
                             "of the comparison.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="The page to write (.html).")]
TitleOpt = Annotated[Optional[str], typer.Option(help="Page title (default: the run names).")]
OutDirOpt = Annotated[Path, typer.Option("--out-dir", help="Where runs are saved (for the default run).")]


def report(runs: RunsArg = None, out: OutOpt = ..., title: TitleOpt = None, out_dir: OutDirOpt = Path(".opis")) -> None:
    """One HTML page of saved runs: figures with intervals, plots, a sortable and filterable class table, and a
    comparison with deltas for several runs."""
    with exit_on_errors():
        from opis_cli.pages.html_report import write_report_page
        from opis_cli.report.runs import check_output_path, load_run

        check_output_path(out, _input_files(*(runs or [out_dir / "latest"])), option="--out")
        loaded = [load_run(r, out_dir) for r in runs] if runs else [load_run(None, out_dir)]
        written = write_report_page(loaded, out, title=title)
    _stderr().print(f"wrote {written}")
