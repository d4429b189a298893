"""Sampled negatives for the approximate engine: one seeded sample of partner rows for all classes.

A class's in-range negatives are estimated from its anchors against the sampled rows outside it.
One shared sample S (m rows drawn uniformly without replacement from all N) serves every class:
for class c the partners are S minus c's own rows, which, given their number m_c, are a uniform
sample without replacement of c's complement; counts are scaled by (N - n_c) / m_c (unbiased).
Sharing S is what makes many small classes cheap: the anchors of consecutive classes go through
one matrix product and one kernel call against S, instead of one draw, one gather and one call per
class (100k classes of ~2 rows took 16 min and 12.6 GB that way at N = 200k, docs/approximate.md).
The rows of S are dealt at random into G groups, the units of the replicate error estimate
(approximate_errors.py); dropping a group drops it for every class, so the replicates carry the
correlation that sharing S creates between classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from opis_cli.engine.binning import ThresholdBins
from opis_cli.engine.kernels import _bin, _in_range, _row_distances, metric_arguments
from opis_cli.threads import numba_module

numba = numba_module()
njit, prange = numba.njit, numba.prange

# Anchor rows per matrix product: at most 2^24 products (64 MiB of float32) per block.
BLOCK_PRODUCTS = 1 << 24
# A block with at least this many classes per thread gives each class to one thread and counts
# straight into the result; with fewer classes the rows are split and each thread counts into its
# own slice (summed afterwards), so one large class still uses every thread.
CLASSES_PER_THREAD = 8


@njit(parallel=True, cache=True, nogil=True)
def partner_counts(g, owner, slot, own_lo, own_hi, col_group, metric, rsq, csq, e0, inv, upper, n_threads, out):
    """In-range anchor x partner counts of one block of inner products ``g`` (anchors x sample).

    Row i is counted by thread ``owner[i]`` into ``out[slot[i], col_group[j], bin]`` for every
    sampled column j outside ``own_lo[i]:own_hi[i]`` (the row's own class) with d <= t_T; rows
    with ``owner[i] < 0`` are skipped. Slots are disjoint between threads: no races.
    """
    m, n = g.shape
    n_edges = upper.shape[0]
    hi = upper[n_edges - 1]
    for t in prange(n_threads):
        dbuf = np.empty(n, np.float32)
        idx = np.empty(n + 1, np.int32)
        for i in range(m):
            if owner[i] != t:
                continue
            s = slot[i]
            _row_distances(g, i, 0, n, metric, rsq[i], csq, dbuf)
            cnt = _in_range(dbuf, 0, own_lo[i], hi, idx, 0)
            cnt = _in_range(dbuf, own_hi[i], n, hi, idx, cnt)
            for q in range(cnt):
                j = idx[q]
                out[s, col_group[j], _bin(dbuf[j], e0, inv, upper, n_edges)] += 1


@dataclass
class SampledNegatives:
    """In-range counts per used class (rows: classes with >= 2 members, in code order).

    ``counts[c, g, b]``: anchor x partner pairs of class c with partners in group g, in bin b
    (bins 0..T-1 only); ``partners[c, g]``: partners of c in group g; ``complement[c]`` = N - n_c.
    """

    counts: np.ndarray  # (C, G, T) int32 or int64
    partners: np.ndarray  # (C, G) int64
    complement: np.ndarray  # (C,) int64
    sample_rows: int

    @property
    def fraction(self) -> np.ndarray:
        """Sampling fraction m_c / (N - n_c) of each class (1: the complement was enumerated)."""
        return self.partners.sum(axis=1) / np.maximum(self.complement, 1)

    def full_estimate(self) -> np.ndarray:
        """Estimated in-range negatives (C, T): counts * (N - n_c) / m_c."""
        total = np.maximum(self.partners.sum(axis=1), 1)
        return self.counts.sum(axis=1) * (self.complement / total)[:, None]


def sample_partners(n: int, m: int, groups: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The shared sample: min(m, N) sorted row numbers and the group of each (dealt at random).

    Groups must be exchangeable random subsamples: dealing the sorted rows round-robin would make
    each a class-stratified sample, more alike than chance.
    """
    rng = np.random.default_rng([seed, 2])
    size = min(m, n)
    rows = np.arange(n) if size == n else np.sort(rng.choice(n, size=size, replace=False))
    return rows, (rng.permutation(size) % groups).astype(np.int64)


def negatives_by_sampling(p, edges: np.ndarray, m: int, groups: int, seed: int, threads=None,
                          progress=None) -> SampledNegatives:
    """In-range negative counts of every used class's anchors against the shared sample."""
    from opis_cli.threads import thread_limit

    t = len(edges)
    e0, inv, upper = ThresholdBins(edges).kernel_arguments()
    metric, sq = metric_arguments(p)
    sizes = p.class_sizes.astype(np.int64)
    used = np.flatnonzero(sizes >= 2)
    slot_of = np.full(p.n_classes, -1, np.int64)
    slot_of[used] = np.arange(len(used))
    rows, group = sample_partners(p.n, m, groups, seed)
    xs = np.ascontiguousarray(p.x[rows])
    csq = np.ascontiguousarray(sq[rows])
    own_lo_c = np.searchsorted(rows, p.class_bounds[:-1])
    own_hi_c = np.searchsorted(rows, p.class_bounds[1:])
    in_own = np.bincount(p.codes[rows] * groups + group, minlength=p.n_classes * groups).reshape(-1, groups)
    partners = (np.bincount(group, minlength=groups)[None, :] - in_own[used]).astype(np.int64)
    group_max = int(np.bincount(group, minlength=groups).max())
    big = int(sizes.max()) * group_max >= np.iinfo(np.int32).max
    counts = np.zeros((len(used), groups, t), np.int64 if big else np.int32)

    anchors = np.flatnonzero(sizes[p.codes] >= 2)  # singletons are no class's anchors
    block = int(max(64, min(16384, BLOCK_PRODUCTS // max(len(rows), 1))))
    with thread_limit(threads) as nt:
        for a0 in range(0, len(anchors), block):
            r = anchors[a0:a0 + block]
            cls = p.codes[r]
            g = p.x[r] @ xs.T
            local = slot_of[cls]
            first, last = int(local[0]), int(local[-1])
            n_local = last - first + 1
            if n_local >= CLASSES_PER_THREAD * nt:
                owner = (local % nt).astype(np.int64)
                partner_counts(g, owner, local, own_lo_c[cls], own_hi_c[cls], group, metric, sq[r], csq,
                               e0, inv, upper, nt, counts)
            else:
                owner = (np.arange(len(r)) % nt).astype(np.int64)
                slot = owner * n_local + (local - first)
                out = np.zeros((nt * n_local, groups, t), counts.dtype)
                partner_counts(g, owner, slot, own_lo_c[cls], own_hi_c[cls], group, metric, sq[r], csq,
                               e0, inv, upper, nt, out)
                counts[first:last + 1] += out.reshape(nt, n_local, groups, t).sum(axis=0, dtype=counts.dtype)
            if progress is not None:
                progress(min(a0 + block, len(anchors)), len(anchors))
    return SampledNegatives(counts=counts, partners=partners, complement=p.n - sizes[used], sample_rows=len(rows))


def wilson_interval(hits: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% for z = 1.96)."""
    if total == 0:
        return 0.0, 1.0
    phat = hits / total
    den = 1 + z * z / total
    centre = phat + z * z / (2 * total)
    spread = z * math.sqrt(phat * (1 - phat) / total + z * z / (4 * total * total))
    return max(0.0, (centre - spread) / den), min(1.0, (centre + spread) / den)
