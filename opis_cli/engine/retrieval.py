"""Exact MAP@R and R-precision (docs/definitions.md, "Retrieval metrics") on the one sweep.

For a query q of class c, R_q = n_c - 1 (all other items are references), or with --reference
R_q = the references of class c (only the rows are queries; the columns are never ranked). Ranking q's references
by distance, a positive's rank is 1 + (positives before it) + (negatives before it). So:

1. **Positives first** (:func:`positive_lists`): every query's R_q positive distances, sorted, from
   its class's block of products (sum over classes of n_c^2 D operations: small beside the sweep).
2. **Negatives on the sweep** (:class:`RetrievalCounts`): each negative pair (q, k) with d within
   q's cutoff falls in the bucket #{positives of q closer than d}. Ties: a negative at a
   positive's distance ranks before it (against the query, as Recall@k). The cutoff starts at q's
   farthest positive and tightens to the first positive p_k at which the positives up to it and
   the negatives counted before them reach R_q (no reference beyond p_k can be among the first
   R_q). A state's cutoff is never below the one all the counts would give, so every negative
   that decides a rank is counted by whichever state sees it, and states (Dask tasks) merge by
   addition; which other negatives were counted depends on the order, no figure does.
3. **Finish**: rank_i = i + 1 + (negatives in buckets 0..i), AP@R_q = (1/R_q) sum over positives
   with rank_i <= R_q of (i + 1) / rank_i, R-precision_q = #{i : rank_i <= R_q} / R_q.

Memory: sorted positives (4 bytes), buckets (8 bytes) and finish temporaries (8 bytes) per
(query, positive) pair, plus 24 N, with per-thread column buckets per panel; checked against
--memory-budget before anything is allocated. The positives'
distances come from their class's product and the negatives' from the sweep's panels: the same
formula, but two matrix products may round a distance differently in the last float32 bit, so a
negative within one rounding step of a positive may rank on either side of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opis_cli.data.prepare import PreparedEmbeddings
from opis_cli.engine.accumulators import Accumulator
from opis_cli.engine.panels import panel_shape
from opis_cli.memory import gib, require

BYTES_PER_POSITIVE = 4 + 8 + 8  # sorted distance, bucket count, finish temporaries


@dataclass
class PositiveLists:
    """Each prepared row's positives, ascending: ``dist[poff[i]:poff[i + 1]]``; ``cut[i]`` = the
    farthest (-inf for a row without positives: not a query); bucket offsets ``coff`` (R_i + 1
    buckets per row)."""

    dist: np.ndarray
    poff: np.ndarray
    coff: np.ndarray
    cut: np.ndarray


def _offsets(p: PreparedEmbeddings) -> tuple[np.ndarray, np.ndarray]:
    r = p.relevant_counts()
    poff = np.zeros(p.n + 1, np.int64)
    np.cumsum(r, out=poff[1:])
    coff = poff + np.arange(p.n + 1, dtype=np.int64)
    return poff, coff


def retrieval_bytes(p: PreparedEmbeddings) -> int:
    """Bytes of the positives, buckets and results: BYTES_PER_POSITIVE x sum_q R_q + 24 N."""
    return int(BYTES_PER_POSITIVE * p.relevant_counts().sum() + 24 * p.n)


def check_retrieval_memory(p: PreparedEmbeddings, memory_budget: int) -> None:
    """Refuse (ConfigError) state beyond --memory-budget (16 MiB at least: a tiny library budget
    only shrinks panels) or the machine: it grows with the sum of squared class sizes."""
    need = retrieval_bytes(p)
    require(need, what=f"exact MAP@R over {p.n:,} queries ({gib(need)} of sorted positives and counts)",
            budget=max(memory_budget, 16 << 20),
            advice="raise --memory-budget, or drop --retrieval (its memory grows with the sum of squared class sizes)")


def positive_lists(p: PreparedEmbeddings, memory_budget: int) -> PositiveLists:
    """Every row's sorted positive distances, computed by class block (rows in chunks within the
    budget) with the kernels' distance formula."""
    from opis_cli.engine import kernels
    from opis_cli.engine.retrieval_kernels import pair_distances

    cols = p.columns
    metric, sq = kernels.metric_arguments(p)
    _, csq = kernels.metric_arguments(cols)
    poff, coff = _offsets(p)
    dist = np.empty(int(poff[-1]), np.float32)
    cut = np.full(p.n, -np.inf, np.float32)
    own, bounds = p.class_bounds, cols.class_bounds
    square = p.reference is None
    for c in np.flatnonzero(np.diff(own) * np.diff(bounds) > 0):
        s, e = int(bounds[c]), int(bounds[c + 1])
        if square and e - s < 2:
            continue
        step = max(1, memory_budget // (16 * (e - s)))  # products, distances, mask, sorted copy
        for r0 in range(int(own[c]), int(own[c + 1]), step):
            r1 = min(int(own[c + 1]), r0 + step)
            d = np.empty((r1 - r0, e - s), np.float32)
            pair_distances(p.x[r0:r1] @ cols.x[s:e].T, metric, sq[r0:r1], csq[s:e], d)
            if square:  # not the query itself
                keep = np.ones_like(d, dtype=bool)
                keep[np.arange(r1 - r0), np.arange(r0, r1) - s] = False
                d = d[keep].reshape(r1 - r0, e - s - 1)
            rows = np.sort(d, axis=1)
            dist[poff[r0]:poff[r1]] = rows.reshape(-1)
            cut[r0:r1] = rows[:, -1]
    return PositiveLists(dist, poff, coff, cut)


@dataclass
class RetrievalResult:
    """Per prepared row: AP@R and R-precision (NaN for rows that are not queries)."""

    average_precision: np.ndarray
    r_precision: np.ndarray


class RetrievalCounts(Accumulator):
    """Per query, the negatives before each of its positives (module docstring)."""

    def __init__(self, positives: PositiveLists) -> None:
        self.positives = positives

    def check_memory(self, p, n_threads, memory_budget) -> None:
        check_retrieval_memory(p, memory_budget)
        _, cols = panel_shape(p.n, memory_budget)
        coff = self.positives.coff
        widest = int((coff[np.minimum(np.arange(p.n) + cols, p.n)] - coff[:p.n]).max(initial=0)) if p.reference is None else 0
        require(8 * n_threads * widest, what="per-thread MAP@R counts of a panel's columns",
                budget=max(memory_budget, 16 << 20), advice="raise --memory-budget or drop --retrieval")

    def start(self, p, ctx) -> None:
        super().start(p, ctx)
        self.counts = np.zeros(int(self.positives.coff[-1]), np.int64)
        self.cut = self.positives.cut.copy()  # tightened as counts grow: this state's own

    def consume(self, pn, ctx) -> None:
        from opis_cli.engine.retrieval_kernels import block_retrieval, tighten_cutoffs

        pl, cut = self.positives, self.cut
        n = pn.j1 - pn.j0
        if pn.square:
            col_cut, col_poff, col_coff = cut[pn.j0:pn.j1], pl.poff[pn.j0:pn.j1 + 1], pl.coff[pn.j0:pn.j1]
        else:  # the columns are references: they rank nothing
            col_cut, col_poff, col_coff = np.full(n, -np.inf, np.float32), np.zeros(n + 1, np.int64), np.zeros(n, np.int64)
        col_max = float(col_cut.max())
        if col_max == -np.inf and float(cut[pn.i0:pn.i1].max()) == -np.inf:
            return
        c0, c1 = (int(pl.coff[pn.j0]), int(pl.coff[pn.j1])) if pn.square else (0, 1)
        col_counts = np.zeros((ctx.n_threads, c1 - c0), np.int64)
        block_retrieval(pn.g, pn.same_lo, pn.same_hi, pn.diagonal, ctx.metric, ctx.sq[pn.i0:pn.i1],
                        ctx.col_sq[pn.j0:pn.j1], cut[pn.i0:pn.i1], col_cut, np.float32(col_max), pl.dist,
                        pl.poff[pn.i0:pn.i1 + 1], col_poff, pl.coff[pn.i0:pn.i1], col_coff - c0, ctx.n_threads,
                        self.counts, col_counts)
        if pn.square:
            self.counts[c0:c1] += col_counts.sum(axis=0)
            tighten_cutoffs(self.counts, pl.coff, pl.poff, pl.dist, cut, pn.j0, pn.j1)

    def merge(self, other: "RetrievalCounts") -> "RetrievalCounts":
        self.counts += other.counts
        return self

    def finish(self, p, ctx) -> RetrievalResult:
        from opis_cli.engine.retrieval_kernels import average_precisions

        ap = np.full(p.n, np.nan)
        rp = np.full(p.n, np.nan)
        average_precisions(self.counts, self.positives.coff, self.positives.poff, ap, rp)
        return RetrievalResult(ap, rp)
