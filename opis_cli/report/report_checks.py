"""What a saved evaluation report must satisfy before a verdict is drawn from it.

A gate acts on what it reads, so a hand-edited, truncated or foreign report must be refused
(one line, exit 2), never compared: an OPIS of -1, NaN or ``false`` would pass any limit and a
standard error of 1e300 would pass any significance test. :func:`check_report` checks the type
and the domain of every field the gate, compare and plot read:

* OPIS lies in [0, 1/4] (the across-class variance of utilities in [0, 1]); eps-OPIS, every
  Recall@k, pooled rates, utilities and the EER (inside its interval) in [0, 1];
* a standard error is finite, non-negative and no larger than its figure's whole range; an
  interval is two finite numbers lo <= hi inside the figure's domain;
* the calibration range is finite with lo < hi, at least two thresholds; every used class has
  at least two members and the class list matches ``input.classes_used``.
"""

from __future__ import annotations

import math

from opis_cli.errors import InputError


#: The whole range of each headline figure: [0, upper].
FIGURE_RANGE = {"opis": 0.25, "eps_opis": 1.0, "recall": 1.0}


class _Bad(Exception):
    pass


def _number(value, where: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    # bool is an int in Python; `false` must not read as an OPIS of 0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"{where} is {_show(value)}, expected a number")
    v = float(value)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise _Bad(f"{where} is {_show(value)}, outside [{lo:g}, {hi:g}]")
    return v


def _integer(value, where: str, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _Bad(f"{where} is {_show(value)}, expected an integer >= {lo}")
    return value


def _mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise _Bad(f"{where} is {_show(value)}, expected an object")
    return value


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _uncertainty(entry, where: str, upper: float, se_optional: bool = False) -> None:
    """A ``{se, interval}`` entry of a figure whose domain is [0, upper]."""
    entry = _mapping(entry, where)
    se = entry.get("se")
    if not (se is None and se_optional):
        _number(se, f"{where}.se", 0.0, upper)
    interval = entry.get("interval")
    if not (isinstance(interval, list) and len(interval) == 2):
        raise _Bad(f"{where}.interval is {_show(interval)}, expected [lo, hi]")
    lo = _number(interval[0], f"{where}.interval[0]", 0.0, upper)
    hi = _number(interval[1], f"{where}.interval[1]", 0.0, upper)
    if lo > hi:
        raise _Bad(f"{where}.interval is {_show(interval)}, expected lo <= hi")


def _uncertainties(section, where: str, se_optional: bool = False) -> None:
    section = _mapping(section, where)
    for name in ("opis", "eps_opis"):
        if section.get(name) is not None:
            _uncertainty(section[name], f"{where}.{name}", FIGURE_RANGE[name], se_optional)
    for k, entry in _mapping(section.get("recall_at_k", {}), f"{where}.recall_at_k").items():
        _uncertainty(entry, f"{where}.recall_at_k.{k}", FIGURE_RANGE["recall"], se_optional)


def _check(data) -> None:
    from opis_cli.report.report import SCHEMA_VERSION

    # Every version up to this one is known (docs/report-format.md says what each changed).
    known = tuple(range(1, SCHEMA_VERSION + 1))
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in known:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION
        raise _Bad(f"report schema version {_show(version)} is unknown; this opis-cli reads "
                   f"{', '.join(map(str, known))}" + (" (upgrade opis-cli)" if newer else ""))
    metrics = _mapping(data.get("metrics"), "metrics")
    _number(metrics.get("opis"), "metrics.opis", 0.0, FIGURE_RANGE["opis"])
    _number(metrics.get("eps_opis"), "metrics.eps_opis", 0.0, FIGURE_RANGE["eps_opis"])
    for k, v in _mapping(metrics.get("recall_at_k", {}), "metrics.recall_at_k").items():
        if not (isinstance(k, str) and k.isdigit() and int(k) >= 1):
            raise _Bad(f"metrics.recall_at_k has key {_show(k)}, expected k >= 1 as a string")
        _number(v, f"metrics.recall_at_k.{k}", 0.0, 1.0)
    if metrics.get("eer") is not None:
        eer = _mapping(metrics["eer"], "metrics.eer")
        _uncertainty({"interval": eer.get("interval")}, "metrics.eer", 1.0, se_optional=True)
        value = _number(eer.get("eer"), "metrics.eer.eer", 0.0, 1.0)
        if not eer["interval"][0] <= value <= eer["interval"][1]:
            raise _Bad(f"metrics.eer.eer {value:g} lies outside its interval {_show(eer['interval'])}")

    config = _mapping(data.get("config"), "config")
    for key in ("metric", "eps_contrast"):
        if not isinstance(config.get(key), str):
            raise _Bad(f"config.{key} is {_show(config.get(key))}, expected a string")
    _number(config.get("beta"), "config.beta", 0.0)
    _number(config.get("epsilon"), "config.epsilon", 0.0, 1.0)

    cal = _mapping(data.get("calibration"), "calibration")
    if cal.get("mode") not in ("distance", "far"):
        raise _Bad(f"calibration.mode is {_show(cal.get('mode'))}, expected distance or far")
    lo, hi = _number(cal.get("lo"), "calibration.lo"), _number(cal.get("hi"), "calibration.hi")
    if not lo < hi:
        raise _Bad(f"calibration range [{lo:g}, {hi:g}] is empty")
    _integer(cal.get("thresholds"), "calibration.thresholds", 2)
    for key in ("far_at_lo", "far_at_hi", "tar_at_lo", "tar_at_hi"):
        if key in cal:
            _number(cal[key], f"calibration.{key}", 0.0, 1.0)
    if cal["mode"] == "far":
        target = cal.get("far_target")
        if not (isinstance(target, list) and len(target) == 2):
            raise _Bad(f"calibration.far_target is {_show(target)}, expected [lo, hi]")
        for i, v in enumerate(target):
            _number(v, f"calibration.far_target[{i}]", 0.0, 1.0)

    inp = _mapping(data.get("input"), "input")
    n = _integer(inp.get("n"), "input.n", 2)
    _integer(inp.get("d"), "input.d", 1)
    used = _integer(inp.get("classes_used"), "input.classes_used", 2)
    if "labels_sha256" in inp and not isinstance(inp["labels_sha256"], str):
        raise _Bad(f"input.labels_sha256 is {_show(inp['labels_sha256'])}, expected a string")
    if inp.get("reference") is not None:  # query/reference mode: the comparability checks read these
        ref = _mapping(inp["reference"], "input.reference")
        _integer(ref.get("n"), "input.reference.n", 1)
        if not isinstance(ref.get("labels_sha256"), str):
            raise _Bad(f"input.reference.labels_sha256 is {_show(ref.get('labels_sha256'))}, expected a string")
    classes = data.get("classes")
    if not isinstance(classes, list) or len(classes) != used:
        raise _Bad(f"classes lists {len(classes) if isinstance(classes, list) else _show(classes)} entries, "
                   f"input.classes_used says {used}")
    total = 0
    for i, row in enumerate(classes):
        row = _mapping(row, f"classes[{i}]")
        if "label" not in row:
            raise _Bad(f"classes[{i}] has no label")
        total += _integer(row.get("size"), f"classes[{i}].size", 2)
        _number(row.get("mean_utility"), f"classes[{i}].mean_utility", 0.0, 1.0)
    if total > n:
        raise _Bad(f"the classes hold {total} items, more than input.n = {n}")

    engine = _mapping(data.get("engine", {}), "engine")
    if engine.get("name", "exact") not in ("exact", "approximate"):
        raise _Bad(f"engine.name is {_show(engine.get('name'))}, expected exact or approximate")
    if data.get("bootstrap") is not None:
        _uncertainties(data["bootstrap"], "bootstrap")
    if data.get("approximation") is not None:
        approx = _mapping(data["approximation"], "approximation")
        _uncertainties(approx.get("errors", {}), "approximation.errors", se_optional=True)


def check_report(data, source: str) -> dict:
    """``data`` if it is an evaluation report whose every field the verdicts read has the right
    type and lies in its domain; otherwise InputError naming the first bad field."""
    if not isinstance(data, dict) or "schema_version" not in data or "metrics" not in data:
        raise InputError(f"{source} is not an opis report (no schema_version/metrics)")
    try:
        _check(data)
    except _Bad as exc:
        raise InputError(f"{source} cannot be trusted: {exc}") from None
    return data
