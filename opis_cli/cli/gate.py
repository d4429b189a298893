"""``opis gate`` (pass or fail a CI job) and ``opis compare`` (runs side by side, no verdict)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from opis_cli.cli.common import EXIT_GATE_FAILED, _stderr, exit_on_errors
from opis_cli.cli.options import Mismatch, OutputFormat, _gate_options
from opis_cli.errors import OpisError

GATE_EPILOG = (
    "Examples:\n\n"
    "  opis gate --baseline baseline/report.json --max-opis-increase 10%        (the last run)\n\n"
    "  opis gate .opis/runs/new --baseline .opis/runs/released --max-opis-increase 0.002 "
    "--max-recall-drop 0.5% --significance 0.95\n\n"
    "  opis gate --max-opis 0.02 --min-recall-at-k 1=0.9 --format markdown >> $GITHUB_STEP_SUMMARY\n\n"
    "Exit codes: 0 every check passed, 1 a check failed, 2 bad usage or unreadable/incomparable reports."
)

CurrentArg = Annotated[Optional[str], typer.Argument(
    metavar="[CURRENT]", help="Run directory or report.json to check (default: OUT_DIR/latest).")]
BaselineOpt = Annotated[Optional[str], typer.Option(metavar="RUN_OR_REPORT", help="The released model's run or report.")]
MaxOpisOpt = Annotated[Optional[float], typer.Option(help="Fail if OPIS exceeds this.")]
MaxEpsOpisOpt = Annotated[Optional[float], typer.Option(help="Fail if eps-OPIS exceeds this.")]
MinRecallOpt = Annotated[Optional[List[str]], typer.Option(
    metavar="K=VALUE", help="Fail if Recall@K is below VALUE (repeatable).")]
MaxOpisIncreaseOpt = Annotated[Optional[str], typer.Option(
    metavar="X|P%", help="Fail if OPIS rose by more than X, or by more than P% of the baseline.")]
MaxEpsOpisIncreaseOpt = Annotated[Optional[str], typer.Option(
    metavar="X|P%", help="Fail if eps-OPIS rose by more than X or P%.")]
MaxRecallDropOpt = Annotated[Optional[str], typer.Option(
    metavar="X|P%", help="Fail if any shared Recall@k fell by more than X or P%.")]
SignificanceOpt = Annotated[Optional[float], typer.Option(
    help="Fail only when the excess is beyond the class-bootstrap uncertainty at this one-sided level "
         "(e.g. 0.95); both reports need --bootstrap.")]
OnMismatchOpt = Annotated[Mismatch, typer.Option(
    help="Baseline and current differ in calibration, metric, beta, epsilon or thresholds: "
         "refuse (exit 2) or warn. Another evaluation set is always refused.")]
GateStrictOpt = Annotated[bool, typer.Option(
    "--strict", help="Refuse (exit 2) a pinned-range comparison whose pooled FAR at lo or hi differs more than "
                     "2x between the runs (different operating points), instead of warning.")]
AllowApproximateOpt = Annotated[bool, typer.Option(
    "--allow-approximate", help="Compare approximate reports (--index ivf|hnsw), each figure judged at the "
                                "unfavourable end of its 95% interval.")]
GateFormatOpt = Annotated[OutputFormat, typer.Option("--format", help="table, markdown (PR comment) or json.")]
GateOutDirOpt = Annotated[Path, typer.Option(help="Where runs are saved (for the default CURRENT).")]


def gate(
    current: CurrentArg = None,
    baseline: BaselineOpt = None,
    max_opis: MaxOpisOpt = None,
    max_eps_opis: MaxEpsOpisOpt = None,
    min_recall_at_k: MinRecallOpt = None,
    max_opis_increase: MaxOpisIncreaseOpt = None,
    max_eps_opis_increase: MaxEpsOpisIncreaseOpt = None,
    max_recall_drop: MaxRecallDropOpt = None,
    significance: SignificanceOpt = None,
    on_mismatch: OnMismatchOpt = Mismatch.refuse,
    strict: GateStrictOpt = False,
    allow_approximate: AllowApproximateOpt = False,
    fmt: GateFormatOpt = OutputFormat.table,
    out_dir: GateOutDirOpt = Path(".opis"),
) -> None:
    """Fail a CI job (exit 1) when a model is less threshold-consistent than allowed."""
    with exit_on_errors():
        from opis_cli.verdicts.gate import run_gate
        from opis_cli.report.runs import load_run

        options = _gate_options(max_opis, max_eps_opis, min_recall_at_k, max_opis_increase,
                                max_eps_opis_increase, max_recall_drop, significance, on_mismatch, strict,
                                allow_approximate, have_baseline=baseline is not None, required=True)
        cur = load_run(current, out_dir)
        base = load_run(baseline, out_dir) if baseline is not None else None
        result = run_gate(cur, base, options)
    _print_gate(result, fmt)
    if not result.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


def _print_gate(result, fmt: OutputFormat, to_stderr: bool = False) -> None:
    """A gate result in ``fmt``, on stdout (or stderr when stdout carries a JSON report)."""
    if fmt is OutputFormat.json:
        sys.stdout.write(result.to_json())
        return
    if fmt is OutputFormat.markdown:
        (sys.stderr if to_stderr else sys.stdout).write(result.to_markdown())
        return
    from rich.console import Console

    from opis_cli.cli.render import gate_table

    console = _stderr() if to_stderr else Console()
    console.print(gate_table(result))
    _print_warnings(console, result.warnings)


def _print_warnings(console, warnings: list[str]) -> None:
    from opis_cli.cli.render import escape

    for w in warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)


COMPARE_EPILOG = (
    "Examples:\n\n"
    "  opis compare .opis/runs/released .opis/runs/candidate      (both with the same --calib-far)\n\n"
    "  opis compare runs/*/ --format markdown >> $GITHUB_STEP_SUMMARY\n\n"
    "  opis compare runs/*-s*/ --group-by '^(.+)-s\\d+$'     (arms x seeds: mean +- sd, paired changes)\n\n"
    "The first run is the reference: every other run's change is shown with a 95% interval (paired when "
    "both are run directories on the same evaluation set)."
)

RunsArg = Annotated[List[str], typer.Argument(metavar="RUN_OR_REPORT...", help="Two or more runs or reports.")]
CompareFormatOpt = Annotated[OutputFormat, typer.Option("--format", help="table, markdown or json.")]
CompareStrictOpt = Annotated[bool, typer.Option(
    "--strict", help="Refuse (exit 2) instead of warning when runs are not comparable like with like.")]
GroupByOpt = Annotated[Optional[str], typer.Option(
    metavar="REGEX", help="Group runs by name: the regex's first capture group is the group (arm), the rest of "
                          "the name pairs runs across groups (seed). Shows mean +- sd per group and each "
                          "group's change against the first.", rich_help_panel="Groups")]
GroupFieldOpt = Annotated[Optional[str], typer.Option(
    metavar="PATH", help="Group runs by a report field instead (dotted, e.g. config.beta).", rich_help_panel="Groups")]
PairByOpt = Annotated[Optional[str], typer.Option(
    metavar="REGEX", help="With --group-field: the regex's first capture group pairs runs across groups.",
    rich_help_panel="Groups")]
CompareOutDirOpt = Annotated[Path, typer.Option(help="Where runs are saved.")]


def compare(
    runs: RunsArg,
    fmt: CompareFormatOpt = OutputFormat.table,
    strict: CompareStrictOpt = False,
    group_by: GroupByOpt = None,
    group_field: GroupFieldOpt = None,
    pair_by: PairByOpt = None,
    out_dir: CompareOutDirOpt = Path(".opis"),
) -> None:
    """Show runs side by side with each run's change against the first (no pass/fail), or grouped into arms."""
    with exit_on_errors():
        from opis_cli.verdicts.compare import compare_runs
        from opis_cli.report.runs import load_run

        if len(runs) < 2:
            raise OpisError("compare needs two or more runs")
        loaded = [load_run(r, out_dir) for r in runs]
        if group_by is not None or group_field is not None or pair_by is not None:
            from opis_cli.verdicts.compare_groups import group_runs

            if pair_by is not None and group_field is None:
                raise OpisError("--pair-by goes with --group-field (--group-by pairs by the rest of the name)")
            result = group_runs(loaded, pattern=group_by, field=group_field, pair_by=pair_by)
            if strict and result.warnings:
                raise OpisError(result.warnings[0] + " (refused under --strict)")
        else:
            result = compare_runs(loaded, strict=strict)
    if fmt is OutputFormat.json:
        sys.stdout.write(result.to_json())
    elif fmt is OutputFormat.markdown:
        sys.stdout.write(result.to_markdown())
    else:
        from rich.console import Console

        from opis_cli.cli.render import compare_rich

        console = Console()
        console.print(compare_rich(*result.table()))
        _print_warnings(console, result.warnings)
