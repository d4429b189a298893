"""The exact pair engine: every unordered pair visited once, in blocks, into mergeable counts.

Rows are grouped by class (prepare.py), so a class's positive pairs are a few rectangles of the
pair matrix. Two interchangeable paths compute the same integer counts:

* the fused path (default): row panels of the upper triangle, each a float32 matrix product into
  a preallocated, cache-resident buffer, swept once by the numba kernel (kernels.py);
* the numpy reference path: square tiles processed by :func:`block_statistics` in array passes;
  slower, independent, and the kernel's oracle in the tests.

Both produce, per class c and bin b of the threshold grid, ``anchored[c, b]`` (pairs with an end
in c; a pair with both ends in c counts twice) and ``pos[c, b]``; then ``neg = anchored - 2 pos``.
Counts are int64 and add up across blocks in any order, on any machine. The overflow bin
(d > t_T) is reconstructed from the known per-class totals (:func:`_finalize`). Recall@k
candidates come from the same distances. Nothing allocates N x N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .binning import ThresholdBins
from .distance import gram_to_distance
from .neighbours import NeighbourState, k_smallest
from .prepare import PreparedEmbeddings

# Bytes of work memory per element of a block: inner products / distances (4), bins (8),
# bincount keys (8), scratch (4), flags (1), triangle mask (1), partition copy for k > 1 (4).
BYTES_PER_BLOCK_ELEMENT = 30
TILE_GRANULE = 8  # tile sides are multiples of this (tiny budgets give tiny tiles: tests use that)

ProgressCallback = Callable[[int, int], None]


@dataclass
class PairHistograms:
    """Per-class histograms of positive and negative pair distances on a threshold grid.

    ``pos[c, b]`` / ``neg[c, b]`` count the pairs of P_c / N_c (definitions.md) whose distance
    falls in bin ``b`` of ``edges`` (bin 0: d <= edges[0]; bin k: edges[k-1] < d <= edges[k];
    last bin: d > edges[-1]). Integer counts: histograms of disjoint pair sets add up.
    """

    edges: np.ndarray  # (T,) float64
    pos: np.ndarray  # (C, T + 1) int64
    neg: np.ndarray  # (C, T + 1) int64

    def __add__(self, other: "PairHistograms") -> "PairHistograms":
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("cannot add histograms on different threshold grids")
        return PairHistograms(self.edges, self.pos + other.pos, self.neg + other.neg)

    def on_edges(self, edges: np.ndarray) -> "PairHistograms":
        """The same counts on a coarser grid whose edges are a subset of these (exact: a bin of the
        coarse grid is a run of fine bins)."""
        edges = np.asarray(edges, np.float64)
        idx = np.searchsorted(self.edges, edges)
        if idx.max(initial=0) >= len(self.edges) or not np.array_equal(self.edges[idx], edges):
            raise ValueError("the new edges must be a subset of the histogram's edges")

        def coarse(counts: np.ndarray) -> np.ndarray:
            cum = np.cumsum(counts, axis=1)
            at = cum[:, idx]
            return np.concatenate([at[:, :1], np.diff(at, axis=1), (cum[:, -1] - at[:, -1])[:, None]], axis=1)

        return PairHistograms(edges, coarse(self.pos), coarse(self.neg))

    def pooled(self) -> "PooledHistogram":
        """All positive pairs and all negative pairs, each counted once (a negative pair
        belongs to two classes' N_c, so the per-class sum counts it twice)."""
        neg = self.neg.sum(axis=0)
        neg = neg // 2 if np.issubdtype(neg.dtype, np.integer) else neg / 2
        return PooledHistogram(self.edges, self.pos.sum(axis=0), neg)


@dataclass
class PooledHistogram:
    """Histograms of all positive and all negative pair distances on a grid (bins as above)."""

    edges: np.ndarray  # (T,)
    pos: np.ndarray  # (T + 1,) int64
    neg: np.ndarray  # (T + 1,) int64

    def __add__(self, other: "PooledHistogram") -> "PooledHistogram":
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("cannot add histograms on different threshold grids")
        return PooledHistogram(self.edges, self.pos + other.pos, self.neg + other.neg)


@dataclass
class BlockStatistics:
    """Counts and neighbour candidates of one block (rows ``i0:i1`` x columns ``j0:j1``)."""

    i0: int
    j0: int
    row_class0: int
    row_counts: np.ndarray  # (classes spanned by rows, n_bins) anchored counts
    col_class0: int
    col_counts: np.ndarray
    pos_class0: int
    pos_counts: np.ndarray  # (classes with pairs inside the block, n_bins)
    row_same: np.ndarray | None = None  # (rows,) nearest same-label distance candidates
    row_other: np.ndarray | None = None  # (rows, kmax)
    col_same: np.ndarray | None = None
    col_other: np.ndarray | None = None
    pairs: int = 0


@dataclass
class Workspace:
    """Preallocated block buffers, reused by every block (fresh buffers per block halve the
    matrix-product rate through page faults)."""

    tile: int
    g: np.ndarray = field(init=False)
    bins: np.ndarray = field(init=False)
    keys: np.ndarray = field(init=False)
    scratch: np.ndarray = field(init=False)
    flag: np.ndarray = field(init=False)
    lower: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        size = self.tile * self.tile
        self.g = np.empty(size, np.float32)
        self.bins = np.empty(size, np.int64)
        self.keys = np.empty(size, np.int64)
        self.scratch = np.empty(size, np.float32)
        self.flag = np.empty(size, bool)
        # Lower triangle with diagonal: the pairs a diagonal block must not count.
        self.lower = np.tri(self.tile, dtype=bool)

    def view(self, buf: np.ndarray, m: int, n: int) -> np.ndarray:
        return buf[: m * n].reshape(m, n)


def tile_size(n: int, memory_budget: int) -> int:
    """The square tile side whose block buffers fit in ``memory_budget`` bytes."""
    side = int(math.isqrt(max(1, memory_budget // BYTES_PER_BLOCK_ELEMENT)))
    side = max(TILE_GRANULE, side - side % TILE_GRANULE)
    return max(1, min(side, n))


def iter_blocks(n: int, tile: int) -> Iterator[tuple[int, int, int, int]]:
    """Blocks (i0, i1, j0, j1) of the upper triangle, row tile <= column tile."""
    starts = list(range(0, n, tile))
    for a, i0 in enumerate(starts):
        i1 = min(n, i0 + tile)
        for j0 in starts[a:]:
            yield i0, i1, j0, min(n, j0 + tile)


def block_pairs(i0: int, i1: int, j0: int, j1: int) -> int:
    """Number of unordered pairs a block covers."""
    m = i1 - i0
    return m * (m - 1) // 2 if i0 == j0 else m * (j1 - j0)


def block_statistics(
    p: PreparedEmbeddings,
    bins: ThresholdBins,
    block: tuple[int, int, int, int],
    ws: Workspace,
    *,
    per_class: bool = True,
    kmax: int = 0,
) -> BlockStatistics:
    """Counts (and Recall@k candidates) of one block; the engine's only unit of work.

    Pure in its inputs: the result depends on the embeddings, the grid and the block bounds only
    (``ws`` is scratch memory). With ``per_class=False`` every count goes to one pooled row.
    """
    i0, i1, j0, j1 = block
    m, n = i1 - i0, j1 - j0
    diagonal = i0 == j0
    nb = bins.n_bins
    stride = nb + 1  # one extra bin per class swallows the pairs a diagonal block must skip

    g = ws.view(ws.g, m, n)
    np.matmul(p.x[i0:i1], p.x[j0:j1].T, out=g)
    if p.sq_norms is not None:
        gram_to_distance(g, p.metric, p.sq_norms[i0:i1], p.sq_norms[j0:j1])
    else:
        gram_to_distance(g, p.metric)
    b = bins.assign(g, ws.view(ws.bins, m, n), ws.view(ws.scratch, m, n), ws.view(ws.flag, m, n))
    if diagonal:
        np.copyto(b, nb, where=ws.lower[:m, :m])

    keys = ws.view(ws.keys, m, n)
    rc = p.codes[i0:i1]
    cc = p.codes[j0:j1]
    if per_class:
        r0, r1 = int(rc[0]), int(rc[-1]) + 1
        c0, c1 = int(cc[0]), int(cc[-1]) + 1
        np.add(b, ((rc - r0) * stride)[:, None], out=keys)
        row_counts = np.bincount(keys.reshape(-1), minlength=(r1 - r0) * stride)
        row_counts = row_counts.reshape(r1 - r0, stride)[:, :nb]
        np.add(b, ((cc - c0) * stride)[None, :], out=keys)
        col_counts = np.bincount(keys.reshape(-1), minlength=(c1 - c0) * stride)
        col_counts = col_counts.reshape(c1 - c0, stride)[:, :nb]
    else:
        r0 = c0 = 0
        row_counts = np.bincount(b.reshape(-1), minlength=stride)[None, :nb]
        col_counts = np.zeros((1, nb), np.int64)

    # Classes with rows in both tiles own the block's positive pairs: one rectangle each.
    lo_cls = max(int(rc[0]), int(cc[0]))
    hi_cls = min(int(rc[-1]), int(cc[-1]))
    segments = []
    for c in range(lo_cls, hi_cls + 1):
        s, e = int(p.class_bounds[c]), int(p.class_bounds[c + 1])
        rs, re_ = max(s, i0), min(e, i1)
        cs, ce = max(s, j0), min(e, j1)
        if rs < re_ and cs < ce:
            segments.append((c, rs - i0, re_ - i0, cs - j0, ce - j0))
    if per_class:
        pos_class0 = lo_cls if segments else 0
        pos_counts = np.zeros((max(0, hi_cls - lo_cls + 1) if segments else 0, nb), np.int64)
        for c, rs, re_, cs, ce in segments:
            pos_counts[c - lo_cls] = np.bincount(b[rs:re_, cs:ce].reshape(-1), minlength=stride)[:nb]
    else:
        pos_class0 = 0
        pos_counts = np.zeros((1, nb), np.int64)
        for c, rs, re_, cs, ce in segments:
            pos_counts[0] += np.bincount(b[rs:re_, cs:ce].reshape(-1), minlength=stride)[:nb]

    out = BlockStatistics(
        i0=i0, j0=j0, row_class0=r0, row_counts=row_counts, col_class0=c0, col_counts=col_counts,
        pos_class0=pos_class0, pos_counts=pos_counts, pairs=block_pairs(i0, i1, j0, j1),
    )
    if kmax:
        _neighbour_candidates(g, diagonal, segments, kmax, ws, out)
    return out


def _neighbour_candidates(g, diagonal, segments, kmax, ws, out: BlockStatistics) -> None:
    m, n = g.shape
    if diagonal:
        # One distance per pair: the row side of a diagonal block reads the upper triangle.
        np.copyto(g, g.T, where=ws.lower[:m, :m])
    row_same = np.full(m, np.inf, np.float32)
    col_same = np.full(n, np.inf, np.float32)
    for _, rs, re_, cs, ce in segments:
        sub = g[rs:re_, cs:ce]
        if diagonal:
            k = re_ - rs
            sub[np.arange(k), np.arange(k)] = np.inf
        row_same[rs:re_] = sub.min(axis=1)
        if not diagonal:
            col_same[cs:ce] = sub.min(axis=0)
        sub[...] = np.inf  # same-label items are not "other" candidates
    if kmax == 1:
        row_other = g.min(axis=1)[:, None]
        col_other = None if diagonal else g.min(axis=0)[:, None]
    else:
        row_other = k_smallest(g, kmax, axis=1)
        col_other = None if diagonal else k_smallest(g, kmax, axis=0).T
    out.row_same, out.row_other = row_same, np.ascontiguousarray(row_other)
    if not diagonal:
        out.col_same, out.col_other = col_same, np.ascontiguousarray(col_other)


@dataclass
class PairPassResult:
    """What one exact pass over all pairs produced."""

    histograms: PairHistograms | PooledHistogram
    neighbours: NeighbourState | None
    pairs: int
    tile: int
    kernel: str = "numpy"
    threads: int = 1


def exact_pass(
    p: PreparedEmbeddings,
    edges: np.ndarray,
    *,
    kmax: int = 0,
    per_class: bool = True,
    memory_budget: int = 1 << 30,
    progress: ProgressCallback | None = None,
    kernel: str = "auto",
    threads: int | None = None,
    client=None,
) -> PairPassResult:
    """Visit every unordered pair once; return per-class (or pooled) histograms on ``edges``
    and, when ``kmax > 0``, the Recall@k neighbour state of every item.

    With ``per_class=False`` the result is a :class:`PooledHistogram` (what the calibration
    pass needs). ``kernel``: ``"numba"`` (fused, parallel), ``"numpy"`` (the reference block
    path), or ``"auto"`` (numba when importable). ``threads`` caps BLAS and kernel threads.
    ``client``: a ``dask.distributed.Client`` whose workers run the stripes (dask_engine.py);
    the result is identical to the local one.
    """
    from .threads import thread_limit

    kernel = resolve_kernel(kernel)
    from .memory import check_pass_memory

    check_pass_memory(p, len(edges), per_class, threads, memory_budget)
    if client is not None:
        if kernel != "numba":
            raise ValueError("the Dask engine runs the fused kernel (numba)")
        from .dask_engine import dask_counts

        counts = dask_counts(client, p, edges, kmax=kmax, per_class=per_class, memory_budget=memory_budget,
                             threads=threads, progress=progress)
        neighbours = counts.neighbours
        with thread_limit(threads) as n_threads:
            if kmax == 1:
                hi = ThresholdBins(edges).kernel_arguments()[2][-1]
                resolve_far_neighbours(p, neighbours, hi, memory_budget)
        hist = _finalize(p, np.asarray(edges, np.float64), (counts.anchored, counts.pos), per_class)
        return PairPassResult(histograms=hist, neighbours=neighbours, pairs=p.n * (p.n - 1) // 2,
                              tile=panel_shape(p.n, memory_budget)[0], kernel="numba+dask", threads=n_threads)
    with thread_limit(threads) as n_threads:
        if kernel == "numba":
            counts, neighbours, tile = _fused_counts(p, edges, kmax, per_class, memory_budget, progress, n_threads)
            if kmax == 1:
                hi = ThresholdBins(edges).kernel_arguments()[2][-1]
                resolve_far_neighbours(p, neighbours, hi, memory_budget)
        else:
            counts, neighbours, tile = _numpy_counts(p, edges, kmax, per_class, memory_budget, progress)
    hist = _finalize(p, np.asarray(edges, np.float64), counts, per_class)
    return PairPassResult(histograms=hist, neighbours=neighbours, pairs=p.n * (p.n - 1) // 2, tile=tile,
                          kernel=kernel, threads=n_threads)


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
    from . import kernels

    metric, sq = kernels.metric_arguments(p)
    sizes = p.class_sizes
    bounds = p.class_bounds
    same, other = neighbours.same, neighbours.other[:, 0]
    missing = np.flatnonzero(np.isinf(same) & (sizes[p.codes] >= 2))
    for c in np.unique(p.codes[missing]):
        s, e = int(bounds[c]), int(bounds[c + 1])
        rows = missing[(missing >= s) & (missing < e)]
        step = max(1, memory_budget // (8 * (e - s)))  # a products block stays within the budget
        for r0 in range(0, rows.size, step):
            r = rows[r0:r0 + step]
            out = same[r].copy()
            kernels.masked_row_minima(p.x[r] @ p.x[s:e].T, metric, sq[r], sq[s:e], r - s, r - s + 1, out)
            same[r] = out
    need = np.flatnonzero(np.isinf(other) & (same > hi) & (sizes[p.codes] >= 2))
    step = max(1, memory_budget // (8 * p.n))
    for r0 in range(0, need.size, step):
        r = need[r0:r0 + step]
        out = other[r].copy()
        kernels.masked_row_minima(p.x[r] @ p.x.T, metric, sq[r], sq, bounds[p.codes[r]], bounds[p.codes[r] + 1], out)
        other[r] = out


def resolve_kernel(kernel: str) -> str:
    if kernel not in ("auto", "numba", "numpy"):
        raise ValueError(f"unknown kernel {kernel!r}")
    if kernel == "numpy":
        return kernel
    from .threads import numba_module

    try:
        numba_module()
    except ImportError:
        if kernel == "numba":
            raise
        return "numpy"
    return "numba"


def _finalize(p: PreparedEmbeddings, edges: np.ndarray, counts, per_class: bool):
    """Fill the overflow bin (d > t_T) from the known totals, then split anchored counts into
    negatives. The kernels count bins 0..T-1 only: every class has n_c (N - 1) anchored pairs
    and n_c (n_c - 1) / 2 positives, so the overflow bin is what is left."""
    anchored, pos = counts
    sizes = p.class_sizes.astype(np.int64)
    n_pos = sizes * (sizes - 1) // 2
    if per_class:
        anchored_total = sizes * (p.n - 1)
    else:
        anchored_total = np.array([p.n * (p.n - 1) // 2])
        n_pos = np.array([n_pos.sum()])
    anchored = np.concatenate([anchored, (anchored_total - anchored.sum(axis=1))[:, None]], axis=1)
    pos = np.concatenate([pos, (n_pos - pos.sum(axis=1))[:, None]], axis=1)
    if anchored[:, -1].min(initial=0) < 0 or pos[:, -1].min(initial=0) < 0:
        raise AssertionError("pair engine counted more pairs than exist")
    if per_class:
        return PairHistograms(edges=edges, pos=pos, neg=anchored - 2 * pos)
    return PooledHistogram(edges=edges, pos=pos[0], neg=anchored[0] - pos[0])


def _numpy_counts(p, edges, kmax, per_class, memory_budget, progress):
    bins = ThresholdBins(edges)
    t = bins.n_edges
    n_rows = p.n_classes if per_class else 1
    anchored = np.zeros((n_rows, t), np.int64)
    pos = np.zeros((n_rows, t), np.int64)
    neighbours = NeighbourState.empty(p.n, kmax) if kmax else None
    tile = tile_size(p.n, memory_budget)
    ws = Workspace(tile)
    total = p.n * (p.n - 1) // 2
    done = 0
    for block in iter_blocks(p.n, tile):
        st = block_statistics(p, bins, block, ws, per_class=per_class, kmax=kmax)
        anchored[st.row_class0:st.row_class0 + len(st.row_counts)] += st.row_counts[:, :t]
        anchored[st.col_class0:st.col_class0 + len(st.col_counts)] += st.col_counts[:, :t]
        pos[st.pos_class0:st.pos_class0 + len(st.pos_counts)] += st.pos_counts[:, :t]
        if neighbours is not None:
            neighbours.update(st.i0, st.row_same, st.row_other)
            if st.col_same is not None:
                neighbours.update(st.j0, st.col_same, st.col_other)
        done += st.pairs
        if progress is not None:
            progress(done, total)
    return (anchored, pos), neighbours, tile


# Fused path: row panels of PANEL_ROWS rows against column chunks of PANEL_COLS columns. A
# 1024 x 4096 float32 panel (16 MiB) stays in cache between the matrix product that writes it
# and the kernel that reads it; a 4096 x 4096 block (64 MiB) makes the kernel wait on memory.
PANEL_ROWS = 1024
PANEL_COLS = 4096


def panel_shape(n: int, memory_budget: int) -> tuple[int, int]:
    """Rows and columns of a fused-path panel within the memory budget."""
    # ~16 bytes per panel element: the float32 panel plus per-thread column buffers and slack.
    elements = max(1, memory_budget // 16)
    cols = min(n, PANEL_COLS, max(TILE_GRANULE, 4 * math.isqrt(elements)))
    rows = min(n, PANEL_ROWS, max(TILE_GRANULE, elements // cols))
    return max(1, rows), max(1, cols)


def iter_panels(n: int, rows: int, cols: int):
    """(i0, i1, j0, j1) covering the upper triangle: each row panel against columns i0..N, the
    first chunk triangular (only j > i counts)."""
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        for j0 in range(i0, n, cols):
            yield i0, i1, j0, min(n, j0 + cols)


def _panel_pairs(i0, i1, j0, j1) -> int:
    """Pairs a panel covers: all of it, or (first chunk, j0 == i0) the columns j > i only."""
    if j0 != i0:
        return (i1 - i0) * (j1 - j0)
    return int(np.maximum(0, (j1 - j0) - np.arange(1, i1 - i0 + 1)).sum())


@dataclass
class PassCounts:
    """The mergeable partial result of an exact pass over some row stripes: anchored and positive
    counts in bins 0..T-1 (the overflow bin is reconstructed at the end) and the Recall@k
    neighbour candidates of every item. Counts add and candidates take minima, so partial results
    merge in any order, on any machine, into the same totals."""

    anchored: np.ndarray  # (C or 1, T) int64
    pos: np.ndarray  # (C or 1, T) int64
    neighbours: NeighbourState | None
    pairs: int = 0

    @classmethod
    def empty(cls, p: PreparedEmbeddings, t: int, kmax: int, per_class: bool) -> "PassCounts":
        rows = p.n_classes if per_class else 1
        return cls(np.zeros((rows, t), np.int64), np.zeros((rows, t), np.int64),
                   NeighbourState.empty(p.n, kmax) if kmax else None)

    def merge(self, other: "PassCounts") -> "PassCounts":
        """Add ``other`` into this result (in place) and return it."""
        self.anchored += other.anchored
        self.pos += other.pos
        if self.neighbours is not None:
            self.neighbours.update(0, other.neighbours.same, other.neighbours.other)
        self.pairs += other.pairs
        return self


def row_stripes(n: int, memory_budget: int) -> list[tuple[int, int]]:
    """Row ranges (i0, i1) of the fused engine's row panels: stripe i0:i1 covers the upper
    triangle's pairs (i, j), i0 <= i < i1, j > i. The stripes partition all pairs."""
    rows, _ = panel_shape(n, memory_budget)
    return [(i0, min(n, i0 + rows)) for i0 in range(0, n, rows)]


def stripe_counts(
    p: PreparedEmbeddings,
    edges: np.ndarray,
    stripes,
    *,
    kmax: int,
    per_class: bool,
    memory_budget: int,
    n_threads: int,
    progress: ProgressCallback | None = None,
    into: PassCounts | None = None,
) -> PassCounts:
    """Exact counts and Recall@k candidates of the row ``stripes`` (see :func:`row_stripes`): the
    engine's one block function, used alike by the local engine (all stripes, one call) and the
    Dask engine (a few stripes per task). Pure in its inputs: the result depends on the
    embeddings, the grid and the stripe bounds only, never on threads or on which call computes
    which stripe (each panel is the same matrix product either way, so even the float32 distances
    are bit-identical). ``into`` accumulates in place; ``progress(pairs_done, pairs_total)``.
    """
    from . import kernels

    edges = np.asarray(edges, np.float64)
    t = edges.size
    e0, inv, upper = ThresholdBins(edges).kernel_arguments()
    metric, sq = kernels.metric_arguments(p)
    codes = p.codes
    out = into if into is not None else PassCounts.empty(p, t, kmax, per_class)
    anchored, pos, neighbours = out.anchored, out.pos, out.neighbours
    rows, cols = panel_shape(p.n, memory_budget)
    total = p.n * (p.n - 1) // 2
    kk = max(kmax, 1)
    panels = (panel for s0, s1 in stripes for panel in _stripe_panels(p.n, s0, s1, rows, cols))
    for i0, i1, j0, j1, g, same_lo, same_hi in panel_products(p, panels, rows * cols):
        m, n = g.shape
        rc, cc = codes[i0:i1], codes[j0:j1]
        diagonal = i0 == j0
        if per_class:
            r0, c0 = int(rc[0]), int(cc[0])
            nr, nc = int(rc[-1]) - r0 + 1, int(cc[-1]) - c0 + 1
            row_hist = np.zeros((n_threads, nr * t), np.int64)
            col_hist = np.zeros((n_threads, nc * t), np.int64)
            pos_hist = np.zeros((n_threads, nr * t), np.int64)
            row_same = np.full((m, 1), np.inf, np.float32)
            row_other = np.full((m, kk), np.inf, np.float32)
            col_same = np.full((n_threads, n, 1), np.inf, np.float32)
            col_other = np.full((n_threads, n, kk), np.inf, np.float32)
            kernels.block_counts(
                g, (rc - r0) * t, (cc - c0) * t, same_lo, same_hi, diagonal, metric, sq[i0:i1], sq[j0:j1],
                e0, inv, upper, n_threads, row_hist, col_hist, pos_hist, kmax, row_same, row_other,
                col_same, col_other,
            )
            anchored[r0:r0 + nr] += row_hist.sum(axis=0).reshape(nr, t)
            anchored[c0:c0 + nc] += col_hist.sum(axis=0).reshape(nc, t)
            pos[r0:r0 + nr] += pos_hist.sum(axis=0).reshape(nr, t)
            if neighbours is not None:
                neighbours.update(i0, row_same[:, 0], row_other)
                col_best = col_other[0]
                for th in range(1, n_threads):
                    col_best = k_smallest(np.concatenate([col_best, col_other[th]], axis=1), kmax, axis=1) \
                        if kmax > 1 else np.minimum(col_best, col_other[th])
                neighbours.update(j0, col_same.min(axis=0)[:, 0], col_best)
        else:
            all_hist = np.zeros((n_threads, t), np.int64)
            pos_hist = np.zeros((n_threads, t), np.int64)
            kernels.block_pooled_counts(g, same_lo, same_hi, diagonal, metric, sq[i0:i1], sq[j0:j1], e0, inv,
                                        upper, n_threads, all_hist, pos_hist)
            anchored[0] += all_hist.sum(axis=0)
            pos[0] += pos_hist.sum(axis=0)
        out.pairs += _panel_pairs(i0, i1, j0, j1)
        if progress is not None:
            progress(out.pairs, total)
    return out


def panel_products(p: PreparedEmbeddings, panels, buffer_elements: int):
    """For each panel (i0, i1, j0, j1): ``(i0, i1, j0, j1, g, same_lo, same_hi)`` with
    g = x[i0:i1] x[j0:j1]^T computed into one reused float32 buffer (valid until the next panel;
    a fresh output per panel halves the matrix-product rate) and ``same_lo[i]:same_hi[i]`` the
    columns of row i's class within the panel (rows are grouped by class). What every fused
    kernel reads; ``buffer_elements`` bounds the panels' size."""
    g_buf = np.empty(buffer_elements, np.float32)
    bounds = p.class_bounds
    for i0, i1, j0, j1 in panels:
        m, n = i1 - i0, j1 - j0
        g = g_buf[: m * n].reshape(m, n)
        np.matmul(p.x[i0:i1], p.x[j0:j1].T, out=g)
        rc = p.codes[i0:i1]
        yield i0, i1, j0, j1, g, np.clip(bounds[rc] - j0, 0, n), np.clip(bounds[rc + 1] - j0, 0, n)


def _stripe_panels(n: int, s0: int, s1: int, rows: int, cols: int):
    """The panels of :func:`iter_panels` whose rows lie in stripe s0:s1 (stripes from row_stripes)."""
    for i0 in range(s0, s1, rows):
        i1 = min(s1, i0 + rows)
        for j0 in range(i0, n, cols):
            yield i0, i1, j0, min(n, j0 + cols)


def _fused_counts(p, edges, kmax, per_class, memory_budget, progress, n_threads):
    counts = stripe_counts(p, edges, row_stripes(p.n, memory_budget), kmax=kmax, per_class=per_class,
                           memory_budget=memory_budget, n_threads=n_threads, progress=progress)
    return (counts.anchored, counts.pos), counts.neighbours, panel_shape(p.n, memory_budget)[0]
