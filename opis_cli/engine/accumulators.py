"""Accumulators: what one sweep over all pairs collects, each from the same panels.

An accumulator is a spec (its grid, its keys) plus a state that grows only by addition (counts,
sums) or minima (Recall@k candidates). The sweep driver (sweep.py) calls, per process:

* ``check_memory(p, n_threads, memory_budget)`` before anything is allocated;
* ``start(p, ctx)``: allocate the zero state;
* ``consume(panel, ctx)``: add one panel (its kernel reads the panel while it is in cache);
* ``merge(other)``: add another partial state (Dask tasks, any order);
* ``finish(p, ctx)``: once, the overflow bins from totals (histograms.with_overflow) and the result.

So every exact statistic, per-class counts with Recall@k, pooled counts, group counts, distance
sums for the TCM loss, whole-span distance distributions, rides on one pass of matrix products.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from opis_cli.data.prepare import PreparedEmbeddings
from opis_cli.engine.binning import ThresholdBins
from opis_cli.engine.histograms import (GroupHistograms, PairHistograms, PooledHistogram, PooledSums, group_totals,
                                        with_overflow)
from opis_cli.engine.neighbours import NeighbourState, k_smallest
from opis_cli.memory import RESULT_ARRAYS, require


@dataclass
class SweepContext:
    """What every consumer needs besides the panel: the metric as the kernels take it, threads."""

    metric: int
    sq: np.ndarray  # squared norms (read for raw l2 only)
    codes: np.ndarray  # class code of each prepared row
    n_threads: int
    memory_budget: int
    col_sq: np.ndarray = None  # the columns' (the references' in query/reference mode; else sq)
    col_codes: np.ndarray = None

    @classmethod
    def of(cls, p: PreparedEmbeddings, n_threads: int, memory_budget: int) -> "SweepContext":
        from opis_cli.engine import kernels

        metric, sq = kernels.metric_arguments(p)
        _, col_sq = kernels.metric_arguments(p.columns)
        return cls(metric, sq, p.codes, n_threads, memory_budget, col_sq, p.columns.codes)


class Accumulator:
    """Base: a spec whose state is allocated by :meth:`start` (so an unstarted copy travels to a
    Dask worker without its arrays)."""

    started = False

    def fresh(self) -> "Accumulator":
        """An unstarted copy of the spec."""
        out = copy.copy(self)
        out.started = False
        return out

    def check_memory(self, p: PreparedEmbeddings, n_threads: int, memory_budget: int) -> None:
        """Refuse before allocating what would not fit (default: state too small to matter)."""

    def start(self, p: PreparedEmbeddings, ctx: SweepContext) -> None:
        self.started = True

    def consume(self, panel, ctx: SweepContext) -> None:
        raise NotImplementedError

    def merge(self, other: "Accumulator") -> "Accumulator":
        raise NotImplementedError

    def finish(self, p: PreparedEmbeddings, ctx: SweepContext):
        raise NotImplementedError


class GridAccumulator(Accumulator):
    """An accumulator on a threshold grid (float64 edges; the kernels bin exactly)."""

    def __init__(self, edges) -> None:
        self.edges = np.asarray(edges, np.float64)
        self.e0, self.inv, self.upper = ThresholdBins(self.edges).kernel_arguments()

    @property
    def t(self) -> int:
        return self.edges.size

    def start(self, p: PreparedEmbeddings, ctx: SweepContext) -> None:
        from opis_cli.engine.kernels import similarity_floor

        super().start(p, ctx)
        self.s_min = similarity_floor(ctx.metric, self.upper[-1])


@dataclass
class ClassCountsResult:
    histograms: PairHistograms
    neighbours: NeighbourState | None


class ClassCounts(GridAccumulator):
    """Per class c and grid bin: anchored pairs (an end in c; both ends in c count twice) and
    positives; neg = anchored - 2 pos. With ``kmax``: every item's Recall@k candidates."""

    def __init__(self, edges, kmax: int = 0, *, advice: str | None = None) -> None:
        super().__init__(edges)
        self.kmax = kmax
        # What to tell a user whose grid does not fit (default: the --thresholds grid).
        self.advice = advice

    def check_memory(self, p, n_threads, memory_budget) -> None:
        from opis_cli.engine.panels import panel_shape

        cells = self.t + 1
        rows, cols = panel_shape(p.n, memory_budget)
        # Per panel each thread keeps 3 x (classes in the panel) x (T + 1) int64 cells.
        block = n_threads * (2 * min(p.n_classes, rows) + min(p.n_classes, cols)) * cells * 8
        # The budget sizes the panels; histogram room below the CLI's 16 MiB minimum is not
        # refused (a tiny library budget only forces many small panels).
        lower = self.advice or f"lower --thresholds ({self.t:,} grid values here)"
        require(block, what=f"a pass over {self.t:,} thresholds", budget=max(memory_budget, 16 << 20),
                advice=f"{lower} or raise --memory-budget")
        require(RESULT_ARRAYS * p.n_classes * cells * 8,
                what=f"per-class counts and curves on {self.t:,} thresholds for {p.n_classes:,} classes",
                advice=lower)

    def start(self, p, ctx) -> None:
        super().start(p, ctx)
        self.anchored = np.zeros((p.n_classes, self.t), np.int64)
        self.pos = np.zeros((p.n_classes, self.t), np.int64)
        self.neighbours = NeighbourState.empty(p.n, self.kmax) if self.kmax else None

    def consume(self, pn, ctx) -> None:
        from opis_cli.engine import kernels

        codes = ctx.codes
        t, nt, kmax, kk = self.t, ctx.n_threads, self.kmax, max(self.kmax, 1)
        m, n = pn.g.shape
        rc, cc = codes[pn.i0:pn.i1], ctx.col_codes[pn.j0:pn.j1]
        r0, c0 = int(rc[0]), int(cc[0])
        nr, nc = int(rc[-1]) - r0 + 1, int(cc[-1]) - c0 + 1
        row_hist = np.zeros((nt, nr * t), np.int64)
        col_hist = np.zeros((nt, nc * t), np.int64)
        pos_hist = np.zeros((nt, nr * t), np.int64)
        row_same = np.full((m, 1), np.inf, np.float32)
        row_other = np.full((m, kk), np.inf, np.float32)
        # Column candidates: (threads, n, k) for k > 1, contiguous (threads, n) for k == 1.
        wide = n if kmax > 1 else 0
        col_same = np.full((nt, wide, 1), np.inf, np.float32)
        col_other = np.full((nt, wide, kk), np.inf, np.float32)
        col_min_same = np.full((nt, n if kmax == 1 else 0), np.inf, np.float32)
        col_min_other = np.full((nt, n if kmax == 1 else 0), np.inf, np.float32)
        kernels.block_counts(pn.g, (rc - r0) * t, (cc - c0) * t, pn.same_lo, pn.same_hi, pn.diagonal, ctx.metric,
                             self.s_min, ctx.sq[pn.i0:pn.i1], ctx.col_sq[pn.j0:pn.j1], self.e0, self.inv, self.upper,
                             nt, row_hist, col_hist, pos_hist, kmax, row_same, row_other, col_same, col_other,
                             col_min_same, col_min_other)
        self.anchored[r0:r0 + nr] += row_hist.sum(axis=0).reshape(nr, t)
        self.anchored[c0:c0 + nc] += col_hist.sum(axis=0).reshape(nc, t)
        self.pos[r0:r0 + nr] += pos_hist.sum(axis=0).reshape(nr, t)
        if kmax:
            self.neighbours.update(pn.i0, row_same[:, 0], row_other)
        if not pn.square:
            return  # the columns are references, not queries: no candidates of theirs to keep
        if kmax == 1:
            self.neighbours.update(pn.j0, col_min_same.min(axis=0), col_min_other.min(axis=0)[:, None])
        elif kmax > 1:
            col_best = col_other[0]
            for th in range(1, nt):
                col_best = k_smallest(np.concatenate([col_best, col_other[th]], axis=1), kmax, axis=1)
            self.neighbours.update(pn.j0, col_same.min(axis=0)[:, 0], col_best)

    def merge(self, other: "ClassCounts") -> "ClassCounts":
        self.anchored += other.anchored
        self.pos += other.pos
        if self.neighbours is not None:
            self.neighbours.update(0, other.neighbours.same, other.neighbours.other)
        return self

    def finish(self, p, ctx) -> ClassCountsResult:
        if self.kmax == 1:
            resolve_far_neighbours(p, self.neighbours, self.upper[-1], ctx.memory_budget)
        pos = with_overflow(self.pos, p.positive_totals(), "positive pairs per class")
        anchored = with_overflow(self.anchored, p.anchored_totals(), "pairs per class")
        return ClassCountsResult(PairHistograms(self.edges, pos, anchored - 2 * pos), self.neighbours)


class PooledCounts(GridAccumulator):
    """All pairs and positive pairs per grid bin, pooled over classes; ``with_sums``: also the
    per-bin sums of distances (:class:`PooledSums`); ``positives_only``: positive pairs only (a
    cheap within-class look, e.g. on the whole distance span)."""

    def __init__(self, edges, *, with_sums: bool = False, positives_only: bool = False) -> None:
        super().__init__(edges)
        self.with_sums, self.positives_only = with_sums, positives_only

    def check_memory(self, p, n_threads, memory_budget) -> None:
        # A few pooled rows per thread: never panel-sized, checked against the machine only.
        require(2 * (n_threads + 1) * (self.t + 1) * (16 if self.with_sums else 8),
                what=f"pooled counts on {self.t:,} thresholds", advice="lower the number of thresholds")

    def start(self, p, ctx) -> None:
        super().start(p, ctx)
        self.counts = np.zeros((2, self.t), np.int64)  # all, positive
        self.sums = np.zeros((2, self.t if self.with_sums else 1), np.float64)

    def consume(self, pn, ctx) -> None:
        from opis_cli.engine import kernels

        nt = ctx.n_threads
        hist = np.zeros((2, nt, self.t), np.int64)
        sums = np.zeros((2, nt, self.sums.shape[1]), np.float64)
        kernels.block_pooled_counts(pn.g, pn.same_lo, pn.same_hi, pn.diagonal, ctx.metric, self.s_min,
                                    ctx.sq[pn.i0:pn.i1], ctx.col_sq[pn.j0:pn.j1], self.e0, self.inv, self.upper, nt,
                                    hist[0], hist[1], sums[0], sums[1], self.with_sums, self.positives_only)
        self.counts += hist.sum(axis=1)
        self.sums += sums.sum(axis=1)

    def merge(self, other: "PooledCounts") -> "PooledCounts":
        self.counts += other.counts
        self.sums += other.sums
        return self

    def finish(self, p, ctx) -> PooledHistogram | PooledSums:
        n_pos = int(p.positive_totals().sum())
        n_all = n_pos if self.positives_only else p.pair_count
        pos = with_overflow(self.counts[1], n_pos, "pooled positive pairs")
        if self.positives_only:
            neg = np.zeros(self.t + 1, np.int64)
        else:
            neg = with_overflow(self.counts[0] - self.counts[1], n_all - n_pos, "pooled negative pairs")
        if not self.with_sums:
            return PooledHistogram(self.edges, pos, neg)
        return PooledSums(self.edges, pos, neg, pos_sum=self.sums[1], neg_sum=self.sums[0] - self.sums[1])


class GroupCounts(GridAccumulator):
    """Per group g (a second key on the items): the pairs with an end in g, positives and
    negatives per grid bin (analyses/groups.py); ``group_codes`` in the prepared (class) order."""

    def __init__(self, edges, group_codes: np.ndarray, n_groups: int) -> None:
        super().__init__(edges)
        self.group_codes = np.asarray(group_codes, np.int64)
        self.n_groups = n_groups

    def check_memory(self, p, n_threads, memory_budget) -> None:
        cells = self.n_groups * (self.t + 1) * 8
        require(2 * n_threads * cells, what=f"group counts for {self.n_groups:,} groups", budget=max(memory_budget, 16 << 20),
                advice="raise --memory-budget or lower --thresholds")

    def start(self, p, ctx) -> None:
        super().start(p, ctx)
        self.offsets = self.group_codes * self.t
        self.pos = np.zeros(self.n_groups * self.t, np.int64)
        self.neg = np.zeros(self.n_groups * self.t, np.int64)

    def consume(self, pn, ctx) -> None:
        from opis_cli.engine import kernels

        nt = ctx.n_threads
        ph = np.zeros((nt, self.pos.size), np.int64)
        nh = np.zeros((nt, self.neg.size), np.int64)
        kernels.block_group_counts(pn.g, self.offsets[pn.i0:pn.i1], self.offsets[pn.j0:pn.j1], pn.same_lo, pn.same_hi,
                                   pn.diagonal, ctx.metric, self.s_min, ctx.sq[pn.i0:pn.i1], ctx.col_sq[pn.j0:pn.j1],
                                   self.e0, self.inv, self.upper, nt, ph, nh)
        self.pos += ph.sum(axis=0)
        self.neg += nh.sum(axis=0)

    def merge(self, other: "GroupCounts") -> "GroupCounts":
        self.pos += other.pos
        self.neg += other.neg
        return self

    def finish(self, p, ctx) -> GroupHistograms:
        n_pos, n_neg = group_totals(p.codes, self.group_codes, self.n_groups)
        pos = with_overflow(self.pos.reshape(self.n_groups, self.t), n_pos, "positive pairs per group")
        neg = with_overflow(self.neg.reshape(self.n_groups, self.t), n_neg, "negative pairs per group")
        return GroupHistograms(self.edges, pos, neg, n_pos, n_neg)


def resolve_far_neighbours(p: PreparedEmbeddings, neighbours: NeighbourState, hi: float, memory_budget: int) -> None:
    """Complete Recall@1 minima that the fused kernel leaves at +inf (it only looks at pairs
    with d <= hi, the last threshold; kernels.block_counts), in place:

    * ``same[i]`` for every item of a class with two or more members, exactly (one matrix product
      of the item against its own class);
    * ``other[i]`` where no other-label item is within hi and the nearest same-label item is not
      either (the only case where the query's outcome depends on it), exactly, against all items.

    Afterwards ``same`` is exact and ``other[i]`` is exact or +inf with a hit either way
    (the nearest same-label item within hi, no other-label item there), so hits(1) is exact.
    """
    from opis_cli.engine import kernels

    cols = p.columns  # the references in query/reference mode: the database a query searches
    metric, sq = kernels.metric_arguments(p)
    _, csq = kernels.metric_arguments(cols)
    bounds, own = cols.class_bounds, p.class_bounds
    queries = p.relevant_counts() > 0
    same, other = neighbours.same, neighbours.other[:, 0]
    missing = np.flatnonzero(np.isinf(same) & queries)
    for c in np.unique(p.codes[missing]):
        s, e = int(bounds[c]), int(bounds[c + 1])
        rows = missing[(missing >= own[c]) & (missing < own[c + 1])]
        step = max(1, memory_budget // (8 * (e - s)))  # a products block stays within the budget
        for r0 in range(0, rows.size, step):
            r = rows[r0:r0 + step]
            out = same[r].copy()
            # The query itself is not its own neighbour (masked); a reference is never the query.
            lo, hi_ = (r - s, r - s + 1) if p.reference is None else (np.zeros_like(r), np.zeros_like(r))
            kernels.masked_row_minima(p.x[r] @ cols.x[s:e].T, metric, sq[r], csq[s:e], lo, hi_, out)
            same[r] = out
    need = np.flatnonzero(np.isinf(other) & (same > hi) & queries)
    step = max(1, memory_budget // (8 * cols.n))
    for r0 in range(0, need.size, step):
        r = need[r0:r0 + step]
        out = other[r].copy()
        kernels.masked_row_minima(p.x[r] @ cols.x.T, metric, sq[r], csq, bounds[p.codes[r]], bounds[p.codes[r] + 1],
                                  out)
        other[r] = out
