"""Groups in place of classes: customers, domains or regions that a deployment serves.

A group is a second key on the items (``--group-col``); the classes still decide which pairs are
positives. A group's pairs are the pairs with an anchor in the group (at least one end in it):

    P_g = { {a, b} : a != b, y_a = y_b, a in g or b in g }    N_g = { {a, b} : y_a != y_b, a in g or b in g }

TAR_g, TRR_g and U_g follow docs/definitions.md with P_g and N_g in place of P_i and N_i, and
OPIS and eps-OPIS are taken across the groups that have positive pairs (equal weights), on the
same calibration grid as the class figures. With one class per group (groups = classes) the
figures are the class figures exactly. ``disparity`` compares the groups' FAR and FRR at the
range's ends, lo and hi (with --calib-far: the pooled FAR bounds), as fairlearn does: the
difference max - min and the ratio min / max.

Counted exactly on the main sweep by the GroupCounts accumulator (engine/accumulators.py, kernel
kernels.block_group_counts) from the same panels; the bins beyond the grid come from the totals,
which the class-by-group contingency gives (histograms.group_totals):
|P_g| = sum_c [C(n_c, 2) - C(n_c - n_cg, 2)], |P_g| + |N_g| = C(N, 2) - C(N - n_g, 2).
"""

from __future__ import annotations

import numpy as np

from opis_cli.statistics.curves import accepted_at_thresholds, utility
from opis_cli.errors import ConfigError
from opis_cli.data.io import Labels
from opis_cli.statistics.metrics import eps_opis, opis
from opis_cli.engine.histograms import GroupHistograms


def group_section(hist: GroupHistograms, groups: Labels, column: str | None, *, beta: float, epsilon: float,
                  contrast: str) -> dict:
    """The report's ``groups`` section: per-group curves' summaries, OPIS and eps-OPIS across groups."""
    used = np.flatnonzero(hist.n_pos > 0)
    if len(used) < 2:
        raise ConfigError(f"--group-col {column}: need at least two groups with positive pairs; found {len(used)}")
    tar = accepted_at_thresholds(hist.pos[used]) / hist.n_pos[used][:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        trr = np.where(hist.n_neg[used][:, None] > 0,
                       1.0 - accepted_at_thresholds(hist.neg[used]) / np.maximum(hist.n_neg[used], 1)[:, None], 1.0)
    u = utility(tar, trr, beta)
    o = opis(u, hist.edges)
    section = {"column": column, "groups": len(groups.values), "groups_used": int(len(used)), "opis": o.value}
    try:
        e = eps_opis(u, hist.edges, epsilon=epsilon, contrast=contrast)
        section["eps_opis"] = e.value
        worst = {int(i) for i in e.worst}
        means = e.mean_utility
    except ConfigError as exc:  # too few groups for the contrast: OPIS still stands
        section["eps_opis"] = None
        section["eps_opis_note"] = str(exc)
        worst, means = set(), None
    from opis_cli.statistics.metrics import range_average

    means = range_average(u, hist.edges) if means is None else means
    far = accepted_at_thresholds(hist.neg[used]) / np.maximum(hist.n_neg[used], 1)[:, None]
    names = [groups.values[int(g)] for g in used]
    section["disparity"] = [
        {"at": at, "threshold": float(hist.edges[k]), **disparity(far[:, k], 1.0 - tar[:, k], names)}
        for at, k in (("lo", 0), ("hi", len(hist.edges) - 1))
    ]
    section["rows"] = [
        {"group": groups.values[int(g)], "positive_pairs": int(hist.n_pos[g]), "negative_pairs": int(hist.n_neg[g]),
         "mean_utility": float(means[r]), "opis_contribution": float(o.contributions[r]), "in_worst_eps": r in worst}
        for r, g in enumerate(used)
    ]
    return section


def disparity(far: np.ndarray, frr: np.ndarray, names: list) -> dict:
    """fairlearn-style disparity of the groups' FAR and FRR at one threshold: for each rate r,
    ``difference`` = max_g r_g - min_g r_g and ``ratio`` = min_g r_g / max_g r_g (1 when every
    group's rate is 0: no disparity), as fairlearn's MetricFrame.difference() / .ratio() with
    method="between_groups"; with the groups at the extremes (first in the given order on ties)."""
    out = {}
    for key, rates in (("far", np.asarray(far, np.float64)), ("frr", np.asarray(frr, np.float64))):
        lo, hi = int(np.argmin(rates)), int(np.argmax(rates))
        out[key] = {"difference": float(rates[hi] - rates[lo]),
                    "ratio": float(rates[lo] / rates[hi]) if rates[hi] > 0 else 1.0,
                    "min": {"group": names[lo], "value": float(rates[lo])},
                    "max": {"group": names[hi], "value": float(rates[hi])}}
    return out


def disparity_text(d: dict) -> str:
    """'FAR max/min 3.2x (difference 0.0041, highest north), FRR ...' for one entry of
    :func:`disparity` (plain text; max/min is 1 / ratio, inf when a group's rate is 0)."""
    parts = []
    for key in ("far", "frr"):
        e = d[key]
        ratio = "inf" if e["ratio"] == 0 else f"{1 / e['ratio']:.3g}"
        parts.append(f"{key.upper()} max/min {ratio}x (difference {e['difference']:.3g}, highest {e['max']['group']})")
    return ", ".join(parts)
