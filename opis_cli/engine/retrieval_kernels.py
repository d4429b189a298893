"""Numba kernels of the exact MAP@R and R-precision (engine/retrieval.py).

Each query q has R_q positives (the other members of its class) whose distances are known before
the sweep, sorted: p_1 <= ... <= p_R. The sweep only has to count, for each q, how many
*negatives* precede each positive: a negative at distance d lands in bucket b = #{i : p_i < d}
(at equal distance the negative ranks first: ties against the query, as for Recall@k), and the
negatives before positive i are the counts of buckets 0..i.

Only the first R ranks count, so a query's cutoff starts at its farthest positive and tightens as
its counts grow (:func:`_tightened`): once the positives up to p_k and the negatives before them
number R, nothing beyond p_k can enter the first R. Which negatives beyond the final cutoff got
counted depends on the panel order, but no figure does: the ranks up to the first one beyond R
use buckets no later pair can change (engine/retrieval.py).
"""

from __future__ import annotations

import numpy as np

from opis_cli.engine.kernels import _distance
from opis_cli.threads import numba_module

numba = numba_module()
njit, prange = numba.njit, numba.prange


@njit(inline="always")
def _below(pos, a, b, d):
    """#{k in a:b : pos[k] < d} of the ascending run pos[a:b] (binary search)."""
    lo, hi = a, b
    while lo < hi:
        mid = (lo + hi) >> 1
        if pos[mid] < d:
            lo = mid + 1
        else:
            hi = mid
    return lo - a


@njit(inline="always")
def _select_within(g, i, ja, jb, metric, rs_i, csq, hi, idx, cnt):
    """Append to idx[cnt:] the columns j in ja:jb with distance <= hi (branch-free)."""
    for j in range(ja, jb):
        idx[cnt] = np.int32(j)
        cnt += _distance(g[i, j], metric, rs_i, csq[j]) <= hi
    return cnt


@njit(inline="always")
def _tightened(counts, base, pos, pa, pb, cut):
    """The query's cutoff after its counts so far: the first positive p_k at which the positives
    up to it and the negatives before them reach R (then its R-th nearest reference is no farther,
    and nothing beyond p_k can enter the first R); ``cut`` when none does yet."""
    r = pb - pa
    before = 0
    for k in range(r):
        before += counts[base + k]
        if k + 1 + before >= r:
            v = pos[pa + k]
            return v if v < cut else cut
    return cut


@njit(parallel=True, cache=True, nogil=True)
def block_retrieval(g, same_lo, same_hi, diagonal, metric, rsq, csq, row_cut, col_cut, col_max, pos, row_poff,
                    col_poff, row_coff, col_coff, n_threads, row_counts, col_counts):
    """Bucket the negatives of one panel ``g`` (m, n) for both ends' positives.

    Row i (panel-local) has positives ``pos[row_poff[i]:row_poff[i + 1]]`` (ascending), cutoff
    ``row_cut[i]`` (-inf: not a query; tightened in place after the row, see _tightened) and
    buckets ``row_counts[row_coff[i] + b]`` (rows belong to one thread each); column j likewise
    with cutoff ``col_cut[j]`` and per-thread buckets ``col_counts[t, col_coff[j] + b]``
    (``col_max``: the largest column cutoff). The class's own columns (positives) are skipped."""
    m, n = g.shape
    for t in prange(n_threads):
        cc = col_counts[t]
        idx = np.empty(n + 1, np.int32)
        for i in range(t, m, n_threads):
            cut_i = row_cut[i]
            hi = cut_i if cut_i > col_max else col_max
            if hi == -np.inf:
                continue
            rs_i = rsq[i]
            j0 = i + 1 if diagonal else 0
            s_lo = max(same_lo[i], j0)
            s_hi = max(same_hi[i], j0)
            cnt = _select_within(g, i, j0, s_lo, metric, rs_i, csq, hi, idx, 0)
            cnt = _select_within(g, i, s_hi, n, metric, rs_i, csq, hi, idx, cnt)
            pa, pb, base = row_poff[i], row_poff[i + 1], row_coff[i]
            for q in range(cnt):
                j = idx[q]
                d = _distance(g[i, j], metric, rs_i, csq[j])
                if d <= cut_i:
                    row_counts[base + _below(pos, pa, pb, d)] += 1
                if d <= col_cut[j]:
                    cc[col_coff[j] + _below(pos, col_poff[j], col_poff[j + 1], d)] += 1
            if cut_i > -np.inf:
                row_cut[i] = _tightened(row_counts, base, pos, pa, pb, cut_i)


@njit(cache=True, nogil=True)
def tighten_cutoffs(counts, coff, poff, pos, cut, a, b):
    """cut[k] for rows a:b after their counts so far (_tightened)."""
    for k in range(a, b):
        if cut[k] > -np.inf:
            cut[k] = _tightened(counts, coff[k], pos, poff[k], poff[k + 1], cut[k])


@njit(cache=True, nogil=True)  # serial: a class block is small, and a parallel kernel compiles slowly
def pair_distances(g, metric, rsq, csq, out):
    """out = the kernels' own distance of every inner product in ``g`` (so positives computed
    here are on the same formula as the sweep's pairs)."""
    m, n = g.shape
    for i in range(m):
        for j in range(n):
            out[i, j] = _distance(g[i, j], metric, rsq[i], csq[j])


@njit(cache=True, nogil=True)
def average_precisions(counts, coff, poff, ap, rp):
    """Per query q (R = poff[q + 1] - poff[q] > 0): with nb_i = negatives before positive i (the
    running sum of its buckets), rank_i = i + 1 + nb_i, and over the positives with rank_i <= R:
    ap[q] = (1/R) sum (i + 1) / rank_i (MAP@R's term), rp[q] = #{i : rank_i <= R} / R."""
    for q in range(coff.shape[0] - 1):
        r = poff[q + 1] - poff[q]
        if r == 0:
            continue
        before = 0
        total = 0.0
        hits = 0
        for i in range(r):
            before += counts[coff[q] + i]
            rank = i + 1 + before
            if rank > r:
                break  # ranks only grow
            total += (i + 1) / rank
            hits += 1
        ap[q] = total / r
        rp[q] = hits / r
