"""Runs grouped into arms (seeds x arms experiments), each arm's change against the first arm.

Runs ``none-s0, none-s1, tcm-s0, tcm-s1`` grouped by the pattern ``^(\\w+)-s\\d+$`` form the
groups ``none`` (the reference: the first group to appear) and ``tcm``. For every group and
figure (OPIS, eps-OPIS, Recall@k for every k in all runs): n, mean, sd (ddof=1), min, max. For
every later group, the change of the mean against the reference with a 95% interval:

* paired, when the runs of the two groups pair one to one by pairing key (``*-s0`` with
  ``*-s0``): d_i = x_group(i) - x_ref(i), interval mean(d) +- t_{0.975, n-1} sd(d) / sqrt(n);
* otherwise Welch: mean_g - mean_r +- t_{0.975, df} sqrt(s_g^2/n_g + s_r^2/n_r), with
  df = (s_g^2/n_g + s_r^2/n_r)^2 / ((s_g^2/n_g)^2/(n_g-1) + (s_r^2/n_r)^2/(n_r-1)).

``clear``: the interval excludes 0. The interval is over seeds (training randomness), not classes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Callable

from opis_cli.verdicts.comparability import compare_reports
from opis_cli.errors import ConfigError, InputError


def _compile(pattern: str, option: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{option} '{pattern}' is not a valid regular expression: {exc}") from None


def _match(regex: re.Pattern, name: str, option: str) -> tuple[str, tuple[int, int]]:
    """The captured text (first group, else the whole match) and its span in ``name``."""
    m = regex.search(name)
    group = 1 if regex.groups else 0
    if m is None or m.group(group) is None:
        raise InputError(f"run {name!r} does not match {option} '{regex.pattern}'")
    return m.group(group), m.span(group)


def group_key_from_name(pattern: str) -> Callable[[str], tuple[str, str]]:
    """``name -> (group key, pairing key)`` for the regex ``pattern`` applied with re.search.

    group key = the first capture group (the whole match without one); pairing key = the name
    with that span replaced by ``*`` (``none-s0`` and ``tcm-s0`` under ``^(\\w+)-s\\d+$`` both
    pair as ``*-s0``). ConfigError for a malformed regex; InputError for a name that does not match."""
    regex = _compile(pattern, "--group-by")

    def key(name: str) -> tuple[str, str]:
        text, (start, end) = _match(regex, name, "--group-by")
        return text, name[:start] + "*" + name[end:]

    return key


def field_value(report: dict, path: str, name: str):
    """The value at the dotted ``path`` of a report (``config.beta``); InputError when missing."""
    value = report
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise InputError(f"run {name!r} has no {path!r} in its report (missing {part!r})")
        value = value[part]
    return value


@dataclass
class GroupedComparison:
    """Per-group summaries of every figure and each later group's change against the first."""

    grouped_by: dict  # {"pattern" | "field": ..., "pair_by": ...}
    groups: dict[str, list[str]]  # group label -> run names, groups in order of first appearance
    pairing: dict[str, str]  # run name -> pairing key
    figure_keys: list[str]  # "opis", "eps_opis", "recall_at_k.<k>"
    figures: dict[str, dict[str, dict]] = field(default_factory=dict)  # group -> figure -> {n, mean, sd, min, max}
    deltas: dict[str, dict[str, dict]] = field(default_factory=dict)  # group -> figure -> {delta, interval, ...}
    warnings: list[str] = field(default_factory=list)

    @property
    def reference(self) -> str:
        return next(iter(self.groups))

    def to_dict(self) -> dict:
        """JSON-ready; ``order`` keeps the group order that sorted JSON keys lose."""
        return {
            "grouped_by": dict(self.grouped_by),
            "reference": self.reference,
            "order": list(self.groups),
            "groups": {g: {"runs": list(names), "pairing_keys": [self.pairing[n] for n in names],
                           "figures": {f: dict(self.figures[g][f]) for f in self.figure_keys}}
                       for g, names in self.groups.items()},
            "deltas": {g: {f: dict(d[f]) for f in self.figure_keys} for g, d in self.deltas.items()},
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows: "mean ± sd (n)" per group and figure, then each figure's change."""
        names = list(self.groups)
        rows = [[_label(f), *[_summary_cell(self.figures[g][f]) for g in names]] for f in self.figure_keys]
        for f in self.figure_keys:
            cells = ["-"] + [_delta_cell(self.deltas[g][f]) for g in names[1:]]
            rows.append([f"{_label(f)} change vs {self.reference}", *cells])
        return ["", *names], rows

    def to_markdown(self) -> str:
        from opis_cli.report.report import md_table

        return md_table(*self.table(), self.warnings)


def _label(figure: str) -> str:
    return {"opis": "OPIS", "eps_opis": "eps-OPIS"}.get(figure) or f"Recall@{figure.split('.', 1)[1]}"


def _summary_cell(s: dict) -> str:
    sd = f" ± {s['sd']:.4g}" if s["sd"] is not None else ""
    return f"{s['mean']:.4g}{sd} ({s['n']})"


def _delta_cell(d: dict) -> str:
    text = f"{d['delta']:+.4g}"
    if d["interval"] is not None:
        text += f" [{d['interval'][0]:+.4g}, {d['interval'][1]:+.4g}]"
    return text + (" paired" if d["pairs"] is not None else " Welch")


def _value(run, figure: str) -> float:
    metrics = run.report["metrics"]
    value = metrics["recall_at_k"][figure.split(".", 1)[1]] if "." in figure else metrics[figure]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"run {run.name!r}: {_label(figure)} is {value!r}, not a finite number")
    return float(value)


def summarise(values: list[float]) -> dict:
    """{n, mean, sd, min, max}; sd = sqrt(sum (x - mean)^2 / (n - 1)), None when n = 1."""
    n = len(values)
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in values) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd, "min": min(values), "max": max(values)}


def _t975(df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def paired_delta(ref: list[float], cur: list[float]) -> dict:
    """Change over pairs (ref[i], cur[i]): d_i = cur[i] - ref[i]; mean(d) +- t_{0.975, n-1} sd(d)/sqrt(n)."""
    d = summarise([c - r for r, c in zip(ref, cur)])
    n, half = d["n"], _t975(d["n"] - 1) * d["sd"] / math.sqrt(d["n"]) if d["n"] > 1 else None
    return _entry(d["mean"], half, f"paired over {n} seed{'s' if n != 1 else ''}", n)


def welch_delta(ref: list[float], cur: list[float]) -> dict:
    """mean(cur) - mean(ref) +- t_{0.975, df} sqrt(v_c + v_r), v = s^2/n, Welch-Satterthwaite
    df = (v_c + v_r)^2 / (v_c^2/(n_c-1) + v_r^2/(n_r-1)); no interval when either n < 2."""
    r, c = summarise(ref), summarise(cur)
    half = None
    if r["n"] > 1 and c["n"] > 1:
        vr, vc = r["sd"] ** 2 / r["n"], c["sd"] ** 2 / c["n"]
        # Both groups without spread: df is 0/0 but the interval is a point whatever df is.
        half = 0.0 if vr + vc == 0 else _t975((vr + vc) ** 2 / (vr ** 2 / (r["n"] - 1) + vc ** 2 / (c["n"] - 1))) \
            * math.sqrt(vr + vc)
    return _entry(c["mean"] - r["mean"], half, "unpaired (Welch)", None)


def _entry(delta: float, half: float | None, method: str, pairs: int | None) -> dict:
    """The change's record; ``clear``: its interval [delta - half, delta + half] excludes 0."""
    interval = None if half is None else [delta - half, delta + half]
    clear = None if interval is None else bool(interval[0] > 0 or interval[1] < 0)
    return {"delta": delta, "interval": interval, "method": method, "pairs": pairs, "clear": clear}


def _keys(runs: list, pattern: str | None, field_path: str | None, pair_by: str | None) -> tuple[list, list, dict]:
    """Per run: group label, pairing key; and grouped_by."""
    if (pattern is None) == (field_path is None):
        raise ConfigError("group runs either by a name pattern or by a report field: give exactly one")
    pair_regex = _compile(pair_by, "--pair-by") if pair_by is not None else None
    if pattern is not None:
        by_name = group_key_from_name(pattern)
        groups, pairs = map(list, zip(*(by_name(r.name) for r in runs)))
        grouped_by = {"pattern": pattern, "pair_by": pair_by}
    else:
        values = [field_value(r.report, field_path, r.name) for r in runs]
        keys = [json.dumps(v, sort_keys=True, ensure_ascii=False) for v in values]
        shown = {k: str(v) for k, v in zip(keys, values)}
        # 1 and "1" are different groups that str() shows alike: fall back to the JSON text.
        groups = [shown[k] for k in keys] if len(set(shown.values())) == len(shown) else keys
        pairs = [r.name for r in runs]
        grouped_by = {"field": field_path, "pair_by": pair_by}
    if pair_regex is not None:
        pairs = [_match(pair_regex, r.name, "--pair-by")[0] for r in runs]
    return groups, pairs, grouped_by


def group_runs(runs: list, *, pattern: str | None = None, field: str | None = None,
               pair_by: str | None = None) -> GroupedComparison:
    """Group :class:`~opis_cli.report.runs.SavedRun` objects by a name ``pattern`` (group_key_from_name)
    or a dotted report ``field`` (group = its value; pairing key = the run name unless ``pair_by``,
    a regex whose first capture group, else whole match, is the pairing key) and compare every
    later group with the first (module docstring). InputError when a run is not comparable like
    with like with the first run (opis_cli.verdicts.comparability)."""
    names = [r.name for r in runs]
    if not runs or len(set(names)) != len(names):
        shared = [n for n in names if names.count(n) > 1]
        raise InputError(f"two runs share the name {shared[0]!r}" if shared else "no runs to group")
    labels, pair_keys, grouped_by = _keys(runs, pattern, field, pair_by)
    ref, warnings, problems = runs[0], [], []
    for run in runs[1:]:
        comp = compare_reports(ref.report, run.report, names=(ref.name, run.name), allow_approximate=True)
        if comp.problems:
            problems.append(f"{run.name} is not comparable with {ref.name}: " + "; ".join(comp.problems))
        warnings += [w for w in comp.warnings if w not in warnings]
        if comp.approximate:
            warnings.append(f"{run.name} vs {ref.name}: approximate figures; the intervals do not include the "
                            "approximation error (approximation.errors)")
    if problems:
        raise InputError("runs cannot be grouped like with like: " + " | ".join(problems))
    ks = set.intersection(*(set(r.report["metrics"].get("recall_at_k", {})) for r in runs))
    figure_keys = ["opis", "eps_opis", *[f"recall_at_k.{k}" for k in sorted(ks, key=int)]]
    vals = {r.name: {f: _value(r, f) for f in figure_keys} for r in runs}
    members: dict[str, list[str]] = {}
    for label, name in zip(labels, names):
        members.setdefault(label, []).append(name)
    result = GroupedComparison(grouped_by=grouped_by, groups=members, pairing=dict(zip(names, pair_keys)),
                               figure_keys=figure_keys, warnings=warnings)
    result.figures = {g: {f: summarise([vals[n][f] for n in ns]) for f in figure_keys} for g, ns in members.items()}
    # Sorted by pairing key: paired runs line up, and every sum runs in one order whatever the run order.
    ref_names = sorted(members[result.reference], key=result.pairing.__getitem__)
    ref_keys = [result.pairing[n] for n in ref_names]
    for g, ns in list(members.items())[1:]:
        ns = sorted(ns, key=result.pairing.__getitem__)
        paired = [result.pairing[n] for n in ns] == ref_keys and len(set(ref_keys)) == len(ref_keys)
        delta = paired_delta if paired else welch_delta
        result.deltas[g] = {f: delta([vals[n][f] for n in ref_names], [vals[n][f] for n in ns]) for f in figure_keys}
    return result
