"""``opis plot``: draw saved runs (matplotlib, imported only by opis_cli.report.plot*)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from opis_cli.cli.common import _input_files, _stderr, exit_on_errors
from opis_cli.cli.options import PlotKind
from opis_cli.errors import OpisError

EPILOG = (
    "Examples:\n\n"
    "  opis plot --out curves.png                              (the last run)\n\n"
    "  opis plot .opis/runs/base .opis/runs/tcm --kind compare --out before_after.svg\n\n"
    "  opis plot runs/*/ --kind pareto --out pareto.pdf\n\n"
    "  opis plot --kind distributions --out dist.png --dpi 200\n\n"
    "  opis plot --kind det --out det.svg                      (a run evaluated with --eer)"
)

RunsArg = Annotated[Optional[List[str]], typer.Argument(
    metavar="[RUN_OR_REPORT]...", help="Run directories or report.json files (default: the last run, OUT_DIR/latest).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Image to write: .png, .svg or .pdf.")]
KindOpt = Annotated[PlotKind, typer.Option(help="curves: per-class utility; compare: runs side by side; "
                                                "pareto: OPIS vs 1 - Recall@1; distributions: pair distances; "
                                                "roc / det: full-span ROC or DET curves (runs evaluated with --eer); "
                                                "operating-points: class FAR vs FRR (an opis thresholds report).")]
DpiOpt = Annotated[int, typer.Option(help="Resolution of PNG output (dots per inch).")]
TitleOpt = Annotated[Optional[str], typer.Option(help="Figure title (default: describes the figure).")]
OutDirOpt = Annotated[Path, typer.Option("--out-dir", help="Where runs are saved (for the default run).")]


def plot(
    runs: RunsArg = None,
    out: OutOpt = ...,
    kind: KindOpt = PlotKind.curves,
    dpi: DpiOpt = 150,
    title: TitleOpt = None,
    out_dir: OutDirOpt = Path(".opis"),
) -> None:
    """Draw a saved run (or several): **per-class utility curves**, a comparison, an
    accuracy-vs-consistency plot, or pair-distance distributions."""
    with exit_on_errors():
        from opis_cli.report.runs import check_output_path

        check_output_path(out, _input_files(*(runs or [out_dir / "latest"])), option="--out")
        if kind is PlotKind.operating_points:
            from opis_cli.report.plot import load_thresholds_report, plot_operating_points

            if not runs or len(runs) != 1:
                raise OpisError("--kind operating-points draws one report of opis thresholds --json")
            written = plot_operating_points(load_thresholds_report(runs[0]), out, dpi=dpi, title=title)
        else:
            from opis_cli.report.plot import plot_runs
            from opis_cli.report.runs import load_run

            loaded = [load_run(r, out_dir) for r in runs] if runs else [load_run(None, out_dir)]
            written = plot_runs(loaded, out, kind=kind.value, dpi=dpi, title=title)
    _stderr().print(f"wrote {written}", style="dim")
