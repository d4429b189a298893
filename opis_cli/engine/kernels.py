"""Fused block kernels (numba): one sweep over a block of inner products does what the numpy
path (reference.block_statistics) does in a dozen passes: distance, exact grid bin, per-class
anchored and positive counts, and Recall@k candidates.

Two facts make it fast:

* pairs beyond the last threshold (d > t_T: most negative pairs) cost one comparison of their
  inner product with a precomputed floor (:func:`similarity_floor`; no distance): their bin is
  never counted but reconstructed at the end from known totals (each class has exactly
  n_c (N - 1) anchored pairs and n_c (n_c - 1) / 2 positives), which also spares the histogram
  the serialised increments of one hot counter;
* rows are grouped by class, so a row's same-class columns are one contiguous range: no
  per-pair label comparison.

Threads split a block's rows cyclically (balanced for triangles); each thread counts into its
own slice of the outputs, summed by the caller: no atomics, no races. Every kernel shares the
prologue (_select, _distance, _bin); each is one accumulator's consumer (accumulators.py). Compiled on first use and
cached on disk; importing this module compiles nothing.
"""

from __future__ import annotations

import math

import numpy as np

from opis_cli.threads import numba_module

numba = numba_module()  # cache directory and thread pool set before anything compiles
njit, prange = numba.njit, numba.prange

METRIC_COSINE, METRIC_L2, METRIC_L2_RAW = 0, 1, 2


def metric_arguments(p) -> tuple[int, np.ndarray]:
    """(metric code, squared norms) of prepared embeddings as the kernels take them (norms are
    only read for raw l2; zeros otherwise)."""
    if p.sq_norms is not None:
        return METRIC_L2_RAW, p.sq_norms
    return (METRIC_COSINE if p.metric == "cosine" else METRIC_L2), np.zeros(p.n, np.float32)


@njit(inline="always")
def _distance(s, metric, rsq, csq):
    if metric == METRIC_COSINE:
        return np.float32(1.0) - s
    if metric == METRIC_L2:
        v = np.float32(2.0) - np.float32(2.0) * s
    else:
        v = rsq + csq - np.float32(2.0) * s
    if v < np.float32(0.0):
        v = np.float32(0.0)
    return np.float32(math.sqrt(v))


@njit(inline="always")
def _bin(d, e0, inv, upper, n_edges):
    """Exact bin of an in-range distance (d <= upper[-1]): arithmetic, then corrected."""
    u = (d - e0) * inv
    if u <= np.float32(0.0):
        b = 0
    elif u >= np.float32(n_edges - 1):
        b = n_edges - 1
    else:
        b = int(u)
        if b < u:
            b += 1
    while b > 0 and d <= upper[b - 1]:
        b -= 1
    while d > upper[b]:
        b += 1
    return b


@njit(inline="always")
def _insert(buf, k, d):
    # buf holds the k smallest values seen, ascending.
    if d >= buf[k - 1]:
        return
    p = k - 1
    while p > 0 and buf[p - 1] > d:
        buf[p] = buf[p - 1]
        p -= 1
    buf[p] = d


@njit(inline="always")
def _row_distances(g, i, ja, jb, metric, rs_i, csq, dbuf):
    # One loop per metric: a metric test inside the loop would keep it from vectorising.
    if metric == METRIC_COSINE:
        for j in range(ja, jb):
            dbuf[j] = _distance(g[i, j], METRIC_COSINE, rs_i, csq[j])
    elif metric == METRIC_L2:
        for j in range(ja, jb):
            dbuf[j] = _distance(g[i, j], METRIC_L2, rs_i, csq[j])
    else:
        for j in range(ja, jb):
            dbuf[j] = _distance(g[i, j], METRIC_L2_RAW, rs_i, csq[j])


@njit(inline="always")
def _in_range(dbuf, ja, jb, hi, idx, start):
    # Branch-free compaction: write every index, advance only past in-range ones.
    cnt = start
    for j in range(ja, jb):
        idx[cnt] = np.int32(j)
        cnt += dbuf[j] <= hi
    return cnt


@njit(inline="always")
def _nearest(dbuf, ja, jb, kmax, row_buf, col_buf):
    """Recall@k candidates (k > 1) of a row against columns ja:jb: row_buf holds the row's k
    smallest, col_buf[j] column j's k smallest in this thread (both ascending)."""
    kth = row_buf[kmax - 1]
    for j in range(ja, jb):
        d = dbuf[j]
        if d < kth:
            _insert(row_buf, kmax, d)
            kth = row_buf[kmax - 1]
        if d < col_buf[j, kmax - 1]:
            _insert(col_buf[j], kmax, d)


def similarity_floor(metric: int, hi: float) -> np.float32:
    """The smallest float32 inner product s whose kernel distance is within ``hi`` (float32):
    for cosine and unit-vector l2 the distance falls as s grows, so d(s) <= hi exactly when
    s >= this floor. The kernels then pick a block's in-range pairs by one comparison of the inner
    product, no distance computed for the pairs beyond the grid (most of them). +inf when no s
    qualifies; unused for raw l2 (the distance depends on the norms)."""
    hi = np.float32(hi)
    if metric == METRIC_L2_RAW:
        return np.float32(0.0)
    # Inner products of unit vectors lie in [-1, 1] up to rounding: search [-3, 3] by bisection on
    # the float32 values' order (their bit patterns, sign-folded), 32 steps at most.
    lo_k, hi_k = _order_key(-3.0), _order_key(3.0)
    if kernel_distance(np.float32(3.0), metric) > hi:
        return np.float32(np.inf)
    if kernel_distance(np.float32(-3.0), metric) <= hi:
        return np.float32(-np.inf)
    while hi_k - lo_k > 1:
        mid = (lo_k + hi_k) // 2
        if kernel_distance(_from_order_key(mid), metric) <= hi:
            hi_k = mid
        else:
            lo_k = mid
    return _from_order_key(hi_k)


def _order_key(x: float) -> int:
    """An integer that orders float32 values as the values themselves (-0 and +0 alike)."""
    bits = int(np.array([x], np.float32).view(np.int32)[0])
    return bits if bits >= 0 else -(bits & 0x7FFFFFFF)


def _from_order_key(k: int) -> np.float32:
    bits = k if k >= 0 else (-k) | 0x80000000
    return np.array([bits], np.uint32).view(np.float32)[0]


@njit(cache=True)
def kernel_distance(s, metric):
    """The kernels' own distance of one float32 inner product (unit vectors)."""
    return _distance(np.float32(s), metric, np.float32(1.0), np.float32(1.0))


@njit(inline="always")
def _select(g, i, ja, jb, metric, s_min, hi, rs_i, csq, idx, cnt):
    """Append to idx[cnt:] the columns j in ja:jb whose distance to row i is within the grid
    (d <= hi), branch-free; returns the new count."""
    if metric == METRIC_L2_RAW:
        for j in range(ja, jb):
            idx[cnt] = np.int32(j)
            cnt += _distance(g[i, j], METRIC_L2_RAW, rs_i, csq[j]) <= hi
    else:
        for j in range(ja, jb):
            idx[cnt] = np.int32(j)
            cnt += g[i, j] >= s_min
    return cnt


@njit(parallel=True, cache=True, nogil=True)
def block_counts(g, row_base, col_base, same_lo, same_hi, diagonal, metric, s_min, rsq, csq, e0, inv, upper,
                 n_threads, row_hist, col_hist, pos_hist, kmax, row_same, row_other, col_same, col_other, col_min_same,
                 col_min_other):
    """Count the in-range pairs of one block of inner products ``g`` (m, n) float32.

    ``row_base[i]`` / ``col_base[j]``: offset of the row's / column's class in the thread's
    histogram slice (local class index * n_bins); ``same_lo[i]:same_hi[i]``: the columns of row
    i's class. Bins 0..T-1 only (``upper`` holds the T float32 edges); the overflow bin is
    reconstructed by the caller. Per thread t: ``row_hist[t]``, ``col_hist[t]``, ``pos_hist[t]``
    (positives, at the row's offset); with kmax > 0, ``row_same[i, 0]``, ``row_other[i]`` (each
    row belongs to one thread) and, per thread, the columns' candidates: with kmax > 1
    ``col_same[t, j, 0]``, ``col_other[t, j]``; with kmax == 1 ``col_min_same[t, j]``,
    ``col_min_other[t, j]`` (contiguous (threads, n) arrays: a strided view of the 3-d ones made
    the whole kernel ~1.7x slower, measured on a 1024 x 4096 panel).

    With kmax == 1 the minima are taken over the in-range pairs only (d <= t_T): a nearest
    neighbour nearly always is one, and the pairs are visited anyway, whereas a minimum over
    every pair cost as much as all the counting. Minima that stay +inf are resolved exactly by
    the caller where they decide a query (accumulators.resolve_far_neighbours).
    """
    m, n = g.shape
    n_edges = upper.shape[0]
    hi = upper[n_edges - 1]
    for t in prange(n_threads):
        rh = row_hist[t]
        ch = col_hist[t]
        ph = pos_hist[t]
        cs = col_min_same[t]
        co = col_min_other[t]
        dbuf = np.empty(n if kmax > 1 else 0, np.float32)
        idx = np.empty(n + 1, np.int32)
        for i in range(t, m, n_threads):
            rb = row_base[i]
            rs_i = rsq[i]
            j0 = i + 1 if diagonal else 0
            s_lo = max(same_lo[i], j0)
            s_hi = max(same_hi[i], j0)
            if kmax > 1:
                _row_distances(g, i, j0, n, metric, rs_i, csq, dbuf)
                _nearest(dbuf, j0, s_lo, kmax, row_other[i], col_other[t])
                _nearest(dbuf, s_lo, s_hi, 1, row_same[i], col_same[t])
                _nearest(dbuf, s_hi, n, kmax, row_other[i], col_other[t])
            # positives: the class's columns, then everything else in range
            best = row_same[i, 0]
            cnt = _select(g, i, s_lo, s_hi, metric, s_min, hi, rs_i, csq, idx, 0)
            for q in range(cnt):
                j = idx[q]
                d = _distance(g[i, j], metric, rs_i, csq[j])
                b = _bin(d, e0, inv, upper, n_edges)
                rh[rb + b] += 1
                ch[col_base[j] + b] += 1
                ph[rb + b] += 1
                if kmax == 1:
                    best = best if best < d else d
                    c = cs[j]
                    cs[j] = c if c < d else d
            row_same[i, 0] = best
            best = row_other[i, 0]
            cnt = _select(g, i, j0, s_lo, metric, s_min, hi, rs_i, csq, idx, 0)
            cnt = _select(g, i, s_hi, n, metric, s_min, hi, rs_i, csq, idx, cnt)
            for q in range(cnt):
                j = idx[q]
                d = _distance(g[i, j], metric, rs_i, csq[j])
                b = _bin(d, e0, inv, upper, n_edges)
                rh[rb + b] += 1
                ch[col_base[j] + b] += 1
                if kmax == 1:
                    best = best if best < d else d
                    c = co[j]
                    co[j] = c if c < d else d
            row_other[i, 0] = best


@njit(parallel=True, cache=True, nogil=True)
def block_pooled_counts(g, same_lo, same_hi, diagonal, metric, s_min, rsq, csq, e0, inv, upper, n_threads,
                        all_hist, pos_hist, all_sum, pos_sum, with_sums, positives_only):
    """Pooled in-range counts of one block: all pairs and positive pairs per bin (per thread t:
    ``all_hist[t]``, ``pos_hist[t]``); ``with_sums``: also the float64 sum of the in-range
    distances per bin (``all_sum[t]``, ``pos_sum[t]``: the TCM loss's sums over hard pairs);
    ``positives_only``: look at the class's own columns only (a within-class pass)."""
    m, n = g.shape
    n_edges = upper.shape[0]
    hi = upper[n_edges - 1]
    for t in prange(n_threads):
        ah = all_hist[t]
        ph = pos_hist[t]
        asum = all_sum[t]
        psum = pos_sum[t]
        idx = np.empty(n + 1, np.int32)
        for i in range(t, m, n_threads):
            rs_i = rsq[i]
            j0 = i + 1 if diagonal else 0
            s_lo = max(same_lo[i], j0)
            s_hi = max(same_hi[i], j0)
            if positives_only:
                cnt = _select(g, i, s_lo, s_hi, metric, s_min, hi, rs_i, csq, idx, 0)
            else:
                cnt = _select(g, i, j0, n, metric, s_min, hi, rs_i, csq, idx, 0)
            for q in range(cnt):
                j = idx[q]
                d = _distance(g[i, j], metric, rs_i, csq[j])
                b = _bin(d, e0, inv, upper, n_edges)
                ah[b] += 1
                if with_sums:
                    asum[b] += d
                if s_lo <= j < s_hi:
                    ph[b] += 1
                    if with_sums:
                        psum[b] += d


@njit(parallel=True, cache=True, nogil=True)
def block_group_counts(g, row_group, col_group, same_lo, same_hi, diagonal, metric, s_min, rsq, csq, e0, inv,
                       upper, n_threads, pos_hist, neg_hist):
    """In-range counts of one block per *group* (a second key beside the class: customer, domain).

    A pair counts once for each distinct group among its two ends (once when both ends share a
    group), as a positive when its ends share a class (columns same_lo[i]:same_hi[i]), else as a
    negative. ``row_group[i]`` / ``col_group[j]``: the end's group times the number of bins. Per
    thread: ``pos_hist[t]``, ``neg_hist[t]``; bins 0..T-1 (the caller rebuilds the overflow bin).
    """
    m, n = g.shape
    n_edges = upper.shape[0]
    hi = upper[n_edges - 1]
    for t in prange(n_threads):
        ph = pos_hist[t]
        nh = neg_hist[t]
        idx = np.empty(n + 1, np.int32)
        for i in range(t, m, n_threads):
            rs_i = rsq[i]
            j0 = i + 1 if diagonal else 0
            s_lo = max(same_lo[i], j0)
            s_hi = max(same_hi[i], j0)
            rg = row_group[i]
            cnt = _select(g, i, j0, n, metric, s_min, hi, rs_i, csq, idx, 0)
            for q in range(cnt):
                j = idx[q]
                b = _bin(_distance(g[i, j], metric, rs_i, csq[j]), e0, inv, upper, n_edges)
                cg = col_group[j]
                if s_lo <= j < s_hi:
                    ph[rg + b] += 1
                    if cg != rg:
                        ph[cg + b] += 1
                else:
                    nh[rg + b] += 1
                    if cg != rg:
                        nh[cg + b] += 1


@njit(parallel=True, cache=True, nogil=True)
def block_anchor_bins(g, row_anchor, col_anchors, same_lo, same_hi, diagonal, metric, rsq, csq, scale, n_bins,
                      n_threads, pos_hist, neg_hist):  # pragma: no cover - compiled
    """Whole-span histograms of the pairs of one block with an end among the anchors, each pair
    counted once per anchor end (the ordered pairs (anchor, other item)): rows with
    ``row_anchor[i]`` against all their columns, then the anchor columns ``col_anchors`` (local
    indices) against all their rows. bin = clip(trunc(float32(d * scale)), 0, n_bins - 1), as
    kernels.distance_bin_counts; per thread ``pos_hist[t]``, ``neg_hist[t]``."""
    m, n = g.shape
    sc = np.float32(scale)
    for t in prange(n_threads):
        ph = pos_hist[t]
        nh = neg_hist[t]
        for i in range(t, m, n_threads):
            rs_i = rsq[i]
            if row_anchor[i]:
                for j in range(i + 1 if diagonal else 0, n):
                    b = min(max(int(_distance(g[i, j], metric, rs_i, csq[j]) * sc), 0), n_bins - 1)
                    if same_lo[i] <= j < same_hi[i]:
                        ph[b] += 1
                    else:
                        nh[b] += 1
            # the anchor columns of the same row (read along the row, not down the columns)
            for a in range(col_anchors.shape[0]):
                j = col_anchors[a]
                if diagonal and j <= i:
                    continue
                b = min(max(int(_distance(g[i, j], metric, rs_i, csq[j]) * sc), 0), n_bins - 1)
                if same_lo[i] <= j < same_hi[i]:
                    ph[b] += 1
                else:
                    nh[b] += 1


@njit(cache=True, nogil=True)
def masked_row_minima(g, metric, rsq, csq, skip_lo, skip_hi, out):
    """out[i] = min(out[i], min over j outside skip_lo[i]:skip_hi[i] of the distance g[i, j]),
    with the kernels' own distance arithmetic."""
    m, n = g.shape
    for i in range(m):
        best = out[i]
        for j in range(n):
            if skip_lo[i] <= j < skip_hi[i]:
                continue
            d = _distance(g[i, j], metric, rsq[i], csq[j])
            best = best if best < d else d
        out[i] = best


@njit(cache=True, nogil=True)
def distance_bin_counts(g, rows, lo, hi, scale, bins, pos, neg):  # pragma: no cover - compiled
    """Whole-span histograms of a block of distances g (m x N, float32; row i is item rows[i]):
    bin = clip(trunc(g * scale), 0, bins - 1) in float32 arithmetic (as numpy computes
    ``(g * scale).astype(int64)``); columns in [lo[i], hi[i]) are positives, the item itself is
    skipped, the rest are negatives. One pass, no temporaries (distributions.py)."""
    m, n = g.shape
    s = np.float32(scale)
    for i in range(m):
        for j in range(n):
            if j == rows[i]:
                continue
            b = int(g[i, j] * s)
            if b < 0:
                b = 0
            elif b > bins - 1:
                b = bins - 1
            if lo[i] <= j < hi[i]:
                pos[b] += 1
            else:
                neg[b] += 1
