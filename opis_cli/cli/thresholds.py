"""``opis thresholds``: the deployment view at one global threshold."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from opis_cli.cli.common import _input_files, _progress, _stderr, exit_on_errors
from opis_cli.cli.options import (
    MEMORY_BUDGET_DEFAULT,
    EmbeddingColOpt,
    InputArg,
    JsonOpt,
    LabelColOpt,
    LabelsOpt,
    MemoryBudgetOpt,
    Metric,
    QuietOpt,
    ReferenceLabelsOpt,
    ReferenceOpt,
    ThreadsOpt,
    ViewFormat,
    WorstOpt,
    _far_list,
    _range_options,
)
from opis_cli.errors import OpisError

EPILOG = (
    "Examples:\n\n"
    "  opis thresholds test.parquet --target-far 0.001                 (threshold chosen on the same set)\n\n"
    "  opis thresholds test.parquet --dev dev.parquet --target-far 0.001    (does a dev threshold hold?)\n\n"
    "  opis thresholds test.parquet --threshold 0.42 --tar-at-far 1e-3,1e-2 --json op.json\n\n"
    "Then: opis plot op.json --kind operating-points --out op.png"
)

DevOpt = Annotated[Optional[Path], typer.Option(help="Development set on which to choose the threshold "
                                                     "(default: INPUT itself).", rich_help_panel="Threshold")]
TargetFarOpt = Annotated[Optional[float], typer.Option(
    help="Choose the largest threshold whose pooled FAR is at most this.", rich_help_panel="Threshold")]
ThresholdOpt = Annotated[Optional[float], typer.Option(help="Use this threshold (distance units).",
                                                       rich_help_panel="Threshold")]
TarAtFarOpt = Annotated[Optional[str], typer.Option(
    metavar="F1,F2,...", help="Also report every class's TAR at the global thresholds for these pooled FARs.",
    rich_help_panel="Threshold")]
DevLabelsOpt = Annotated[Optional[Path], typer.Option(help="Labels .npy for a .npy --dev file.",
                                                      rich_help_panel="Input")]
GroupColOpt = Annotated[Optional[str], typer.Option(
    help="Also every group's FAR, FRR and utility at the threshold (a column or .npz array: customers, "
         "regions).", rich_help_panel="Input")]
CalibOpt = Annotated[Optional[str], typer.Option(metavar="LO:HI", rich_help_panel="Calibration",
                                                 help="Range searched for each class's own best threshold.")]
CalibFarOpt = Annotated[Optional[str], typer.Option(metavar="LO:HI", rich_help_panel="Calibration",
                                                    help="That range from pooled FAR bounds (default 0.001:0.1).")]
GridOpt = Annotated[int, typer.Option("--thresholds", help="Grid size over the range.", rich_help_panel="Calibration")]
MetricOpt = Annotated[Metric, typer.Option(help="cosine or l2.", rich_help_panel="Distance")]
NoNormalizeOpt = Annotated[bool, typer.Option("--no-normalize", help="l2 on raw vectors.", rich_help_panel="Distance")]
BetaOpt = Annotated[float, typer.Option(help="Utility weight (as evaluate).", rich_help_panel="Distance")]
MinClassSizeOpt = Annotated[int, typer.Option(
    help="Keep classes with fewer members out of the worst lists (their rates move in whole pairs); the "
         "report says how many were held back.", rich_help_panel="Output")]
FormatOpt = Annotated[ViewFormat, typer.Option("--format", help="table, or markdown (PR comment).",
                                               rich_help_panel="Output")]


def thresholds(
    input: InputArg,
    dev: DevOpt = None,
    target_far: TargetFarOpt = None,
    threshold: ThresholdOpt = None,
    tar_at_far: TarAtFarOpt = None,
    labels: LabelsOpt = None,
    dev_labels: DevLabelsOpt = None,
    embedding_col: EmbeddingColOpt = None,
    label_col: LabelColOpt = None,
    group_col: GroupColOpt = None,
    reference: ReferenceOpt = None,
    reference_labels: ReferenceLabelsOpt = None,
    calib: CalibOpt = None,
    calib_far: CalibFarOpt = None,
    thresholds_: GridOpt = 101,
    metric: MetricOpt = Metric.cosine,
    no_normalize: NoNormalizeOpt = False,
    beta: BetaOpt = 1.0,
    worst: WorstOpt = 10,
    min_class_size: MinClassSizeOpt = 2,
    fmt: FormatOpt = ViewFormat.table,
    json_path: JsonOpt = None,
    quiet: QuietOpt = False,
    memory_budget: MemoryBudgetOpt = MEMORY_BUDGET_DEFAULT,
    threads: ThreadsOpt = None,
) -> None:
    """The deployment view: at one global threshold, every class's FAR, FRR and utility, and its own best threshold."""
    progress = _progress(quiet)
    with exit_on_errors(progress):
        from opis_cli.config import EvalConfig, parse_memory_size
        from opis_cli.pipeline.thresholds import thresholds_file
        from opis_cli.report.runs import atomic_write_text, check_output_path
        from opis_cli.threads import check_threads

        if fmt is ViewFormat.markdown and json_path == "-":
            raise OpisError("--format markdown and --json - both write to stdout: write the JSON to a file")
        check_output_path(json_path, _input_files(input, labels, dev, dev_labels, reference, reference_labels),
                          option="--json")
        config = EvalConfig(metric=metric.value, normalize=not no_normalize, thresholds=thresholds_, beta=beta,
                            **_range_options(calib, calib_far))
        fars = _far_list(tar_at_far)
        check_threads(threads)
        result = thresholds_file(input, labels=labels, dev=dev, dev_labels=dev_labels, embedding_col=embedding_col,
                                 label_col=label_col, group_col=group_col, reference=reference,
                                 reference_labels=reference_labels, config=config, target_far=target_far,
                                 threshold=threshold, tar_at_far=fars, worst=worst, min_class_size=min_class_size,
                                 memory_budget=parse_memory_size(memory_budget), threads=threads, progress=progress)
        progress.stop()
        report, text = result.to_dict(), result.to_json()
        if json_path is not None and json_path != "-":
            atomic_write_text(json_path, text)
    _render(report, text, fmt, json_path, quiet, worst)


def _render(report: dict, text: str, fmt: ViewFormat, json_path: str | None, quiet: bool, worst: int) -> None:
    """The JSON on stdout for ``--json -``, then the Markdown, or the tables (on stderr when stdout
    carries the JSON; none under --quiet)."""
    if json_path == "-":
        sys.stdout.write(text)
    if fmt is ViewFormat.markdown:
        from opis_cli.report.advice_markdown import thresholds_markdown

        sys.stdout.write(thresholds_markdown(report, worst))
        return
    if quiet:
        return
    from rich.console import Console

    from opis_cli.cli.render import thresholds_tables

    (_stderr() if json_path == "-" else Console()).print(thresholds_tables(report, worst))
