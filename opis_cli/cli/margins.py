"""``opis margins``: TCM margins m+ and m- at pooled-rate targets, and what they mean."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from opis_cli.cli.common import _progress, exit_on_errors
from opis_cli.cli.options import (
    MEMORY_BUDGET_DEFAULT,
    EmbeddingColOpt,
    EpsContrast,
    EpsilonOpt,
    GridOpt,
    InputArg,
    LabelColOpt,
    LabelsOpt,
    MarginsFormat,
    MemoryBudgetOpt,
    NoSaveOpt,
    ReferenceLabelsOpt,
    ReferenceOpt,
    RunsOutDirOpt,
    ThreadsOpt,
    _range_options,
)

EPILOG = (
    "Examples:\n\n"
    "  opis margins embeddings.parquet                        (targets from the calibration range)\n\n"
    "  opis margins emb.parquet --target-far 0.01 --target-frr 0.05 --format pml\n\n"
    "  opis margins emb.parquet --margin-plus 0.9 --margin-minus 0.5     (assess given margins)\n\n"
    "Then: opis plot --kind distributions --out dist.png marks the margins. Run it on the TRAINING classes "
    "embedded by the current model; what margins are worth in training: docs/tcm.md."
)

CalibOpt = Annotated[Optional[str], typer.Option(metavar="LO:HI", rich_help_panel="Calibration",
                                                 help="Calibration range in cosine distance.")]
CalibFarOpt = Annotated[Optional[str], typer.Option(metavar="LO:HI", rich_help_panel="Calibration",
                                                    help="Range from pooled FAR bounds (default 0.001:0.1).")]
BetaOpt = Annotated[float, typer.Option(help="Utility weight (as evaluate).", rich_help_panel="Figures")]
EpsContrastOpt = Annotated[EpsContrast, typer.Option(help="Contrast the worst classes with the rest or the best.",
                                                     rich_help_panel="Figures")]
TargetFarOpt = Annotated[Optional[float], typer.Option(
    help="Pooled FAR that fixes m- (default: the FAR at the range's upper end).", rich_help_panel="Margins")]
TargetFrrOpt = Annotated[Optional[float], typer.Option(
    help="Pooled FRR that fixes m+ (default: the FRR at the range's lower end).", rich_help_panel="Margins")]
MarginPlusOpt = Annotated[Optional[float], typer.Option(help="Assess this m+ too (with --margin-minus).",
                                                        rich_help_panel="Margins")]
MarginMinusOpt = Annotated[Optional[float], typer.Option(help="Assess this m- too (with --margin-plus).",
                                                         rich_help_panel="Margins")]
LambdaPlusOpt = Annotated[float, typer.Option(help="TCM weight of the positive term.", rich_help_panel="Margins")]
LambdaMinusOpt = Annotated[float, typer.Option(help="TCM weight of the negative term.", rich_help_panel="Margins")]
FormatOpt = Annotated[MarginsFormat, typer.Option(
    "--format", help="table, json (the report), markdown (PR comment) or pml (a ThresholdConsistentMarginLoss line).",
    rich_help_panel="Output")]
NameOpt = Annotated[Optional[str], typer.Option(help="Run name.", rich_help_panel="Output")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.", rich_help_panel="Output")]


def margins(
    input: InputArg,
    labels: LabelsOpt = None,
    embedding_col: EmbeddingColOpt = None,
    label_col: LabelColOpt = None,
    reference: ReferenceOpt = None,
    reference_labels: ReferenceLabelsOpt = None,
    calib: CalibOpt = None,
    calib_far: CalibFarOpt = None,
    thresholds: GridOpt = 101,
    beta: BetaOpt = 1.0,
    epsilon: EpsilonOpt = 0.1,
    eps_contrast: EpsContrastOpt = EpsContrast.rest,
    target_far: TargetFarOpt = None,
    target_frr: TargetFrrOpt = None,
    margin_plus: MarginPlusOpt = None,
    margin_minus: MarginMinusOpt = None,
    lambda_plus: LambdaPlusOpt = 1.0,
    lambda_minus: LambdaMinusOpt = 1.0,
    fmt: FormatOpt = MarginsFormat.table,
    out_dir: RunsOutDirOpt = Path(".opis"),
    name: NameOpt = None,
    no_save: NoSaveOpt = False,
    quiet: QuietOpt = False,
    memory_budget: MemoryBudgetOpt = MEMORY_BUDGET_DEFAULT,
    threads: ThreadsOpt = None,
) -> None:
    """TCM margins m+ and m- at pooled-rate targets: what they mean (rates, hard pairs, TCM loss), warnings."""
    progress = _progress(quiet)
    with exit_on_errors(progress) as state:
        from opis_cli.config import EvalConfig, parse_memory_size
        from opis_cli.pipeline.margins import margins_file
        from opis_cli.report.runs import check_out_dir
        from opis_cli.threads import check_threads

        if not no_save:
            check_out_dir(out_dir, name)
        config = EvalConfig(thresholds=thresholds, beta=beta, epsilon=epsilon, eps_contrast=eps_contrast.value,
                            **_range_options(calib, calib_far))
        check_threads(threads)
        report = margins_file(
            input, labels=labels, embedding_col=embedding_col, label_col=label_col, reference=reference,
            reference_labels=reference_labels, config=config,
            target_far=target_far, target_frr=target_frr, margin_plus=margin_plus, margin_minus=margin_minus,
            lambda_plus=lambda_plus, lambda_minus=lambda_minus, memory_budget=parse_memory_size(memory_budget),
            threads=threads, progress=progress,
        )
        progress.stop()
        if not no_save:
            from opis_cli.report.runs import save_run

            state.run_dir = save_run(report, out_dir, name, extra={"argv": sys.argv[1:]})
    _render(report, fmt, state.run_dir)


def _render(report, fmt: MarginsFormat, run_dir: Path | None) -> None:
    """The margins report in ``fmt`` on stdout (the table also names the saved run)."""
    from opis_cli.pipeline.margin_advice import pml_line

    if fmt is MarginsFormat.pml:
        sys.stdout.write(pml_line(report.margins) + "\n")
    elif fmt is MarginsFormat.json:
        sys.stdout.write(report.to_json())
    elif fmt is MarginsFormat.markdown:
        from opis_cli.report.advice_markdown import margins_markdown

        sys.stdout.write(margins_markdown(report))
    else:
        from rich.console import Console

        from opis_cli.cli.render import margins_tables

        console = Console()
        console.print(margins_tables(report))
        console.print(pml_line(report.margins), style="bold", soft_wrap=True)
        if run_dir is not None:
            console.print(f"saved {run_dir}", style="dim")
