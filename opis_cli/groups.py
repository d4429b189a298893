"""Groups in place of classes: customers, domains or regions that a deployment serves.

A group is a second key on the items (``--group-col``); the classes still decide which pairs are
positives. A group's pairs are the pairs with an anchor in the group (at least one end in it):

    P_g = { {a, b} : a != b, y_a = y_b, a in g or b in g }    N_g = { {a, b} : y_a != y_b, a in g or b in g }

TAR_g, TRR_g and U_g follow docs/definitions.md with P_g and N_g in place of P_i and N_i, and
OPIS and eps-OPIS are taken across the groups that have positive pairs (equal weights), on the
same calibration grid as the class figures. With one class per group (groups = classes) the
figures are the class figures exactly.

Counted exactly by one extra pass of the fused kernel (kernels.block_group_counts) over the same
panels; the bins beyond the grid come from the totals, which the class-by-group contingency gives:
|P_g| = sum_c [C(n_c, 2) - C(n_c - n_cg, 2)], |P_g| + |N_g| = C(N, 2) - C(N - n_g, 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .binning import ThresholdBins
from .curves import accepted_at_thresholds, utility
from .errors import ConfigError
from .io import Labels
from .metrics import eps_opis, opis
from .pairs import _panel_pairs, iter_panels, panel_products, panel_shape
from .prepare import PreparedEmbeddings


@dataclass
class GroupHistograms:
    """Per-group histograms of positive and negative pair distances on the grid (bins as
    pairs.PairHistograms), with the exact totals |P_g| and |N_g|."""

    edges: np.ndarray
    pos: np.ndarray  # (G, T + 1) int64
    neg: np.ndarray  # (G, T + 1) int64
    n_pos: np.ndarray  # (G,)
    n_neg: np.ndarray  # (G,)


def _pairs2(k: np.ndarray) -> np.ndarray:
    k = k.astype(np.int64)
    return k * (k - 1) // 2


def group_totals(class_codes: np.ndarray, group_codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(|P_g|, |N_g|) of every group from the class-by-group contingency (module docstring)."""
    n = len(class_codes)
    class_sizes = np.bincount(class_codes)
    group_sizes = np.bincount(group_codes, minlength=n_groups)
    keys, counts = np.unique(class_codes.astype(np.int64) * n_groups + group_codes, return_counts=True)
    c, g = keys // n_groups, keys % n_groups
    n_pos = np.zeros(n_groups, np.int64)
    np.add.at(n_pos, g, _pairs2(class_sizes[c]) - _pairs2(class_sizes[c] - counts))
    touching = _pairs2(np.array([n]))[0] - _pairs2(n - group_sizes)
    return n_pos, touching - n_pos


def group_histograms(p: PreparedEmbeddings, groups: np.ndarray, n_groups: int, edges: np.ndarray, *,
                     memory_budget: int, threads: int | None = None, progress=None) -> GroupHistograms:
    """Exact per-group histograms; ``groups`` are group codes in the input's row order."""
    from . import kernels
    from .threads import thread_limit

    edges = np.asarray(edges, np.float64)
    t = edges.size
    e0, inv, upper = ThresholdBins(edges).kernel_arguments()
    metric, sq = kernels.metric_arguments(p)
    gcodes = np.asarray(groups, np.int64)[p.order]
    offsets = gcodes * t
    pos = np.zeros(n_groups * t, np.int64)
    neg = np.zeros(n_groups * t, np.int64)
    rows, cols = panel_shape(p.n, memory_budget)
    total, done = p.n * (p.n - 1) // 2, 0
    with thread_limit(threads) as nt:
        for i0, i1, j0, j1, g, same_lo, same_hi in panel_products(p, iter_panels(p.n, rows, cols), rows * cols):
            ph = np.zeros((nt, n_groups * t), np.int64)
            nh = np.zeros((nt, n_groups * t), np.int64)
            kernels.block_group_counts(g, offsets[i0:i1], offsets[j0:j1], same_lo, same_hi, i0 == j0, metric,
                                       sq[i0:i1], sq[j0:j1], e0, inv, upper, nt, ph, nh)
            pos += ph.sum(axis=0)
            neg += nh.sum(axis=0)
            done += _panel_pairs(i0, i1, j0, j1)
            if progress is not None:
                progress(done, total)
    n_pos, n_neg = group_totals(p.codes, gcodes, n_groups)
    pos, neg = pos.reshape(n_groups, t), neg.reshape(n_groups, t)
    pos = np.concatenate([pos, (n_pos - pos.sum(axis=1))[:, None]], axis=1)
    neg = np.concatenate([neg, (n_neg - neg.sum(axis=1))[:, None]], axis=1)
    if pos[:, -1].min(initial=0) < 0 or neg[:, -1].min(initial=0) < 0:
        raise AssertionError("group pass counted more pairs than exist")
    return GroupHistograms(edges, pos, neg, n_pos, n_neg)


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
    from .metrics import range_average

    means = range_average(u, hist.edges) if means is None else means
    section["rows"] = [
        {"group": groups.values[int(g)], "positive_pairs": int(hist.n_pos[g]), "negative_pairs": int(hist.n_neg[g]),
         "mean_utility": float(means[r]), "opis_contribution": float(o.contributions[r]), "in_worst_eps": r in worst}
        for r, g in enumerate(used)
    ]
    return section
