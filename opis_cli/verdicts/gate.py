"""CI gates on saved reports: absolute limits, regressions against a baseline, comparability.

A gate compares a current report with limits and, optionally, a baseline report:

* absolute: OPIS <= max_opis, eps-OPIS <= max_eps_opis, Recall@k >= min_recall[k];
* relative: current - baseline <= the allowed increase of OPIS / eps-OPIS, baseline - current <=
  the allowed drop of Recall@k, each absolute (0.002) or relative to the baseline ("5%").

Reports must be comparable (opis_cli.verdicts.comparability): the same evaluation set, the same settings,
and the same FAR bounds (different models, matched operating points) or the same pinned range.
Every report read is checked first (opis_cli.report.report_checks): a figure outside its domain is
refused, never compared.

With ``significance`` (e.g. 0.95) a check fails only when it is broken by more than the
uncertainty: excess > z * se, z the one-sided normal quantile. For a relative check on the same
evaluation set, se is the standard error of the *difference* from a paired class bootstrap
(the same resampled classes in both runs, from their per-class curves: "paired"); otherwise
sqrt(se_baseline^2 + se_current^2) from the reports' own bootstrap sections ("unpaired").
Absolute checks use the current report's bootstrap se.

An approximate figure (``--index ivf|hnsw``) is an estimate with a 95% interval; it is judged at
the unfavourable end of that interval (the upper end for OPIS, the lower for Recall@k), and a
comparison involving an approximate report needs ``allow_approximate``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from opis_cli.verdicts.comparability import calibration_text, compare_reports
from opis_cli.verdicts.compare import bootstrap_se, paired_deltas
from opis_cli.errors import ConfigError, InputError


@dataclass(frozen=True)
class Limit:
    """An allowed change: ``value`` in metric units, or a share of the baseline (``relative``)."""

    value: float
    relative: bool = False

    def allowed(self, baseline: float) -> float:
        return self.value * abs(baseline) if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"


def parse_limit(text: str, option: str) -> Limit:
    """``"0.002"`` -> Limit(0.002); ``"5%"`` -> Limit(0.05, relative=True). Negative values refused."""
    s = str(text).strip()
    relative = s.endswith("%")
    try:
        value = float(s[:-1] if relative else s)
    except ValueError:
        raise ConfigError(f"{option} expects a number or a percentage like 5%, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{option} must be a non-negative number or percentage, got {text!r}")
    return Limit(value / 100.0 if relative else value, relative)


def parse_recall_limit(text: str, option: str = "--min-recall-at-k") -> tuple[int, float]:
    """``"1=0.9"`` -> (1, 0.9)."""
    k, sep, v = str(text).partition("=")
    try:
        kk, vv = int(k), float(v)
    except ValueError:
        kk, vv = 0, math.nan
    if not sep or kk < 1 or not 0.0 <= vv <= 1.0:
        raise ConfigError(f"{option} expects K=VALUE with K >= 1 and VALUE in [0, 1], like 1=0.9; got {text!r}")
    return kk, vv


@dataclass
class GateOptions:
    """Every limit a gate can check (None: not checked) and how strictly it compares."""

    max_opis: float | None = None
    max_eps_opis: float | None = None
    min_recall: dict[int, float] = field(default_factory=dict)
    max_opis_increase: Limit | None = None
    max_eps_opis_increase: Limit | None = None
    max_recall_drop: Limit | None = None
    significance: float | None = None
    on_mismatch: str = "refuse"  # or "warn"
    strict: bool = False  # operating points that differ at a pinned range: refuse instead of warn
    allow_approximate: bool = False

    def __post_init__(self) -> None:
        if self.on_mismatch not in ("refuse", "warn"):
            raise ConfigError(f"--on-mismatch must be refuse or warn, got {self.on_mismatch!r}")
        if self.significance is not None and not (math.isfinite(self.significance)
                                                  and 0.5 <= self.significance < 1.0):
            raise ConfigError(f"--significance must lie in [0.5, 1), got {self.significance:g}")
        for name in ("max_opis", "max_eps_opis"):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) or v < 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be a non-negative number, got {v:g}")

    @property
    def relative(self) -> bool:
        return any(x is not None for x in (self.max_opis_increase, self.max_eps_opis_increase, self.max_recall_drop))

    @property
    def absolute(self) -> bool:
        return self.max_opis is not None or self.max_eps_opis is not None or bool(self.min_recall)

    @property
    def any(self) -> bool:
        return self.relative or self.absolute


@dataclass
class Check:
    """One row of the gate's table. ``note`` says how the value was judged (the end of an
    approximate figure's interval, the significance tolerance)."""

    metric: str
    current: float
    baseline: float | None
    delta: float | None
    limit: str
    passed: bool
    note: str = ""


@dataclass
class GateResult:
    checks: list[Check]
    warnings: list[str]
    current_name: str
    baseline_name: str | None
    ranges: dict[str, str] = field(default_factory=dict)  # run name -> how its range was set
    significance: str | None = None  # "paired", "unpaired", "bootstrap" (absolute only) or None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "current": self.current_name, "baseline": self.baseline_name,
                "ranges": dict(self.ranges), "significance": self.significance,
                "warnings": list(self.warnings), "checks": [asdict(c) for c in self.checks]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    def to_markdown(self) -> str:
        from opis_cli.report.report import md_escape

        head = "passed" if self.passed else "**FAILED**"
        lines = [f"### opis gate: {head}", ""]
        if self.baseline_name:
            lines += [f"current {md_escape(self.current_name)} against baseline {md_escape(self.baseline_name)}", ""]
        if self.ranges:
            lines += ["calibration: " + "; ".join(f"{md_escape(n)}: {r}" for n, r in self.ranges.items()), ""]
        if self.significance:
            lines += [f"significance: {self.significance} class bootstrap", ""]
        lines += ["| check | baseline | current | delta | limit | result |", "|---|---:|---:|---:|---:|---|"]
        for c in self.checks:
            result = "pass" if c.passed else "**FAIL**"
            lines.append(f"| {c.metric} | {_fmt(c.baseline)} | {_fmt(c.current)} | {_fmt(c.delta, signed=True)} | "
                         f"{c.limit} | {result}{' (' + c.note + ')' if c.note else ''} |")
        if self.warnings:
            lines.append("")
        lines += [f"> **warning:** {md_escape(w)}" for w in self.warnings]
        return "\n".join(lines) + "\n"


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.4g}" if signed else f"{v:.4g}"


def _figure(report: dict, name: str, k: str | None = None) -> tuple[float, tuple[float, float] | None]:
    """A headline figure and, in an approximate report, its 95% interval (None when exact)."""
    value = report["metrics"]["recall_at_k"][k] if k is not None else report["metrics"][name]
    if report.get("engine", {}).get("name") != "approximate":
        return value, None
    errors = (report.get("approximation") or {}).get("errors", {})
    entry = errors.get("recall_at_k", {}).get(k) if k is not None else errors.get(name)
    if not entry or "interval" not in entry:
        label = f"Recall@{k}" if k is not None else name
        raise InputError(f"the approximate report gives no interval for {label}: re-evaluate it with this opis-cli "
                         "or with --index exact")
    lo, hi = entry["interval"]
    return value, (lo, hi)


def _combined_se(baseline: dict, current: dict, metric: str, k: str | None = None) -> float | None:
    a, b = bootstrap_se(baseline, metric, k), bootstrap_se(current, metric, k)
    if a is None or b is None:
        return None
    return math.sqrt(a * a + b * b)


def _as_run(run, name: str):
    from opis_cli.report.runs import SavedRun

    return run if isinstance(run, SavedRun) or run is None else SavedRun(name=name, report=run)


def _comparison_warnings(base, cur, options: GateOptions, names: tuple[str, str]):
    """Refuse what must not be compared; return the warnings and whether a paired test applies."""
    comp = compare_reports(base.report, cur.report, names=(f"baseline {names[0]}", f"current {names[1]}"),
                           allow_approximate=options.allow_approximate)
    if comp.refusals:
        raise InputError("reports are not comparable: " + "; ".join(comp.refusals))
    if comp.mismatches and options.on_mismatch == "refuse":
        raise InputError("reports are not comparable: " + "; ".join(comp.mismatches)
                         + " (--on-mismatch warn to gate anyway)")
    if comp.warnings and options.strict:
        raise InputError("; ".join(comp.warnings) + " (refused under --strict)")
    return comp.mismatches + comp.warnings, comp.same_evaluation_set


def run_gate(current, baseline, options: GateOptions, *, current_name: str | None = None,
             baseline_name: str | None = None) -> GateResult:
    """Evaluate every configured check of ``current`` (and against ``baseline``).

    ``current`` and ``baseline`` are :class:`~opis_cli.report.runs.SavedRun` (a run directory read
    back: report and per-class curves) or bare report dicts (then no paired test is possible).
    Raises InputError when the reports must not be compared (module docstring).
    """
    cur, base = _as_run(current, current_name or "current"), _as_run(baseline, baseline_name or "baseline")
    current_name, baseline_name = current_name or cur.name, baseline_name or (base.name if base else None)
    if not options.any:
        raise ConfigError("no checks given: pass --max-opis, --max-eps-opis, --min-recall-at-k, or a --baseline "
                          "with --max-opis-increase, --max-eps-opis-increase or --max-recall-drop")
    if options.relative and base is None:
        raise ConfigError("--max-opis-increase, --max-eps-opis-increase and --max-recall-drop need --baseline")
    c_rep, b_rep = cur.report, (base.report if base else None)
    warnings: list[str] = []
    ranges = {current_name: calibration_text(c_rep)}
    paired = None
    if base is not None:
        ranges = {baseline_name: calibration_text(b_rep), **ranges}
        warnings, same_set = _comparison_warnings(base, cur, options, (baseline_name, current_name))
        if options.significance is not None and options.relative and same_set:
            paired = paired_deltas(base, cur)
    z = None
    if options.significance is not None:
        from statistics import NormalDist

        z = NormalDist().inv_cdf(options.significance)
        needs = [("current", c_rep)] if options.absolute or (options.relative and paired is None) else []
        needs += [("baseline", b_rep)] if options.relative and paired is None else []
        for which, rep in needs:
            if not rep.get("bootstrap"):
                hint = (", or gate the run directories of two runs on the same evaluation set (paired test)"
                        if options.relative and paired is None else "")
                raise InputError(f"--significance needs class-bootstrap errors in the {which} report (evaluate it "
                                 f"with --bootstrap 1000){hint}")

    def decide(excess: float, se: float | None, how: str, approx_note: str) -> tuple[bool, str]:
        # excess > 0 means the limit is broken; with --significance only beyond z standard errors.
        notes = [approx_note] if approx_note else []
        if z is None:
            return excess <= 0, "; ".join(notes)
        margin = z * (se or 0.0)
        notes.append(f"{how} tolerance {margin:.3g} at {options.significance:g}")
        return excess <= margin, "; ".join(notes)

    checks: list[Check] = []
    b_metrics = (b_rep or {}).get("metrics", {})
    for key, label, limit in (("opis", "OPIS", options.max_opis), ("eps_opis", "eps-OPIS", options.max_eps_opis)):
        if limit is not None:
            value, interval = _figure(c_rep, key)
            judged = interval[1] if interval else value
            ok, note = decide(judged - limit, bootstrap_se(c_rep, key), "bootstrap",
                              f"approximate: judged at {judged:.4g}, the top of its interval" if interval else "")
            checks.append(Check(f"{label} <= max", value, b_metrics.get(key), None, f"{limit:g}", ok, note))
    for k, limit in sorted(options.min_recall.items()):
        if str(k) not in c_rep["metrics"].get("recall_at_k", {}):
            raise InputError(f"the current report has no Recall@{k} (evaluate with --k {k})")
        value, interval = _figure(c_rep, "recall", str(k))
        judged = interval[0] if interval else value
        ok, note = decide(limit - judged, bootstrap_se(c_rep, "recall", str(k)), "bootstrap",
                          f"approximate: judged at {judged:.4g}, the bottom of its interval" if interval else "")
        checks.append(Check(f"Recall@{k} >= min", value, b_metrics.get("recall_at_k", {}).get(str(k)), None,
                            f"{limit:g}", ok, note))
    if base is not None:
        checks += _relative_checks(c_rep, b_rep, options, paired, decide)
    significance = None
    if z is not None:
        significance = "paired" if paired is not None else ("unpaired" if options.relative else "bootstrap")
    return GateResult(checks=checks, warnings=warnings, current_name=current_name, baseline_name=baseline_name,
                      ranges=ranges, significance=significance)


def _relative_checks(c_rep: dict, b_rep: dict, options: GateOptions, paired: dict | None, decide) -> list[Check]:
    checks = []
    for key, label, limit in (("opis", "OPIS", options.max_opis_increase),
                              ("eps_opis", "eps-OPIS", options.max_eps_opis_increase)):
        if limit is None:
            continue
        (cv, ci), (bv, bi) = _figure(c_rep, key), _figure(b_rep, key)
        # An approximate figure is judged at its interval's unfavourable end: the current's top
        # against the baseline's bottom.
        judged = (ci[1] if ci else cv) - (bi[0] if bi else bv)
        se = paired[key]["se"] if paired is not None else _combined_se(b_rep, c_rep, key)
        ok, note = decide(judged - limit.allowed(bv), se, "paired" if paired is not None else "unpaired",
                          f"approximate: judged at {judged:+.4g}" if ci or bi else "")
        checks.append(Check(f"{label} increase", cv, bv, cv - bv, f"+{limit}", ok, note))
    if options.max_recall_drop is None:
        return checks
    ks = sorted(set(c_rep["metrics"].get("recall_at_k", {})) & set(b_rep["metrics"].get("recall_at_k", {})), key=int)
    if not ks:
        raise InputError("the reports share no Recall@k to compare")
    for k in ks:
        (cv, ci), (bv, bi) = _figure(c_rep, "recall", k), _figure(b_rep, "recall", k)
        judged_drop = (bi[1] if bi else bv) - (ci[0] if ci else cv)
        entry = (paired or {}).get("recall_at_k", {}).get(k)
        se = entry["se"] if entry else _combined_se(b_rep, c_rep, "recall", k)
        if paired is not None and se is None:
            raise InputError(f"--significance: a report has neither per-class Recall@{k} hits (schema 1) nor a "
                             "bootstrap section: re-evaluate it with this opis-cli")
        ok, note = decide(judged_drop - options.max_recall_drop.allowed(bv), se, "paired" if entry else "unpaired",
                          f"approximate: judged at a drop of {judged_drop:.4g}" if ci or bi else "")
        checks.append(Check(f"Recall@{k} drop", cv, bv, cv - bv, f"-{options.max_recall_drop}", ok, note))
    return checks
