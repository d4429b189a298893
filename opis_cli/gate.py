"""CI gates on saved reports: absolute limits, regressions against a baseline, comparability.

A gate compares a current report with limits and, optionally, a baseline report:

* absolute: OPIS <= max_opis, eps-OPIS <= max_eps_opis, Recall@k >= min_recall[k];
* relative: current - baseline <= the allowed increase of OPIS / eps-OPIS, baseline - current <=
  the allowed drop of Recall@k, each absolute (0.002) or relative to the baseline ("5%").

With ``significance`` (e.g. 0.95) a check fails only when it is broken by more than the
uncertainty: value - limit > z * se, z the one-sided normal quantile, se the class-bootstrap
standard error of the current report (absolute checks) or sqrt(se_baseline^2 + se_current^2)
(relative checks). Both reports then need a bootstrap section (``opis evaluate --bootstrap``).

Reports are comparable when every setting that changes a figure's meaning agrees: metric,
normalisation, calibration range, thresholds, beta, epsilon, eps contrast, the class set and the
evaluation set (``input.labels_sha256``: label values and counts, so two models evaluated on the
same labelled items compare, and a report from another dataset is refused).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from .errors import ConfigError, InputError


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
    """Every limit a gate can check (None: not checked)."""

    max_opis: float | None = None
    max_eps_opis: float | None = None
    min_recall: dict[int, float] = field(default_factory=dict)
    max_opis_increase: Limit | None = None
    max_eps_opis_increase: Limit | None = None
    max_recall_drop: Limit | None = None
    significance: float | None = None
    on_mismatch: str = "refuse"  # or "warn"

    def __post_init__(self) -> None:
        if self.on_mismatch not in ("refuse", "warn"):
            raise ConfigError(f"--on-mismatch must be refuse or warn, got {self.on_mismatch!r}")
        if self.significance is not None and not 0.5 <= self.significance < 1.0:
            raise ConfigError(f"--significance must lie in [0.5, 1), got {self.significance:g}")
        for name in ("max_opis", "max_eps_opis"):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) or v < 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be a non-negative number, got {v:g}")

    @property
    def relative(self) -> bool:
        return any(x is not None for x in (self.max_opis_increase, self.max_eps_opis_increase, self.max_recall_drop))

    @property
    def any(self) -> bool:
        return self.relative or self.max_opis is not None or self.max_eps_opis is not None or bool(self.min_recall)


@dataclass
class Check:
    """One row of the gate's table."""

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

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "current": self.current_name, "baseline": self.baseline_name,
                "warnings": list(self.warnings), "checks": [asdict(c) for c in self.checks]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    def to_markdown(self) -> str:
        head = "passed" if self.passed else "**FAILED**"
        lines = [f"### opis gate: {head}", ""]
        if self.baseline_name:
            lines += [f"current `{self.current_name}` against baseline `{self.baseline_name}`", ""]
        lines += ["| check | baseline | current | delta | limit | result |", "|---|---:|---:|---:|---:|---|"]
        for c in self.checks:
            result = "pass" if c.passed else "**FAIL**"
            lines.append(f"| {c.metric} | {_fmt(c.baseline)} | {_fmt(c.current)} | {_fmt(c.delta, signed=True)} | "
                         f"{c.limit} | {result}{' (' + c.note + ')' if c.note else ''} |")
        lines += [f"> warning: {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.4g}" if signed else f"{v:.4g}"


def comparability_problems(baseline: dict, current: dict) -> list[str]:
    """What differs between two reports in a way that changes the meaning of a figure."""
    problems = []
    bc, cc = baseline.get("config", {}), current.get("config", {})
    for key in ("metric", "normalize", "beta", "epsilon", "eps_contrast"):
        if bc.get(key) != cc.get(key):
            problems.append(f"{key} differs: baseline {bc.get(key)!r}, current {cc.get(key)!r}")
    bcal, ccal = baseline.get("calibration", {}), current.get("calibration", {})
    if (bcal.get("lo"), bcal.get("hi")) != (ccal.get("lo"), ccal.get("hi")):
        hint = " (a FAR-derived range moves with the model: pin --calib LO:HI in CI)" if "far" in (
            bcal.get("mode"), ccal.get("mode")) else ""
        problems.append(f"calibration range differs: baseline [{bcal.get('lo')}, {bcal.get('hi')}], "
                        f"current [{ccal.get('lo')}, {ccal.get('hi')}]{hint}")
    if bcal.get("thresholds") != ccal.get("thresholds"):
        problems.append(f"thresholds differ: baseline {bcal.get('thresholds')}, current {ccal.get('thresholds')}")
    bl = [c.get("label") for c in baseline.get("classes", [])]
    cl = [c.get("label") for c in current.get("classes", [])]
    if bl != cl:
        only_b, only_c = set(map(str, bl)) - set(map(str, cl)), set(map(str, cl)) - set(map(str, bl))
        problems.append(f"class sets differ: {len(only_b)} only in the baseline, {len(only_c)} only in the "
                        f"current report ({len(bl)} vs {len(cl)} classes)")
    else:
        hb = baseline.get("input", {}).get("labels_sha256")
        hc = current.get("input", {}).get("labels_sha256")
        if hb and hc and hb != hc:  # same classes, other members: another evaluation set
            sizes_b = {str(c.get("label")): c.get("size") for c in baseline.get("classes", [])}
            changed = [label for label, size in ((str(c.get("label")), c.get("size"))
                                                 for c in current.get("classes", [])) if sizes_b.get(label) != size]
            nb, nc = baseline.get("input", {}).get("n"), current.get("input", {}).get("n")
            problems.append(f"evaluation sets differ (labels hash): {nb} vs {nc} items, {len(changed)} class "
                            f"size(s) differ{' (e.g. ' + ', '.join(changed[:3]) + ')' if changed else ''}")
    return problems


def _se(report: dict, metric: str, k: str | None = None) -> float | None:
    boot = report.get("bootstrap")
    if not boot:
        return None
    entry = boot.get("recall_at_k", {}).get(k) if k is not None else boot.get(metric)
    return None if entry is None else float(entry["se"])


def run_gate(current: dict, baseline: dict | None, options: GateOptions, *, current_name: str = "current",
             baseline_name: str | None = None) -> GateResult:
    """Evaluate every configured check of ``current`` (and against ``baseline``)."""
    if not options.any:
        raise ConfigError("no checks given: pass --max-opis, --max-eps-opis, --min-recall-at-k, or a --baseline "
                          "with --max-opis-increase, --max-eps-opis-increase or --max-recall-drop")
    if options.relative and baseline is None:
        raise ConfigError("--max-opis-increase, --max-eps-opis-increase and --max-recall-drop need --baseline")
    warnings: list[str] = []
    if baseline is not None:
        problems = comparability_problems(baseline, current)
        if problems and options.on_mismatch == "refuse":
            raise InputError("reports are not comparable: " + "; ".join(problems)
                             + " (--on-mismatch warn to gate anyway)")
        warnings += problems
    z = None
    if options.significance is not None:
        from statistics import NormalDist

        z = NormalDist().inv_cdf(options.significance)
        for name, rep in (("current", current), ("baseline", baseline)):
            if rep is not None and not rep.get("bootstrap"):
                raise InputError(f"--significance needs class-bootstrap errors in the {name} report "
                                 "(evaluate it with --bootstrap 1000)")

    cm, bm = current["metrics"], (baseline or {}).get("metrics", {})
    checks: list[Check] = []

    def decide(excess: float, se: float | None) -> tuple[bool, str]:
        # excess > 0 means the limit is broken; with --significance only beyond z standard errors.
        if z is None:
            return excess <= 0, ""
        margin = z * (se or 0.0)
        return excess <= margin, f"tolerance {margin:.3g} at {options.significance:g}"

    for key, label, limit in (("opis", "OPIS", options.max_opis), ("eps_opis", "eps-OPIS", options.max_eps_opis)):
        if limit is not None:
            ok, note = decide(cm[key] - limit, _se(current, key))
            checks.append(Check(f"{label} <= max", cm[key], bm.get(key), None, f"{limit:g}", ok, note))
    for k, limit in sorted(options.min_recall.items()):
        value = cm.get("recall_at_k", {}).get(str(k))
        if value is None:
            raise InputError(f"the current report has no Recall@{k} (evaluate with --k {k})")
        ok, note = decide(limit - value, _se(current, "recall", str(k)))
        checks.append(Check(f"Recall@{k} >= min", value, bm.get("recall_at_k", {}).get(str(k)), None,
                            f"{limit:g}", ok, note))
    if baseline is not None:
        for key, label, limit in (("opis", "OPIS", options.max_opis_increase),
                                  ("eps_opis", "eps-OPIS", options.max_eps_opis_increase)):
            if limit is None:
                continue
            delta = cm[key] - bm[key]
            ok, note = decide(delta - limit.allowed(bm[key]), _combined_se(baseline, current, key))
            checks.append(Check(f"{label} increase", cm[key], bm[key], delta, f"+{limit}", ok, note))
        if options.max_recall_drop is not None:
            ks = sorted(set(cm.get("recall_at_k", {})) & set(bm.get("recall_at_k", {})), key=int)
            if not ks:
                raise InputError("the reports share no Recall@k to compare")
            for k in ks:
                cur, base = cm["recall_at_k"][k], bm["recall_at_k"][k]
                drop = base - cur
                ok, note = decide(drop - options.max_recall_drop.allowed(base),
                                  _combined_se(baseline, current, "recall", k))
                checks.append(Check(f"Recall@{k} drop", cur, base, cur - base, f"-{options.max_recall_drop}",
                                    ok, note))
    return GateResult(checks=checks, warnings=warnings, current_name=current_name, baseline_name=baseline_name)


def _combined_se(baseline: dict, current: dict, metric: str, k: str | None = None) -> float | None:
    a, b = _se(baseline, metric, k), _se(current, metric, k)
    if a is None or b is None:
        return None
    return math.sqrt(a * a + b * b)


def compare_table(reports: list[tuple[str, dict]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a side-by-side table of several reports (no pass/fail)."""
    header = ["", *[name for name, _ in reports]]
    ks = sorted({k for _, r in reports for k in r["metrics"].get("recall_at_k", {})}, key=int)

    def cell(r: dict, value: float | None, boot_key: str | None = None, k: str | None = None) -> str:
        if value is None:
            return "-"
        text = f"{value:.4g}"
        boot = r.get("bootstrap") or {}
        entry = (boot.get("recall_at_k", {}).get(k) if k else boot.get(boot_key)) if boot_key else None
        if entry:
            text += f" [{entry['interval'][0]:.4g}, {entry['interval'][1]:.4g}]"
        return text

    rows = [
        ["OPIS", *[cell(r, r["metrics"]["opis"], "opis") for _, r in reports]],
        ["eps-OPIS", *[cell(r, r["metrics"]["eps_opis"], "eps_opis") for _, r in reports]],
        *[[f"Recall@{k}", *[cell(r, r["metrics"].get("recall_at_k", {}).get(k), "recall", k) for _, r in reports]]
          for k in ks],
        ["calibration range", *[f"[{r['calibration']['lo']:.4g}, {r['calibration']['hi']:.4g}]" for _, r in reports]],
        ["embeddings", *[f"{r['input']['n']:,} x {r['input']['d']}" for _, r in reports]],
        ["classes used", *[f"{r['input']['classes_used']:,}" for _, r in reports]],
        ["engine", *[r.get("engine", {}).get("name", "-") for _, r in reports]],
    ]
    return header, rows


def compare_markdown(reports: list[tuple[str, dict]]) -> str:
    header, rows = compare_table(reports)
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
