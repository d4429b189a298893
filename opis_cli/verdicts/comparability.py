"""When two evaluation reports may be compared, and at which operating points.

docs/definitions.md ("Comparing two reports"): two reports are comparable when they are computed
on the same evaluation set (same labels hash, N and class sizes) with the same metric,
normalisation, T, b, eps and contrast, and either the same pinned range ``--calib LO:HI`` or the
same FAR bounds ``--calib-far LO:HI``.

* Same FAR bounds: each model has its own [lo, hi] in distance units; the models are compared at
  matched operating points (what a deployment that recalibrates its threshold per model sees).
  This is how a new model is compared with the released one.
* Same pinned range: the models are compared at whatever FARs that range gives each of them.
  When the pooled FAR at lo or at hi differs by more than :data:`OPERATING_POINT_FACTOR` between
  the two, the comparison says so (a warning; ``--strict`` refuses it): a pinned range can sit
  at FAR 0.001..0.1 for one model and 0.014..0.27 for the other and hide a regression.

Three kinds of finding, from hardest to softest:

* ``refusals``: the reports cannot be compared at all (another evaluation set, no evaluation-set
  hash, an approximate report without ``allow_approximate``): always exit 2;
* ``mismatches``: a setting that changes a figure's meaning differs: exit 2 unless
  ``--on-mismatch warn``;
* ``warnings``: comparable, but at different operating points: exit 2 only with ``--strict``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

#: Pooled FAR at lo or hi differing by more than this factor means other operating points.
OPERATING_POINT_FACTOR = 2.0

SETTINGS = ("metric", "normalize", "beta", "epsilon", "eps_contrast")


@dataclass
class Comparison:
    """What stands between two reports and a like-with-like comparison."""

    refusals: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    same_evaluation_set: bool = False
    approximate: bool = False  # at least one report's figures are estimates

    @property
    def problems(self) -> list[str]:
        return self.refusals + self.mismatches


def calibration_text(report: dict) -> str:
    """How a report's range was set: ``FAR 0.001:0.1 -> [0.41, 0.63]`` or ``pinned [0.6, 0.85]``."""
    cal = report["calibration"]
    if cal["mode"] == "far":
        lo_far, hi_far = cal["far_target"]
        return f"FAR {lo_far:g}:{hi_far:g} -> [{cal['lo']:.4g}, {cal['hi']:.4g}]"
    return f"pinned [{cal['lo']:.4g}, {cal['hi']:.4g}]"


def _far_ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return 1.0
    lo, hi = min(a, b), max(a, b)
    if hi == 0:
        return 1.0
    return hi / lo if lo > 0 else float("inf")


def _label_key(label) -> str:
    # JSON labels may be strings or integers; "1" and 1 are different classes.
    return json.dumps(label, ensure_ascii=False)


def evaluation_set_problems(baseline: dict, current: dict, names: tuple[str, str]) -> list[str]:
    """Why two reports are not on the same evaluation set (empty list: they are); in
    query/reference mode the references too."""
    out = []
    for name, report in zip(names, (baseline, current)):
        if not report["input"].get("labels_sha256"):
            out.append(f"{name} has no evaluation-set hash (input.labels_sha256; written by an older opis-cli): "
                       f"re-run `opis evaluate` on its input with this opis-cli")
    if out:
        return out
    nb, nc = baseline["input"]["n"], current["input"]["n"]
    sizes_b = {_label_key(c["label"]): c["size"] for c in baseline["classes"]}
    sizes_c = {_label_key(c["label"]): c["size"] for c in current["classes"]}
    if nb != nc:
        out.append(f"evaluation sets differ: {nb:,} items in {names[0]}, {nc:,} in {names[1]}")
    if sizes_b.keys() != sizes_c.keys():
        only_b, only_c = len(sizes_b.keys() - sizes_c.keys()), len(sizes_c.keys() - sizes_b.keys())
        out.append(f"class sets differ: {only_b} classes only in {names[0]}, {only_c} only in {names[1]} "
                   f"({len(sizes_b)} vs {len(sizes_c)} classes)")
    else:
        changed = [str(json.loads(key)) for key in sizes_b if sizes_b[key] != sizes_c[key]]
        if changed:
            out.append(f"evaluation sets differ: {len(changed)} class size(s) differ (e.g. {', '.join(changed[:3])})")
    if not out and baseline["input"]["labels_sha256"] != current["input"]["labels_sha256"]:
        out.append("evaluation sets differ (labels hash): the same classes and sizes, other label values or items")
    return out + _reference_problems(baseline, current, names)


def _reference_problems(baseline: dict, current: dict, names: tuple[str, str]) -> list[str]:
    """Query/reference mode: both reports must have references, and the same ones (size and
    labels hash): the references are half of the evaluation set."""
    refs = [r["input"].get("reference") for r in (baseline, current)]
    if refs[0] is None and refs[1] is None:
        return []
    if refs[0] is None or refs[1] is None:
        which = names[0] if refs[0] is not None else names[1]
        return [f"only {which} was evaluated against references (--reference): a query/reference evaluation "
                "and a single-set one count different pairs"]
    if refs[0].get("n") != refs[1].get("n") or refs[0].get("labels_sha256") != refs[1].get("labels_sha256"):
        return [f"reference sets differ: {refs[0].get('n', 0):,} references in {names[0]}, {refs[1].get('n', 0):,} in "
                f"{names[1]} (or other labels): evaluate both against the same --reference"]
    return []


def compare_reports(baseline: dict, current: dict, *, names: tuple[str, str] = ("the baseline", "the current report"),
                    allow_approximate: bool = False) -> Comparison:
    """Every reason ``current`` cannot be compared like with like against ``baseline``."""
    result = Comparison()
    result.refusals += evaluation_set_problems(baseline, current, names)
    result.same_evaluation_set = not result.refusals
    engines = [r.get("engine", {}).get("name", "exact") for r in (baseline, current)]
    result.approximate = "approximate" in engines
    if result.approximate and not allow_approximate:
        which = " and ".join(n for n, e in zip(names, engines) if e == "approximate")
        result.refusals.append(
            f"{which} {'is' if engines.count('approximate') == 1 else 'are'} approximate (estimates with 95% "
            "intervals): evaluate with --index exact, or pass --allow-approximate to judge each figure at the "
            "unfavourable end of its interval")
    bc, cc = baseline["config"], current["config"]
    for key in SETTINGS:
        if bc.get(key) != cc.get(key):
            result.mismatches.append(f"{key} differs: {names[0]} {bc.get(key)!r}, {names[1]} {cc.get(key)!r}")
    bcal, ccal = baseline["calibration"], current["calibration"]
    if bcal["thresholds"] != ccal["thresholds"]:
        result.mismatches.append(f"thresholds differ: {names[0]} {bcal['thresholds']}, {names[1]} {ccal['thresholds']}")
    if bcal["mode"] != ccal["mode"]:
        result.mismatches.append(
            f"calibration differs: {names[0]} {calibration_text(baseline)}, {names[1]} {calibration_text(current)}; "
            "evaluate both with the same --calib-far (different models) or the same --calib (same model, new data)")
    elif bcal["mode"] == "far":
        if list(bcal["far_target"]) != list(ccal["far_target"]):
            result.mismatches.append(f"FAR bounds differ: {names[0]} {calibration_text(baseline)}, "
                                     f"{names[1]} {calibration_text(current)}")
    elif (bcal["lo"], bcal["hi"]) != (ccal["lo"], ccal["hi"]):
        result.mismatches.append(f"calibration range differs: {names[0]} [{bcal['lo']}, {bcal['hi']}], {names[1]} "
                                 f"[{ccal['lo']}, {ccal['hi']}]; evaluate both with the same --calib-far (different "
                                 "models) or the same --calib (same model, new data)")
    else:
        far_b = (bcal.get("far_at_lo"), bcal.get("far_at_hi"))
        far_c = (ccal.get("far_at_lo"), ccal.get("far_at_hi"))
        if max(_far_ratio(far_b[0], far_c[0]), _far_ratio(far_b[1], far_c[1])) > OPERATING_POINT_FACTOR:
            result.warnings.append(
                f"operating points differ: the pinned range [{bcal['lo']:.4g}, {bcal['hi']:.4g}] sits at pooled FAR "
                f"{_fmt_far(far_b)} for {names[0]} and {_fmt_far(far_c)} for {names[1]} (more than "
                f"{OPERATING_POINT_FACTOR:g}x apart): compare different models at matched operating points, "
                "both evaluated with the same --calib-far (docs/ci.md)")
    return result


def _fmt_far(pair) -> str:
    lo, hi = pair
    return f"{lo:.3g}..{hi:.3g}" if lo is not None and hi is not None else "unknown"
