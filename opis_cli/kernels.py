"""Fused block kernels (numba): one sweep over a block of inner products does what the numpy
path (pairs.block_statistics) does in a dozen passes: distance, exact grid bin, per-class
anchored and positive counts, and Recall@k candidates.

Two facts make it fast:

* pairs beyond the last threshold (d > t_T: most negative pairs) cost one comparison: their bin
  is never counted but reconstructed at the end from known totals (each class has exactly
  n_c (N - 1) anchored pairs and n_c (n_c - 1) / 2 positives), which also spares the histogram
  the serialised increments of one hot counter;
* rows are grouped by class, so a row's same-class columns are one contiguous range: no
  per-pair label comparison.

Threads split a block's rows cyclically (balanced for triangles); each thread counts into its
own slice of the outputs, summed by the caller: no atomics, no races. Compiled on first use and
cached on disk; importing this module compiles nothing.
"""

from __future__ import annotations

import math

import numpy as np

from .threads import numba_module

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
def _row_distances(g, i, j0, n, metric, rs_i, csq, dbuf):
    for j in range(j0, n):
        dbuf[j] = _distance(g[i, j], metric, rs_i, csq[j])


@njit(inline="always")
def _in_range(dbuf, ja, jb, hi, idx, start):
    # Branch-free compaction: write every index, advance only past in-range ones.
    cnt = start
    for j in range(ja, jb):
        idx[cnt] = np.int32(j)
        cnt += dbuf[j] <= hi
    return cnt


LANES = 16


@njit(inline="always")
def _distances_nearest1(g, i, ja, jb, metric, rs_i, csq, dbuf, best, cols, lanes):
    """Distances of row i to columns ja:jb into dbuf, fused with Recall@1 bookkeeping: the
    row's minimum (returned) and the elementwise column minima ``cols``.

    LLVM vectorises elementwise minima but not a scalar min reduction (numba's min keeps NaN
    semantics), so the row minimum is folded into LANES accumulators, reduced at the end.
    """
    for k in range(LANES):
        lanes[k] = best
    j = ja
    while j + LANES <= jb:
        for k in range(LANES):
            q = j + k
            d = _distance(g[i, q], metric, rs_i, csq[q])
            dbuf[q] = d
            v = lanes[k]
            lanes[k] = v if v < d else d
            c = cols[q]
            cols[q] = c if c < d else d
        j += LANES
    for q in range(j, jb):
        d = _distance(g[i, q], metric, rs_i, csq[q])
        dbuf[q] = d
        v = lanes[0]
        lanes[0] = v if v < d else d
        c = cols[q]
        cols[q] = c if c < d else d
    out = lanes[0]
    for k in range(1, LANES):
        out = out if out < lanes[k] else lanes[k]
    return out


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


@njit(parallel=True, cache=True, nogil=True)
def block_counts(g, row_base, col_base, same_lo, same_hi, diagonal, metric, rsq, csq, e0, inv, upper,
                 n_threads, row_hist, col_hist, pos_hist, kmax, row_same, row_other, col_same, col_other):
    """Count the in-range pairs of one block of inner products ``g`` (m, n) float32.

    ``row_base[i]`` / ``col_base[j]``: offset of the row's / column's class in the thread's
    histogram slice (local class index * n_bins); ``same_lo[i]:same_hi[i]``: the columns of row
    i's class. Bins 0..T-1 only (``upper`` holds the T float32 edges); the overflow bin is
    reconstructed by the caller. Per thread t: ``row_hist[t]``, ``col_hist[t]``, ``pos_hist[t]``
    (positives, at the row's offset); with kmax > 0, ``row_same[i, 0]``, ``row_other[i]`` (each
    row belongs to one thread) and ``col_same[t, j, 0]``, ``col_other[t, j]``.
    """
    m, n = g.shape
    n_edges = upper.shape[0]
    hi = upper[n_edges - 1]
    for t in prange(n_threads):
        rh = row_hist[t]
        ch = col_hist[t]
        ph = pos_hist[t]
        dbuf = np.empty(n, np.float32)
        idx = np.empty(n + 1, np.int32)
        lanes = np.empty(LANES, np.float32)
        for i in range(t, m, n_threads):
            rb = row_base[i]
            j0 = i + 1 if diagonal else 0
            s_lo = max(same_lo[i], j0)
            s_hi = max(same_hi[i], j0)
            if kmax == 1:
                co = col_other[t].reshape(n)
                cs = col_same[t].reshape(n)
                ro = row_other[i]
                ro[0] = _distances_nearest1(g, i, j0, s_lo, metric, rsq[i], csq, dbuf, ro[0], co, lanes)
                row_same[i, 0] = _distances_nearest1(g, i, s_lo, s_hi, metric, rsq[i], csq, dbuf,
                                                     row_same[i, 0], cs, lanes)
                ro[0] = _distances_nearest1(g, i, s_hi, n, metric, rsq[i], csq, dbuf, ro[0], co, lanes)
            else:
                _row_distances(g, i, j0, n, metric, rsq[i], csq, dbuf)
                if kmax > 1:
                    _nearest(dbuf, j0, s_lo, kmax, row_other[i], col_other[t])
                    _nearest(dbuf, s_lo, s_hi, 1, row_same[i], col_same[t])
                    _nearest(dbuf, s_hi, n, kmax, row_other[i], col_other[t])
            # positives: the class's columns, then everything else in range
            cnt = _in_range(dbuf, s_lo, s_hi, hi, idx, 0)
            for q in range(cnt):
                j = idx[q]
                d = dbuf[j]
                b = _bin(d, e0, inv, upper, n_edges)
                rh[rb + b] += 1
                ch[col_base[j] + b] += 1
                ph[rb + b] += 1
            cnt = _in_range(dbuf, j0, s_lo, hi, idx, 0)
            cnt = _in_range(dbuf, s_hi, n, hi, idx, cnt)
            for q in range(cnt):
                j = idx[q]
                d = dbuf[j]
                b = _bin(d, e0, inv, upper, n_edges)
                rh[rb + b] += 1
                ch[col_base[j] + b] += 1


@njit(parallel=True, cache=True, nogil=True)
def block_pooled_counts(g, same_lo, same_hi, diagonal, metric, rsq, csq, e0, inv, upper, n_threads,
                        all_hist, pos_hist):
    """Pooled in-range counts of one block: all pairs and positive pairs per bin (per thread)."""
    m, n = g.shape
    n_edges = upper.shape[0]
    hi = upper[n_edges - 1]
    for t in prange(n_threads):
        ah = all_hist[t]
        ph = pos_hist[t]
        for i in range(t, m, n_threads):
            rs_i = rsq[i]
            j0 = i + 1 if diagonal else 0
            s_lo = max(same_lo[i], j0)
            s_hi = max(same_hi[i], j0)
            for j in range(j0, n):
                d = _distance(g[i, j], metric, rs_i, csq[j])
                if d > hi:
                    continue
                b = _bin(d, e0, inv, upper, n_edges)
                ah[b] += 1
                if s_lo <= j < s_hi:
                    ph[b] += 1
