"""Several runs side by side, each later run's change against the first with its interval.

``opis compare REF RUN...``: the figures of every run, how each run's range was set (its own
distance range at the same FAR bounds, or one pinned range), the pooled FAR its range covers,
and for every run after the first the change of OPIS, eps-OPIS and Recall@k against the first
with a 95% interval:

* ``paired``: both runs on the same evaluation set with per-class curves (run directories): the
  percentile interval of a paired class bootstrap (opis_cli.statistics.bootstrap.paired_class_bootstrap);
* ``unpaired``: otherwise, when both reports carry a bootstrap section: delta +- 1.96
  sqrt(se_a^2 + se_b^2), which ignores what the two runs share and is wider;
* no interval when neither applies.

A run that cannot be compared like with like against the first (opis_cli.verdicts.comparability) gets
no change column and a warning line; ``strict`` turns any warning into a refusal.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from opis_cli.verdicts.comparability import calibration_text, compare_reports
from opis_cli.errors import InputError

Z95 = 1.959963984540054


@dataclass
class CompareResult:
    """Figures of every run and the changes of runs[1:] against runs[0]."""

    names: list[str]
    reports: list[dict]
    deltas: dict[str, dict] = field(default_factory=dict)  # run name -> figure -> {delta, interval, method}
    warnings: list[str] = field(default_factory=list)

    @property
    def ks(self) -> list[str]:
        return sorted({k for r in self.reports for k in r["metrics"].get("recall_at_k", {})}, key=int)

    @property
    def optional(self) -> list[tuple[str, str, None]]:
        """The figures of --retrieval and --eer that any of the runs has (rows; '-' where absent)."""
        return [(label, key, None) for label, key in OPTIONAL_FIGURES
                if any(_metric(r, key) is not None for r in self.reports)]

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the side-by-side table."""
        header = ["", *self.names]
        figures = [("OPIS", "opis", None), ("eps-OPIS", "eps_opis", None),
                   *[(f"Recall@{k}", "recall", k) for k in self.ks], *self.optional]
        rows = []
        for label, key, k in figures:
            rows.append([label, *[_cell(r, key, k) for r in self.reports]])
        for label, key, k in figures:
            cells = ["-"] + [_delta_cell(self.deltas.get(name, {}).get(_delta_key(key, k))) for name in self.names[1:]]
            rows.append([f"{label} change vs {self.names[0]}", *cells])
        rows += [
            ["calibration", *[calibration_text(r) for r in self.reports]],
            ["pooled FAR at lo..hi", *[_far_text(r) for r in self.reports]],
            ["embeddings", *[f"{r['input']['n']:,} x {r['input']['d']}" for r in self.reports]],
            ["classes used", *[f"{r['input']['classes_used']:,}" for r in self.reports]],
            ["engine", *[r.get("engine", {}).get("name", "-") for r in self.reports]],
        ]
        return header, rows

    def to_markdown(self) -> str:
        from opis_cli.report.report import md_table

        return md_table(*self.table(), self.warnings)

    def to_dict(self) -> dict:
        runs = {}
        for name, r in zip(self.names, self.reports):
            runs[name] = {"metrics": r["metrics"], "calibration": r["calibration"], "input": r["input"],
                          "engine": r.get("engine", {}),
                          **({"bootstrap": r["bootstrap"]} if r.get("bootstrap") else {}),
                          **({"change": self.deltas[name]} if name in self.deltas else {})}
        return {"reference": self.names[0], "runs": runs, "warnings": list(self.warnings)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"


def _delta_key(key: str, k: str | None) -> str:
    return f"recall_at_k.{k}" if k is not None else key


#: (row label, key) of the figures a run has only with --retrieval or --eer; compared where both
#: runs have them (a plain difference: the class bootstrap does not resample them).
OPTIONAL_FIGURES = (("MAP@R", "map_at_r"), ("R-precision", "r_precision"), ("EER (pooled)", "eer"))


def _metric(r: dict, key: str) -> float | None:
    value = r["metrics"].get(key)
    return value.get("eer") if isinstance(value, dict) else value


def _cell(r: dict, key: str, k: str | None) -> str:
    value = r["metrics"].get("recall_at_k", {}).get(k) if k is not None else _metric(r, key)
    if value is None:
        return "-"
    text = f"{value:.4g}"
    boot = r.get("bootstrap") or {}
    entry = boot.get("recall_at_k", {}).get(k) if k is not None else boot.get(key)
    if entry:
        text += f" [{entry['interval'][0]:.4g}, {entry['interval'][1]:.4g}]"
    return text


def _delta_cell(d: dict | None) -> str:
    if d is None:
        return "-"
    text = f"{d['delta']:+.4g}"
    if d.get("interval"):
        text += f" [{d['interval'][0]:+.4g}, {d['interval'][1]:+.4g}] {d['method']}"
    return text


def _far_text(r: dict) -> str:
    cal = r["calibration"]
    if "far_at_lo" not in cal:
        return "-"
    return f"{cal['far_at_lo']:.3g}..{cal['far_at_hi']:.3g}"


def class_recall(report: dict) -> tuple | None:
    """(queries (C,), {k: hits (C,)}) from a report's ``classes`` (schema 2), else None."""
    import numpy as np

    rows = report["classes"]
    if not rows or "recall_hits" not in rows[0]:
        return None
    try:
        queries = np.array([r["queries"] for r in rows], np.int64)
        ks = sorted(int(k) for k in rows[0]["recall_hits"])
        hits = {k: np.array([r["recall_hits"][str(k)] for r in rows], np.int64) for k in ks}
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"per-class Recall@k counts in the report are damaged: {exc}") from None
    return queries, hits


def paired_deltas(baseline, current) -> dict | None:
    """Paired class-bootstrap errors of current - baseline (opis_cli.statistics.bootstrap), or None when a
    run has no per-class curves (a bare report.json) or its classes are not the other's.
    Replicates and seed: the current report's bootstrap settings, else 1,000 and 0."""
    from opis_cli.statistics.bootstrap import paired_class_bootstrap

    if baseline.utility is None or current.utility is None or baseline.labels != current.labels:
        return None
    boot = current.report.get("bootstrap") or {}
    cfg = current.report["config"]
    return paired_class_bootstrap(
        (baseline.utility, baseline.grid), (current.utility, current.grid), epsilon=cfg["epsilon"],
        contrast=cfg["eps_contrast"], baseline_recall=class_recall(baseline.report),
        current_recall=class_recall(current.report), replicates=int(boot.get("replicates", 1000)),
        seed=int(boot.get("seed", 0)))


def _deltas(ref, run) -> dict:
    """Changes of ``run`` against ``ref`` for every shared figure, with a paired or unpaired interval."""
    paired = paired_deltas(ref, run) or {}
    out = {}
    shared = sorted(set(ref.report["metrics"].get("recall_at_k", {})) & set(run.report["metrics"].get(
        "recall_at_k", {})), key=int)
    for key, k in [("opis", None), ("eps_opis", None), *[("recall", k) for k in shared]]:
        a = ref.report["metrics"]["recall_at_k"][k] if k else ref.report["metrics"][key]
        b = run.report["metrics"]["recall_at_k"][k] if k else run.report["metrics"][key]
        entry = {"delta": b - a, "interval": None, "method": None}
        boot_entry = paired.get("recall_at_k", {}).get(k) if k else paired.get(key)
        if boot_entry:
            entry.update(interval=list(boot_entry["interval"]), method="paired")
        else:
            ses = [bootstrap_se(r.report, key, k) for r in (ref, run)]
            if None not in ses:
                half = Z95 * math.hypot(*ses)
                entry.update(interval=[b - a - half, b - a + half], method="unpaired")
        out[_delta_key(key, k)] = entry
    for _, key in OPTIONAL_FIGURES:
        a, b = _metric(ref.report, key), _metric(run.report, key)
        if a is not None and b is not None:
            out[key] = {"delta": b - a, "interval": None, "method": None}
    return out


def bootstrap_se(report: dict, key: str, k: str | None = None) -> float | None:
    """The class-bootstrap se of a report's figure (``key``, or Recall@``k``), None without one."""
    boot = report.get("bootstrap") or {}
    entry = boot.get("recall_at_k", {}).get(k) if k is not None else boot.get(key)
    return None if not entry else float(entry["se"])


def compare_runs(runs: list, *, strict: bool = False) -> CompareResult:
    """Compare :class:`~opis_cli.report.runs.SavedRun` objects: runs[1:] against runs[0] (module docstring).
    ``strict``: InputError instead of any warning."""
    if len(runs) < 2:
        raise InputError("compare needs two or more runs")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise InputError(f"two runs share the name {next(n for n in names if names.count(n) > 1)!r}: compare "
                         "distinct runs")
    result = CompareResult(names=names, reports=[r.report for r in runs])
    ref = runs[0]
    for run in runs[1:]:
        comp = compare_reports(ref.report, run.report, names=(ref.name, run.name), allow_approximate=True)
        problems = comp.refusals + comp.mismatches
        if problems:
            result.warnings.append(f"{run.name} is not comparable with {ref.name}: " + "; ".join(problems))
            continue
        result.warnings += comp.warnings
        if comp.approximate:
            result.warnings.append(f"{run.name} vs {ref.name}: approximate figures; the changes' intervals do not "
                                   "include the approximation error (approximation.errors)")
        result.deltas[run.name] = _deltas(ref, run)
    if strict and result.warnings:
        raise InputError(result.warnings[0] + " (refused under --strict)")
    return result
