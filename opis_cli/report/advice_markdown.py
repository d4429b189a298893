"""Markdown (a PR comment) of the advice commands: ``opis margins`` and ``opis thresholds``.

Every label and name goes through :func:`opis_cli.report.report.md_escape` (no table break, no HTML, no
@mention); numbers use the tables' formats.
"""

from __future__ import annotations

import json

from opis_cli.report.report import md_escape


def json_key(label) -> str:
    """A label as a dict key that keeps 1 and "1" apart (JSON labels are ints or strings)."""
    return json.dumps(label, ensure_ascii=False)


def best_threshold_cells(c: dict) -> tuple[str, str]:
    """A class's own best threshold and its distance from the global one, as table cells."""
    if c.get("best_threshold") is None:
        return "never served", "-"
    bound = " (at search bound)" if c.get("best_at_search_bound") else ""
    return f"{c['best_threshold']:.4f}{bound}", f"{c['best_minus_global']:+.4f}"


def _warnings(lines: list[str], warnings: list[str]) -> None:
    if warnings:
        lines.append("")
    lines += [f"> **warning:** {md_escape(w)}" for w in warnings]


def margins_markdown(report) -> str:
    """``opis margins --format markdown``: margins at the targets, their meaning, warnings, and the
    classes owning the most hard pairs (``report``: a Report with a ``margins`` section)."""
    m = report.margins
    rec = m["recommended"]
    lines = ["### opis margins: TCM margins at your targets", "",
             "Not a validated recommendation: what margins are worth in training is measured in docs/tcm.md.", "",
             "| figure | value |", "|---|---:|",
             f"| m+ (margin_plus) | {rec['margin_plus']:.4f} |", f"| m- (margin_minus) | {rec['margin_minus']:.4f} |",
             f"| targets: pooled FAR / FRR | {rec['target_far']:.4g} / {rec['target_frr']:.4g} |",
             f"| pooled FRR at the FAR target | {rec['frr_at_margin_minus']:.4g} |",
             f"| hard positives | {rec['hard_positives']:,} ({rec['hard_positive_share']:.2%}) |",
             f"| hard negatives | {rec['hard_negatives']:,} ({rec['hard_negative_share']:.2%}) |",
             f"| TCM loss (l+ {m['lambda_plus']:g}, l- {m['lambda_minus']:g}) | {rec['tcm_loss']:.4f} |",
             f"| what-if OPIS / eps-OPIS (idealised) | {rec['what_if_opis']:.3g} / {rec['what_if_eps_opis']:.3g} |",
             f"| now: OPIS / eps-OPIS | {report.opis:.3g} / {report.eps_opis:.3g} |"]
    given = m.get("given")
    if given:
        lines.append(f"| given m+ {given['margin_plus']:g}, m- {given['margin_minus']:g}: hard positives / negatives "
                     f"| {given['hard_positive_share']:.2%} / {given['hard_negative_share']:.2%} |")
    lines += ["", *[f"- {md_escape(e)}" for e in rec["explanation"]]]
    _warnings(lines, list(rec["warnings"]) + [f"given margins: {w}" for w in (given or {}).get("warnings", [])])
    owners = sorted(m["classes"], key=lambda r: -(r["hard_positives"] + r["hard_negatives"]))[:10]
    lines += ["", "| class | hard pos | of its positives | hard neg | of its negatives |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {md_escape(r['label'])} | {r['hard_positives']:,} | {r['hard_positive_share']:.1%} | "
              f"{r['hard_negatives']:,} | {r['hard_negative_share']:.1%} |" for r in owners]
    return "\n".join(lines) + "\n"


def thresholds_markdown(report: dict, top: int = 10) -> str:
    """``opis thresholds --format markdown``: the global threshold, pooled rates, spread over
    classes, the worst classes, never-served classes and what was held back."""
    th, pooled, spread = report["threshold"], report["pooled"], report["spread"]
    how = {"given": "given", "dev": "chosen on the dev set", "input": "chosen on this set"}[th["chosen_on"]]
    target = f" (pooled FAR <= {th['target_far']:g}; {th['far_on_chosen_set']:.4g} there)" if "target_far" in th else ""
    lines = ["### opis thresholds: one global threshold", "", "| figure | value |", "|---|---:|",
             f"| global threshold | {th['value']:.4f} {how}{target} |",
             f"| pooled TAR / FAR | {pooled['tar']:.4f} / {pooled['far']:.4g} |"]
    for name, key in (("class FAR min / median / max", "far"), ("class FRR min / median / max", "frr"),
                      ("class utility min / median / max", "utility"),
                      ("own best threshold - global (served classes)", "best_minus_global")):
        s = spread[key]
        lines.append(f"| {name} | " + ("-" if s["min"] is None else f"{s['min']:.4g} / {s['median']:.4g} / "
                                                                     f"{s['max']:.4g}") + " |")
    held = report.get("held_back") or {}
    lines.append(f"| held back from the worst lists | {held.get('classes', 0)} classes under "
                 f"{held.get('min_class_size', 2)} members |")
    rows = {json_key(c["label"]): c for c in report["classes"]}
    lines += ["", f"Worst classes at the global threshold (lowest utility, top {top}):", "",
              "| label | size | FAR | FRR | utility | own best t | best - global |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for label in report["worst_by_utility"][:top]:
        c = rows[json_key(label)]
        best, delta = best_threshold_cells(c)
        lines.append(f"| {md_escape(label)} | {c['size']:,} | {c['far']:.4g} | {c['frr']:.4f} | {c['utility']:.4f} | "
                     f"{best} | {delta} |")
    never = report.get("never_served") or []
    if never:
        shown = ", ".join(md_escape(v) for v in never[:top]) + (f", ... ({len(never)} in all)" if len(never) > top
                                                                else "")
        lines += ["", f"**Never served** (utility 0 at every threshold; not in the worst lists): {shown}"]
    return "\n".join(lines) + "\n"
