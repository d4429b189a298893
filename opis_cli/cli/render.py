"""Terminal rendering of reports with rich (a leaf: only the CLI imports it)."""

from __future__ import annotations

from rich.console import Console, Group
from rich.markup import escape as _rich_escape
from rich.table import Table

from opis_cli.report.advice_markdown import best_threshold_cells, json_key
from opis_cli.report.report import Report


def escape(value) -> str:
    """Text from the data (labels, names, file names) as inert terminal text: control characters
    (an ESC that would clear the screen, a newline that would forge a line) shown as escapes, and
    rich markup ("[bold red]") shown literally."""
    text = str(value)
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return _rich_escape(text)


def report_tables(report: Report, worst: int = 10) -> Group:
    """The summary table and the worst-classes table of a report."""
    summary = Table(title="opis evaluate", show_header=False, title_justify="left", min_width=60)
    summary.add_column("figure", style="bold")
    summary.add_column("value", justify="right")
    for name, value in report.summary_rows():
        style = "bold cyan" if name.startswith(("OPIS", "eps-OPIS", "Recall")) else None
        summary.add_row(name, value, style=style)
    if report.input.get("path"):
        summary.add_row("input", escape(report.input["path"]))
    ref = report.input.get("reference")
    if ref is not None:
        summary.add_row("references", f"{escape(str(ref.get('path') or 'array'))}: {ref['n']:,} items; "
                                      f"{ref.get('queries_without_reference', 0):,} queries without a same-label one")
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
            table.add_row(escape(row["label"]), f"{row['size']:,}", f"{row['mean_utility']:.4f}",
                          f"{row['opis_contribution']:.3g}", f"{share:.1%}",
                          style="red" if row["in_worst_eps"] else None)
        parts.append(table)
    if report.groups is not None:
        parts.append(groups_table(report.groups, worst))
    if report.tar_at_far:
        parts.append(tar_at_far_table(report.tar_at_far))
    return Group(*parts)


def tar_at_far_table(section: dict) -> Table:
    """Per-class TAR at the global threshold of each pooled FAR: pooled, and the spread over classes."""
    table = Table(title="TAR at fixed pooled FAR (one global threshold per FAR)", title_justify="left")
    for col in ("FAR", "threshold", "pooled TAR", "class TAR min", "median", "max", "class FAR max"):
        table.add_column(col, justify="right")
    for far, e in section.items():
        tars = sorted(e["tar"])
        table.add_row(far, f"{e['threshold']:.4f}", f"{e['pooled_tar']:.4f}", f"{tars[0]:.4f}",
                      f"{tars[len(tars) // 2]:.4f}", f"{tars[-1]:.4f}", f"{max(e['far']):.4g}")
    return table


def groups_table(section: dict, top: int = 10) -> Table:
    """OPIS and eps-OPIS across groups, and the groups with the lowest mean utility."""
    eps = section["eps_opis"]
    title = (f"groups ({escape(section['column'])}): OPIS {section['opis']:.6g}, eps-OPIS "
             f"{'-' if eps is None else f'{eps:.6g}'} over {section['groups_used']} of {section['groups']} groups")
    table = Table(title=title, title_justify="left")
    for col in ("group", "positive pairs", "negative pairs", "mean utility", "OPIS contribution"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for row in sorted(section["rows"], key=lambda r: r["mean_utility"])[:max(top, 1)]:
        table.add_row(escape(row["group"]), f"{row['positive_pairs']:,}", f"{row['negative_pairs']:,}",
                      f"{row['mean_utility']:.4f}", f"{row['opis_contribution']:.3g}",
                      style="red" if row["in_worst_eps"] else None)
    table.caption = "; ".join(f"at {d['at']} ({d['threshold']:.4g}): {disparity_text(d)}"
                              for d in section.get("disparity", []))
    table.caption_justify = "left"
    return table


def disparity_text(d: dict) -> str:
    """One threshold's group disparity, escaped for rich (analyses.groups.disparity_text)."""
    from opis_cli.analyses.groups import disparity_text as plain

    return escape(plain(d))


def print_report(report: Report, console: Console, worst: int = 10) -> None:
    console.print(report_tables(report, worst))


def gate_table(result) -> Table:
    """The checks of a gate (opis_cli.verdicts.gate.GateResult) as a rich table."""
    title = "opis gate: " + ("[bold green]passed[/]" if result.passed else "[bold red]FAILED[/]")
    if result.baseline_name:
        title += f"  ({escape(result.current_name)} vs baseline {escape(result.baseline_name)})"
    caption = [f"{escape(name)}: {escape(text)}" for name, text in result.ranges.items()]
    if result.significance:
        caption.append(f"significance: {result.significance} class bootstrap")
    table = Table(title=title, title_justify="left", caption="\n".join(caption) or None, caption_justify="left")
    for name, justify in (("check", "left"), ("baseline", "right"), ("current", "right"), ("delta", "right"),
                          ("limit", "right"), ("result", "left")):
        table.add_column(name, justify=justify)
    for c in result.checks:
        fmt = (lambda v, signed=False: "-" if v is None else (f"{v:+.4g}" if signed else f"{v:.4g}"))
        verdict = "[green]pass[/]" if c.passed else "[bold red]FAIL[/]"
        table.add_row(c.metric, fmt(c.baseline), fmt(c.current), fmt(c.delta, True), c.limit,
                      verdict + (f" [dim]({escape(c.note)})[/]" if c.note else ""))
    return table


def compare_rich(header: list[str], rows: list[list[str]]) -> Table:
    table = Table(title="opis compare", title_justify="left")
    for i, name in enumerate(header):
        table.add_column(escape(name), justify="left" if i == 0 else "right", style="bold" if i == 0 else None)
    for row in rows:
        table.add_row(*map(escape, row))
    return table


def margins_tables(report, top: int = 10) -> Group:
    """The recommendation, the candidate table and the classes owning the most hard pairs."""
    m = report.margins
    rec = m["recommended"]
    parts = []
    head = Table(title="opis margins: TCM margins at your targets (not a validated recommendation: docs/tcm.md)",
                 show_header=False, title_justify="left", min_width=60)
    head.add_column("figure", style="bold")
    head.add_column("value", justify="right")
    rows = [("m+ (margin_plus)", f"{rec['margin_plus']:.4f}"), ("m- (margin_minus)", f"{rec['margin_minus']:.4f}"),
            ("targets: pooled FAR / FRR", f"{rec['target_far']:.4g} / {rec['target_frr']:.4g}"),
            ("pooled FRR at the FAR target (threshold 1 - m-)", f"{rec['frr_at_margin_minus']:.4g}")]
    for name, r in (("recommended", rec), ("given", m.get("given"))):
        if r is None:
            continue
        suffix = "" if name == "recommended" else f" (given m+ {r['margin_plus']:g}, m- {r['margin_minus']:g})"
        rows += [
            (f"hard positives{suffix}", f"{r['hard_positives']:,} ({r['hard_positive_share']:.2%})"),
            (f"hard negatives{suffix}", f"{r['hard_negatives']:,} ({r['hard_negative_share']:.2%})"),
            (f"TCM loss (l+ {m['lambda_plus']:g}, l- {m['lambda_minus']:g}){suffix}",
             f"{r['tcm_loss']:.4f} = {r['tcm_positive_term']:.4f} + {r['tcm_negative_term']:.4f}"),
            (f"what-if OPIS / eps-OPIS (idealised){suffix}", f"{r['what_if_opis']:.3g} / {r['what_if_eps_opis']:.3g}"),
        ]
    rows.append(("now: OPIS / eps-OPIS", f"{report.opis:.3g} / {report.eps_opis:.3g}"))
    for name, value in rows:
        head.add_row(name, value)
    parts.append(head)
    for line in rec["explanation"]:
        parts.append(f"[dim]{escape(line)}[/]")
    warnings = list(rec["warnings"]) + [f"given margins: {w}" for w in (m.get("given") or {}).get("warnings", [])]
    for w in warnings:
        parts.append(f"[bold yellow]warning:[/] {escape(w)}")
    if not warnings:
        parts.append("[green]no warnings[/] (targets compatible, under half of each side hard, what-if below now)")
    from rich import box

    cand = Table(title="candidates (targets x 1/3, 1, 3)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    # Two-line headers and short numbers: the table fits an 80-column terminal (CI logs).
    for col in ("FAR", "FRR", "m+", "m-", "hard\npos", "hard\nneg", "TCM\nloss", "what-if\nOPIS", "what-if\nε-OPIS",
                "m+ < m-"):
        cand.add_column(col, justify="right", no_wrap=True)
    for c in m["candidates"]:
        style = "bold" if (c["margin_plus"], c["margin_minus"]) == (rec["margin_plus"], rec["margin_minus"]) else None
        cand.add_row(f"{c['target_far']:.3g}", f"{c['target_frr']:.3g}", f"{c['margin_plus']:.4f}",
                     f"{c['margin_minus']:.4f}", f"{c['hard_positive_share']:.1%}", f"{c['hard_negative_share']:.1%}",
                     f"{c['tcm_loss']:.4f}", f"{c['what_if_opis']:.2g}", f"{c['what_if_eps_opis']:.2g}",
                     "conflict" if c.get("conflict") else "", style=style)
    parts.append(cand)
    owners = sorted(m["classes"], key=lambda r: -(r["hard_positives"] + r["hard_negatives"]))[:top]
    own = Table(title=f"classes owning the most hard pairs (top {len(owners)})", title_justify="left")
    for col, j in (("label", "left"), ("hard pos", "right"), ("of its positives", "right"), ("hard neg", "right"),
                   ("of its negatives", "right")):
        own.add_column(col, justify=j)
    for r in owners:
        own.add_row(escape(str(r["label"])), f"{r['hard_positives']:,}", f"{r['hard_positive_share']:.1%}",
                    f"{r['hard_negatives']:,}", f"{r['hard_negative_share']:.1%}")
    parts.append(own)
    return Group(*parts)


def thresholds_tables(report: dict, top: int = 10) -> Group:
    """The deployment view (``opis thresholds``): the global threshold, pooled rates, the spread
    over classes, the worst classes, and per-class TAR at fixed FARs."""
    th, pooled, spread = report["threshold"], report["pooled"], report["spread"]
    head = Table(title="opis thresholds: one global threshold", title_justify="left", show_header=False)
    head.add_column(style="bold")
    head.add_column(justify="right")
    how = {"given": "given", "dev": "chosen on the dev set", "input": "chosen on this set"}[th["chosen_on"]]
    target = (f" (pooled FAR <= {th['target_far']:g}; {th['far_on_chosen_set']:.4g} there)"
              if "target_far" in th else "")
    head.add_row("global threshold", f"{th['value']:.4f}  {how}{target}")
    head.add_row("pooled TAR / FAR here", f"{pooled['tar']:.4f} / {pooled['far']:.4g}")
    for name, key in (("class FAR min / median / max", "far"), ("class FRR min / median / max", "frr"),
                      ("class utility min / median / max", "utility"),
                      ("own best threshold - global (served classes)", "best_minus_global")):
        s = spread[key]
        head.add_row(name, "-" if s["min"] is None else f"{s['min']:.4g} / {s['median']:.4g} / {s['max']:.4g}")
    search = report.get("search")
    if search:
        head.add_row("own best threshold searched over", f"[{search['lo']:g}, {search['hi']:g}], "
                                                         f"{search['thresholds']} thresholds")
    held = report.get("held_back") or {}
    if held.get("classes"):
        head.add_row("held back from the worst lists", f"{held['classes']} classes under {held['min_class_size']} "
                                                       "members (--min-class-size)")
    rows = {json_key(c["label"]): c for c in report["classes"]}
    worst = Table(title=f"worst classes at the global threshold (lowest utility, top {top})", title_justify="left")
    for col in ("label", "size", "FAR", "FRR", "utility", "own best t", "best - global"):
        worst.add_column(col, justify="left" if col == "label" else "right")
    for label in report["worst_by_utility"][:top]:
        c = rows[json_key(label)]
        best, delta = best_threshold_cells(c)
        worst.add_row(escape(str(label)), f"{c['size']:,}", f"{c['far']:.4g}", f"{c['frr']:.4f}",
                      f"{c['utility']:.4f}", best, delta)
    parts = [head, worst]
    never = report.get("never_served") or []
    if never:
        shown = ", ".join(escape(str(v)) for v in never[:top]) + (f", ... ({len(never)} in all)"
                                                                    if len(never) > top else "")
        parts.append(f"[bold yellow]never served[/] (utility 0 at every threshold; not in the worst lists): {shown}")
    if report["tar_at_far"]:
        parts.append(tar_at_far_table(report["tar_at_far"]))
    if report.get("groups"):
        sec = report["groups"]
        grp = Table(title=f"groups ({escape(sec['column'])}) at the global threshold, lowest utility first",
                    title_justify="left")
        for col in ("group", "FAR", "FRR", "utility"):
            grp.add_column(col, justify="left" if col == "group" else "right")
        for r in sorted(sec["rows"], key=lambda r: r["utility"])[:top]:
            grp.add_row(escape(r["group"]), f"{r['far']:.4g}", f"{r['frr']:.4f}", f"{r['utility']:.4f}")
        if sec.get("disparity"):
            grp.caption, grp.caption_justify = "disparity: " + disparity_text(sec["disparity"]), "left"
        parts.append(grp)
    return Group(*parts)
