"""The numpy reference path of the exact engine: square tiles of the upper triangle, each
processed by :func:`block_statistics` in array passes. Slower than the fused sweep (sweep.py) and
written independently of it: the kernels' oracle in the tests, and ``--kernel numpy``.

It produces the same integer counts: per class c and bin b, ``anchored[c, b]`` (pairs with an end
in c; a pair with both ends in c counts twice) and ``pos[c, b]``; then ``neg = anchored - 2 pos``,
with the overflow bin from the totals (histograms.with_overflow). Nothing allocates N x N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from opis_cli.data.prepare import PreparedEmbeddings
from opis_cli.engine.binning import ThresholdBins
from opis_cli.engine.distance import gram_to_distance
from opis_cli.engine.histograms import PairHistograms, PooledHistogram, with_overflow
from opis_cli.engine.neighbours import NeighbourState, k_smallest
from opis_cli.engine.panels import TILE_GRANULE

# Bytes of work memory per element of a block: inner products / distances (4), bins (8),
# bincount keys (8), scratch (4), flags (1), triangle mask (1), partition copy for k > 1 (4).
BYTES_PER_BLOCK_ELEMENT = 30


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


def reference_pass(p, edges, kmax, per_class, memory_budget, progress):
    """(histograms, Recall@k state, tile side) of all pairs, by square tiles (module docstring)."""
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
    sizes = p.class_sizes.astype(np.int64)
    n_pos = sizes * (sizes - 1) // 2
    edges = np.asarray(edges, np.float64)
    if per_class:
        pos = with_overflow(pos, n_pos, "positive pairs per class")
        anchored = with_overflow(anchored, sizes * (p.n - 1), "pairs per class")
        return PairHistograms(edges, pos, anchored - 2 * pos), neighbours, tile
    pos = with_overflow(pos[0], n_pos.sum(), "pooled positive pairs")
    both = with_overflow(anchored[0], p.n * (p.n - 1) // 2, "pooled pairs")
    return PooledHistogram(edges, pos, both - pos), neighbours, tile
