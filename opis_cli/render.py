"""Terminal rendering of reports with rich (a leaf: only the CLI imports it)."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table

from .report import Report


def report_tables(report: Report, worst: int = 10) -> Group:
    """The summary table and the worst-classes table of a report."""
    summary = Table(title="opis evaluate", show_header=False, title_justify="left", min_width=60)
    summary.add_column("figure", style="bold")
    summary.add_column("value", justify="right")
    for name, value in report.summary_rows():
        style = "bold cyan" if name.startswith(("OPIS", "eps-OPIS", "Recall")) else None
        summary.add_row(name, value, style=style)
    if report.input.get("path"):
        summary.add_row("input", str(report.input["path"]))
    parts = [summary]
    if worst > 0:
        table = Table(title=f"worst classes (lowest mean utility; eps-worst set = {len(report.worst)})",
                      title_justify="left")
        table.add_column("label")
        table.add_column("size", justify="right")
        table.add_column("mean utility", justify="right")
        table.add_column("OPIS contribution", justify="right")
        table.add_column("share of OPIS", justify="right")
        for row in report.worst_classes(worst):
            share = row["opis_contribution"] / report.opis if report.opis > 0 else 0.0
            table.add_row(str(row["label"]), f"{row['size']:,}", f"{row['mean_utility']:.4f}",
                          f"{row['opis_contribution']:.3g}", f"{share:.1%}",
                          style="red" if row["in_worst_eps"] else None)
        parts.append(table)
    return Group(*parts)


def print_report(report: Report, console: Console, worst: int = 10) -> None:
    console.print(report_tables(report, worst))


def gate_table(result) -> Table:
    """The checks of a gate (opis_cli.gate.GateResult) as a rich table."""
    title = "opis gate: " + ("[bold green]passed[/]" if result.passed else "[bold red]FAILED[/]")
    if result.baseline_name:
        title += f"  ({result.current_name} vs baseline {result.baseline_name})"
    table = Table(title=title, title_justify="left")
    for name, justify in (("check", "left"), ("baseline", "right"), ("current", "right"), ("delta", "right"),
                          ("limit", "right"), ("result", "left")):
        table.add_column(name, justify=justify)
    for c in result.checks:
        fmt = (lambda v, signed=False: "-" if v is None else (f"{v:+.4g}" if signed else f"{v:.4g}"))
        verdict = "[green]pass[/]" if c.passed else "[bold red]FAIL[/]"
        table.add_row(c.metric, fmt(c.baseline), fmt(c.current), fmt(c.delta, True), c.limit,
                      verdict + (f" [dim]({c.note})[/]" if c.note else ""))
    return table


def compare_rich(header: list[str], rows: list[list[str]]) -> Table:
    table = Table(title="opis compare", title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right", style="bold" if i == 0 else None)
    for row in rows:
        table.add_row(*row)
    return table
