"""TCM margins at pooled-rate targets, fitted to a set of embeddings (docs/margins.md).

What they are worth in training was measured (docs/tcm.md): on held-out classes no margin rule,
these included, measurably changed OPIS against pytorch-metric-learning's defaults. So this
module states what a pair of margins *means* on the data (pooled rates, hard-pair shares, the
TCM loss) and flags what is wrong with it (``warnings``); it does not claim the margins improve
a model. The JSON key ``margins.recommended`` is historical: "the margins at your targets".

TCM (definitions.md) penalises hard positives, cosine similarity s <= m+, and hard negatives,
s >= m-. With d = 1 - s (cosine distance, float32 as the engine computes it):

* m- = 1 - t-, t- the smallest grid threshold at which the pooled FAR reaches the target F: the
  negatives with s >= m- (d <= t-) are exactly the false accepts at threshold t-;
* m+ = 1 - t+, t+ the smallest grid threshold at which the pooled FRR falls to the target R or
  below: the positives with s <= m+ (d >= t+) are the false rejects there (plus any pair exactly
  at t+, which TCM also counts as hard);
* the grid has a step of 1e-4, so the margins are exact to 1e-4.

Default targets bracket the calibration range: F = the pooled FAR at its upper end hi (every
negative accepted anywhere in the range is hard), R = the pooled FRR at its lower end lo (every
positive rejected anywhere in the range is hard).

Everything is counted over all pairs with the exact engine, on the evaluation's own sweep
(PooledCounts accumulators, pipeline/margins.py): positives on the whole fine grid (each row's own
class columns only, cheap), negatives on the fine grid cut above the largest threshold any
candidate needs (pairs beyond are counted from totals), with per-bin sums of distances for the
TCM loss:

  L = l+ * sum_{hard pos} (m+ - s) / #hard pos + l- * sum_{hard neg} (s - m-) / #hard neg
    = l+ * sum (d - t+) / #   +   l- * sum (t- - d) / #.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from opis_cli.statistics.calibration import FAR_RESOLUTION, _upper_edge_index, fine_edges, threshold_at_far
from opis_cli.statistics.curves import utility
from opis_cli.errors import ConfigError
from opis_cli.statistics.metrics import eps_opis, opis
from opis_cli.engine.histograms import PooledSums
from opis_cli.engine.sweep import exact_pass
from opis_cli.data.prepare import PreparedEmbeddings

CANDIDATE_FACTORS = (1 / 3, 1.0, 3.0)  # candidate targets: F and R times these
POSITIVE_SPAN = 2.001  # cosine distances reach 2 plus float32 rounding; the positive grid covers all


def _float32_exact(t: float) -> bool:
    return float(np.float32(t)) == t


def hard_edge(t: float) -> float:
    """The edge e with d > e  <=>  d >= t for float32 d (TCM's s <= m+ includes the margin)."""
    if _float32_exact(t):
        return float(np.nextafter(np.float32(t), np.float32(-np.inf)))
    return t


def _positive_edges(edges: np.ndarray) -> np.ndarray:
    # Edges on float32 values (multiples of 1/16 on a 1e-4 grid) get a companion just below, so
    # that "d >= edge" can be read off the histogram too.
    extra = [hard_edge(e) for e in edges if _float32_exact(e) and e > 0]
    return np.unique(np.r_[edges, extra])


@dataclass
class MarginFigures:
    """Hard pairs and the TCM loss at one pair of margins."""

    margin_plus: float
    margin_minus: float
    hard_positives: int
    hard_negatives: int
    n_pos: int
    n_neg: int
    positive_term: float  # mean (m+ - s) over hard positives (0 when none)
    negative_term: float  # mean (s - m-) over hard negatives

    def loss(self, lambda_plus: float, lambda_minus: float) -> float:
        return lambda_plus * self.positive_term + lambda_minus * self.negative_term


def _cum(counts: np.ndarray, edges: np.ndarray, t: float) -> tuple[int, int]:
    """(#pairs with d <= t, index of t in edges); t must be one of the edges."""
    k = int(np.searchsorted(edges, t))
    if k >= len(edges) or edges[k] != t:
        raise ConfigError(f"internal: threshold {t!r} is not on the grid")
    return int(counts[:k + 1].sum()), k


def margin_figures(pos: PooledSums, neg: PooledSums, t_plus: float, t_minus: float) -> MarginFigures:
    """Hard pairs and mean violations at m+ = 1 - t_plus, m- = 1 - t_minus (both on the grids)."""
    n_pos = int(pos.pos.sum())
    n_neg = int(neg.neg.sum())
    e_plus = hard_edge(t_plus)
    below, k = _cum(pos.pos, pos.edges, e_plus)  # d <= e_plus: not hard
    hard_p = n_pos - below
    # sum over hard positives of (d - t+): every positive lies on the positive grid (it spans the
    # whole distance range), so the per-bin sums beyond e_plus hold them all.
    sum_p = float(pos.pos_sum[k + 1:].sum()) - t_plus * hard_p
    hard_n, kn = _cum(neg.neg, neg.edges, t_minus)
    sum_n = t_minus * hard_n - float(neg.neg_sum[:kn + 1].sum())
    return MarginFigures(
        margin_plus=1.0 - t_plus, margin_minus=1.0 - t_minus, hard_positives=hard_p, hard_negatives=hard_n,
        n_pos=n_pos, n_neg=n_neg, positive_term=sum_p / hard_p if hard_p else 0.0,
        negative_term=sum_n / hard_n if hard_n else 0.0,
    )


def what_if(curves, t_plus: float, t_minus: float, beta: float, epsilon: float, contrast: str) -> tuple[float, float]:
    """OPIS and eps-OPIS if every hard pair sat exactly on its margin (the penalty's ideal outcome):
    on the calibration grid, TAR = 1 where t >= t+ and TRR = 1 where t < t-, else unchanged."""
    grid = curves.grid
    tar = np.where(grid[None, :] >= t_plus, 1.0, curves.tar)
    trr = np.where(grid[None, :] < t_minus, 1.0, curves.trr)
    u = utility(tar, trr, beta)
    return opis(u, grid).value, eps_opis(u, grid, epsilon=epsilon, contrast=contrast).value


HARD_SHARE_LIMIT = 0.5  # more than half of a side hard: TCM pushes that side wholesale, not at a margin


def margin_warnings(row: dict, current_opis: float) -> list[str]:
    """Why a pair of margins (a ``margins`` row: margins, targets, shares, what-if) is suspect.

    * m+ < m-: t+ = 1 - m+ lies above t- = 1 - m-, so no single threshold meets both targets;
      the FRR at the target FAR (threshold t-) says by how much;
    * a margin outside [-1, 1] (cosine similarities);
    * more than half of the positives (or negatives) hard;
    * a what-if OPIS (every hard pair moved onto its margin) not below the current OPIS.
    """
    out = []
    mp, mm = row["margin_plus"], row["margin_minus"]
    if mp < mm:
        out.append(f"m+ {mp:.4f} is below m- {mm:.4f}: the targets conflict, no single threshold gives pooled FAR "
                   f"<= {row['target_far']:.4g} and FRR <= {row['target_frr']:.4g}; at the FAR target (threshold "
                   f"{1 - mm:.4f}) the pooled FRR is {row['frr_at_margin_minus']:.4g}")
    for name, v in (("m+", mp), ("m-", mm)):
        if not -1.0 <= v <= 1.0:
            out.append(f"{name} {v:.4f} lies outside [-1, 1], the range of a cosine similarity")
    for side, share in (("positive", row["hard_positive_share"]), ("negative", row["hard_negative_share"])):
        if share > HARD_SHARE_LIMIT:
            out.append(f"{share:.0%} of the {side} pairs are hard (more than half): TCM would push most {side}s, "
                       f"not the few near the margin")
    if row["what_if_opis"] >= current_opis:
        out.append(f"the idealised what-if OPIS {row['what_if_opis']:.4g} is not below the current {current_opis:.4g}: "
                   "even with every hard pair on its margin these margins would not make this data more consistent")
    return out


def margin_grids(p: PreparedEmbeddings, far: float, margin_plus: float | None = None,
                 margin_minus: float | None = None, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(positive edges, negative edges) the margins' pooled sums are counted on: positives on the
    whole 1e-4 grid (a row's own class columns, cheap), negatives on the grid cut where a seeded sample puts
    the pooled FAR well above the largest candidate target (3 ``far``; pairs beyond come from
    totals), both holding any given margin's threshold as an edge."""
    full, _ = fine_edges(2.0)
    whole = fine_edges(POSITIVE_SPAN)[0]
    given_t = [] if margin_plus is None else [1.0 - margin_plus, 1.0 - margin_minus]
    pos_edges = _positive_edges(np.unique(np.r_[whole, [min(max(t, 0.0), 2.0) for t in given_t]]))
    top_far = min(1.0, max(CANDIDATE_FACTORS) * far)
    # At least two edges; with references no sample plans the cut (it covers one set): the whole grid.
    cut = max(_upper_edge_index(p, full, top_far, threads), 1) if p.reference is None else len(full) - 1
    if given_t:  # the cut grid must reach a given m- as well, every grid value below it an edge
        t_given = min(max(given_t[1], 0.0), 2.0)
        cut = max(cut, int(np.searchsorted(full, t_given)))
    neg_edges = full[:cut + 1]
    if given_t:
        neg_edges = np.unique(np.r_[neg_edges, [t_given]])
    return pos_edges, neg_edges


def check_margin_options(far: float | None, frr: float | None, margin_plus: float | None, margin_minus: float | None,
                         lambda_plus: float = 1.0, lambda_minus: float = 1.0) -> None:
    """ConfigError for targets outside (0, 1), margins outside [-1, 1] or given alone, negative
    or non-finite weights (None targets: the defaults, read from the report later)."""
    for name, v in (("--target-far", far), ("--target-frr", frr)):
        if v is None:
            continue
        if not (0.0 < v < 1.0) or math.isnan(v):
            raise ConfigError(f"{name} must lie in (0, 1), got {v:g}")
    for name, v in (("--margin-plus", margin_plus), ("--margin-minus", margin_minus)):
        if v is not None and not -1.0 <= v <= 1.0:
            raise ConfigError(f"{name} is a cosine similarity in [-1, 1], got {v:g}")
    if (margin_plus is None) != (margin_minus is None):
        raise ConfigError("give both --margin-plus and --margin-minus, or neither")
    for name, v in (("--lambda-plus", lambda_plus), ("--lambda-minus", lambda_minus)):
        if not (v >= 0 and math.isfinite(v)):
            raise ConfigError(f"{name} must be a non-negative number, got {v:g}")


def margins_section(
    p: PreparedEmbeddings,
    report,
    *,
    target_far: float | None = None,
    target_frr: float | None = None,
    margin_plus: float | None = None,
    margin_minus: float | None = None,
    lambda_plus: float = 1.0,
    lambda_minus: float = 1.0,
    memory_budget: int = 1 << 30,
    threads: int | None = None,
    progress=None,
    sums: tuple[PooledSums, PooledSums] | None = None,
    recount: Callable[[np.ndarray], PooledSums] | None = None,
) -> dict:
    """The report's ``margins`` section: the margins at the targets (``recommended``; and given
    ones), what they mean in pooled rates, hard pairs pooled and per class, TCM loss, a candidate
    table, the idealised what-if and ``warnings`` (:func:`margin_warnings`; docs/margins.md).

    m- = 1 - t-, t- the smallest 1e-4 grid threshold with pooled FAR >= target_far;
    m+ = 1 - t+, t+ the smallest with pooled FRR <= target_frr. hard_negative_share = FAR(t-),
    hard_positive_share = FRR(t+) (plus pairs exactly at t+), frr_at_margin_minus = FRR(t-).

    ``report`` is the :class:`~opis_cli.report.report.Report` of the same embeddings (its curves give the
    what-if and its calibration range the default targets). ``sums``: (positive, negative) pooled
    sums counted on the main sweep on the grids of :func:`margin_grids`; ``recount(edges)`` counts
    the negatives again on a longer grid, should the planned cut prove too low (without ``sums``
    both are counted here, each a pass of its own).
    """
    if p.metric != "cosine":
        raise ConfigError("TCM margins are cosine similarities: use --metric cosine")
    far = report.far_at_hi if target_far is None else float(target_far)
    frr = (1.0 - report.tar_at_lo) if target_frr is None else float(target_frr)
    cal = report.calibration
    for given, value, option, where in ((target_far, far, "--target-far", f"the pooled FAR at hi = {cal.hi:g}"),
                                        (target_frr, frr, "--target-frr", f"the pooled FRR at lo = {cal.lo:g}")):
        if given is None and not 0.0 < value < 1.0:
            raise ConfigError(f"the default {option}, {where}, is {value:g}: a margin needs a target strictly between "
                              f"0 and 1; pass {option} or a calibration range where pairs lie on both sides")
    check_margin_options(far, frr, margin_plus, margin_minus, lambda_plus, lambda_minus)
    full, _ = fine_edges(2.0)
    given_t = [] if margin_plus is None else [1.0 - margin_plus, 1.0 - margin_minus]
    stage = (lambda name: (lambda done, total: progress(name, done, total))) if progress else (lambda name: None)
    top_far = min(1.0, max(CANDIDATE_FACTORS) * far)
    if sums is None:
        from opis_cli.engine.accumulators import PooledCounts
        from opis_cli.engine.sweep import sweep

        def count(edges, name, **kind):
            return sweep(p, [PooledCounts(edges, with_sums=True, **kind)], memory_budget=memory_budget, threads=threads,
                         progress=stage(name)).results[0]

        pos_edges, neg_edges = margin_grids(p, far, margin_plus, margin_minus, threads)
        sums = (count(pos_edges, "margins: positive pairs", positives_only=True), count(neg_edges, "margins: all pairs"))
        recount = recount or (lambda edges: count(edges, "margins: all pairs"))
    pos, neg = sums
    if not neg.neg[:-1].sum() >= top_far * neg.neg.sum():
        # The planned cut fell short of the largest candidate FAR: count again on the whole grid.
        neg = recount(np.unique(np.r_[full, neg.edges]))

    # Margins are read on the 1e-4 grid only (the extra edges serve counting, not choosing).
    neg_on_grid = _grid_counts(full, neg.edges, neg.neg)
    pos_on_grid = _grid_counts(full, pos.edges, pos.pos)

    def thresholds(f: float, r: float) -> tuple[float, float]:
        return threshold_at_far(full, pos_on_grid, 1.0 - r), threshold_at_far(full, neg_on_grid, f)

    config = report.config

    pos_accepted = np.cumsum(pos_on_grid[:-1])
    n_pos_all = int(pos_on_grid.sum())

    def frr_at(t: float) -> float:
        # Positives cover the whole grid, so FRR at any grid threshold is exact.
        k = min(int(np.searchsorted(full, min(max(t, 0.0), 2.0))), len(full) - 1)
        return 1.0 - float(pos_accepted[k]) / n_pos_all if n_pos_all else 0.0

    def row(t_plus: float, t_minus: float) -> dict:
        fig = margin_figures(pos, neg, t_plus, t_minus)
        o, e = what_if(report.curves, t_plus, t_minus, config.beta, config.epsilon, config.eps_contrast)
        return {
            "margin_plus": round(fig.margin_plus, 4), "margin_minus": round(fig.margin_minus, 4),
            "frr_at_margin_minus": frr_at(t_minus),
            "hard_positives": fig.hard_positives, "hard_positive_share": fig.hard_positives / max(1, fig.n_pos),
            "hard_negatives": fig.hard_negatives, "hard_negative_share": fig.hard_negatives / max(1, fig.n_neg),
            "tcm_loss": fig.loss(lambda_plus, lambda_minus),
            "tcm_positive_term": fig.positive_term, "tcm_negative_term": fig.negative_term,
            "what_if_opis": o, "what_if_eps_opis": e,
        }

    t_plus, t_minus = thresholds(far, frr)
    recommended = {"target_far": far, "target_frr": frr, **row(t_plus, t_minus)}
    recommended["margin_plus"] = round(1.0 - t_plus, 4)
    recommended["margin_minus"] = round(1.0 - t_minus, 4)
    recommended["explanation"] = [
        f"m- = {1.0 - t_minus:.4f}: negatives at or above this similarity are hard; they are exactly the false "
        f"accepts at threshold {t_minus:.4f}, where the pooled FAR first reaches {far:.4g} "
        f"({recommended['hard_negative_share']:.2%} of the negative pairs).",
        f"m+ = {1.0 - t_plus:.4f}: positives at or below this similarity are hard; they are the false rejects at "
        f"threshold {t_plus:.4f}, where the pooled FRR first falls to {frr:.4g} or below "
        f"({recommended['hard_positive_share']:.2%} of the positive pairs).",
    ]
    recommended["warnings"] = margin_warnings(recommended, report.opis)
    candidates = []
    for a in CANDIDATE_FACTORS:
        for b in CANDIDATE_FACTORS:
            f, r = min(far * a, 0.999), min(frr * b, 0.999)
            tp, tm = thresholds(f, r)
            cand = {"target_far": f, "target_frr": r, **row(tp, tm)}
            candidates.append({**cand, "conflict": cand["margin_plus"] < cand["margin_minus"]})
    section = {
        "lambda_plus": lambda_plus, "lambda_minus": lambda_minus, "resolution": FAR_RESOLUTION,
        "recommended": recommended, "candidates": candidates,
        "what_if_note": "idealised: OPIS and eps-OPIS if every hard pair sat exactly on its margin (not a "
                        "prediction of training; docs/tcm.md)",
    }
    chosen = (1.0 - margin_plus, 1.0 - margin_minus) if given_t else (t_plus, t_minus)
    if given_t:
        given = {**row(*chosen), "margin_plus": margin_plus, "margin_minus": margin_minus, "target_far": far,
                 "target_frr": frr}
        given["warnings"] = [w for w in margin_warnings(given, report.opis) if "targets conflict" not in w]
        if margin_plus < margin_minus:
            given["warnings"].insert(0, f"m+ {margin_plus:.4f} is below m- {margin_minus:.4f}: a pair can be hard as a "
                                        "positive and as a negative at once; no threshold separates the two margins")
        section["given"] = given
    section["classes"] = _per_class(p, report, *chosen, memory_budget=memory_budget, threads=threads,
                                    progress=stage("margins: hard pairs per class"))
    return section


def _grid_counts(grid: np.ndarray, edges: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Counts per bin of ``grid`` (+ overflow) from counts on ``edges``, which hold every grid value
    up to their end; grid values past the end get no pairs (the pass cut them off)."""
    cum = np.cumsum(counts[:-1])
    k = np.searchsorted(edges, grid)
    inside = k < len(edges)
    if not np.array_equal(edges[k[inside]], grid[inside]):
        raise ValueError("grid values must be edges")
    at = np.where(inside, cum[np.minimum(k, len(edges) - 1)], cum[-1])
    per_bin = np.diff(np.r_[0, at])
    return np.r_[per_bin, counts.sum() - per_bin.sum()]


def _per_class(p, report, t_plus, t_minus, *, memory_budget, threads, progress) -> list[dict]:
    """Which classes own the hard pairs: per used class, hard positives and hard negatives."""
    e_plus = hard_edge(t_plus)
    edges = np.unique([e_plus, t_minus])
    hist = exact_pass(p, edges, per_class=True, memory_budget=memory_budget, threads=threads,
                      progress=progress).histograms
    k_plus = int(np.searchsorted(edges, e_plus))
    k_minus = int(np.searchsorted(edges, t_minus))
    hard_pos = hist.pos[:, k_plus + 1:].sum(axis=1)
    hard_neg = hist.neg[:, :k_minus + 1].sum(axis=1)
    out = []
    for row, c in enumerate(report.curves.classes):
        n_pos, n_neg = int(report.curves.n_pos[row]), int(report.curves.n_neg[row])
        out.append({"label": report.labels[row], "hard_positives": int(hard_pos[c]),
                    "hard_positive_share": int(hard_pos[c]) / n_pos if n_pos else 0.0,
                    "hard_negatives": int(hard_neg[c]),
                    "hard_negative_share": int(hard_neg[c]) / n_neg if n_neg else 0.0})
    return out
