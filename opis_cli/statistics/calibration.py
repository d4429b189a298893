"""The calibration range [lo, hi] and its threshold grid.

With ``--calib LO:HI`` the range is given. With ``--calib-far LO:HI`` it is read off the pooled
negative-distance distribution: a first exact pass counts every pair into a fine histogram
(resolution 1e-4 in distance), and lo (hi) is the smallest fine edge at which the pooled FAR
reaches LO (HI). Every figure is then exact for that [lo, hi]; the report states both, and the
FAR actually reached at each, so a CI job can pin the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from opis_cli.engine.distance import metric_upper_bound
from opis_cli.errors import ConfigError
from opis_cli.engine.histograms import PooledHistogram
from opis_cli.engine.sweep import ProgressCallback, exact_pass
from opis_cli.data.prepare import PreparedEmbeddings

FAR_RESOLUTION = 1e-4
MAX_FINE_BINS = 1 << 21


@dataclass(frozen=True)
class CalibrationRange:
    """The resolved calibration range.

    ``mode`` is ``"distance"`` (given) or ``"far"`` (derived from ``far_target``);
    ``resolution`` is the distance step to which a FAR-derived range was resolved.
    """

    lo: float
    hi: float
    mode: str
    far_target: tuple[float, float] | None = None
    resolution: float | None = None
    sampled_anchors: int | None = None  # set when the FAR levels were estimated on an anchor sample

    def grid(self, thresholds: int) -> np.ndarray:
        """t_1..t_T = linspace(lo, hi, T)."""
        return np.linspace(self.lo, self.hi, thresholds)


def fine_edges(upper: float) -> tuple[np.ndarray, float]:
    """Edges 0, w, 2w, ... covering [0, upper] with w = 1e-4 (coarser only for huge spans)."""
    per_unit = 1.0 / FAR_RESOLUTION
    if upper * per_unit > MAX_FINE_BINS:
        per_unit = MAX_FINE_BINS / upper
    count = int(math.ceil(upper * per_unit)) + 1
    # j / per_unit, not j * w: for w = 1e-4 this gives the double nearest each 4-decimal value.
    return np.arange(count, dtype=np.float64) / per_unit, 1.0 / per_unit


def threshold_at_far(edges: np.ndarray, neg_counts: np.ndarray, far: float) -> float:
    """Smallest edge t with pooled FAR(t) = #{neg d <= t} / #neg >= far (the last edge if none)."""
    accepted = np.cumsum(neg_counts[:-1])  # bins 0..T-1: d <= edges[k]
    total = int(neg_counts.sum())
    # Compare counts (accepted >= far * total) rather than divided rates, which can round past far.
    need = far * total
    idx = int(np.searchsorted(accepted, need, side="left"))
    return float(edges[min(idx, len(edges) - 1)])


def resolve_far_range(
    p: PreparedEmbeddings,
    far_lo: float,
    far_hi: float,
    *,
    memory_budget: int,
    progress: ProgressCallback | None = None,
    threads: int | None = None,
    kernel: str = "auto",
    client=None,
) -> tuple[CalibrationRange, PooledHistogram]:
    """Derive [lo, hi] from pooled FAR bounds with one exact pooled pass over all pairs.

    Only distances up to the FAR-hi threshold matter, so the pass counts on the fine grid cut at
    an upper bound estimated from a seeded sample of anchors (pairs beyond it go to the overflow
    bin, known from totals). That keeps the pass's in-range share near far_hi instead of 1: at
    N = 100k it took the pass from 39 s to about the main pass's time. Should the exact counts
    show the cut too low, the pass is repeated on the whole grid; the result is the same either
    way, only the time differs.
    """
    edges, pooled, step = pooled_fine_histogram(p, far_hi, memory_budget=memory_budget, progress=progress,
                                                threads=threads, kernel=kernel, client=client)
    return far_range(edges, pooled, step, far_lo, far_hi), pooled


def far_range(edges: np.ndarray, pooled: PooledHistogram, step: float, far_lo: float,
              far_hi: float) -> CalibrationRange:
    """[lo, hi] from a fine pooled histogram (:func:`pooled_fine_histogram` reaching far_hi): the
    smallest edges at which the pooled FAR reaches far_lo and far_hi."""
    lo = threshold_at_far(edges, pooled.neg, far_lo)
    hi = threshold_at_far(edges, pooled.neg, far_hi)
    if not lo < hi:
        raise ConfigError(
            f"--calib-far {far_lo:g}:{far_hi:g} resolves to a single threshold ({lo:g}): the "
            "negative distances jump past both FAR levels at once; widen the range or pass --calib"
        )
    return CalibrationRange(lo=lo, hi=hi, mode="far", far_target=(far_lo, far_hi), resolution=step)


def pooled_fine_histogram(p: PreparedEmbeddings, far_hi: float, *, memory_budget: int,
                          progress: ProgressCallback | None = None, threads: int | None = None,
                          kernel: str = "auto", client=None) -> tuple[np.ndarray, PooledHistogram, float]:
    """(edges, pooled histogram, step): exact pooled counts on the fine grid (step 1e-4), cut where
    a seeded sample puts the pooled FAR well above ``far_hi`` and repeated on the whole grid if the
    exact counts show the cut too low. Every edge up to the first with FAR >= far_hi is exact."""
    full, step = fine_edges(metric_upper_bound(p.metric, p.normalized, p.max_norm))
    # At least two edges: a sample whose FAR target is met at d = 0 (one-dimensional or duplicate
    # embeddings) would otherwise leave a one-edge grid.
    # The sampled cut covers one set's pairs; with references the pass bins the whole grid.
    cut = max(_upper_edge_index(p, full, far_hi, threads), 1) if p.reference is None else len(full) - 1
    for edges in ((full[:cut + 1], full) if cut + 1 < len(full) else (full,)):
        result = exact_pass(p, edges, per_class=False, memory_budget=memory_budget, progress=progress,
                            threads=threads, kernel=kernel, client=client)
        pooled = result.histograms
        if pooled.neg[:-1].sum() >= far_hi * pooled.neg.sum():
            break
    return edges, pooled, step


def threshold_at_most_far(edges: np.ndarray, neg_counts: np.ndarray, far: float) -> float:
    """Largest edge t with pooled FAR(t) = #{neg d <= t} / #neg <= far: the deployment criterion
    (a threshold that accepts at most that share of impostors, like bob.measure's far_threshold).
    The first edge when even it accepts more (the achieved FAR is reported beside it)."""
    accepted = np.cumsum(neg_counts[:-1])
    total = int(neg_counts.sum())
    idx = int(np.searchsorted(accepted, far * total, side="right")) - 1
    return float(edges[max(idx, 0)])


CUT_ANCHORS = 500  # anchors (each against all N items) for the calibration pass's grid cut


def _upper_edge_index(p: PreparedEmbeddings, edges: np.ndarray, far_hi: float, threads) -> int:
    """Index of a fine edge at which the pooled FAR very likely exceeds far_hi: the sampled
    threshold at FAR 1.5 far_hi + 0.002 (a margin of many standard errors of the sample)."""
    sample, _ = sampled_pooled_histogram(p, edges, CUT_ANCHORS, seed=0, threads=threads)
    target = min(1.0, 1.5 * far_hi + 0.002)
    return int(np.searchsorted(edges, threshold_at_far(edges, sample.neg, target)))


def sampled_pooled_histogram(p: PreparedEmbeddings, edges: np.ndarray, anchors: int, seed: int,
                             threads: int | None = None) -> tuple[PooledHistogram, int]:
    """Pooled histogram of the pairs (a, b), a in a seeded uniform sample of ``anchors`` rows and
    b any other row: an unbiased sample of all pairs, at a cost of anchors x N distances."""
    from opis_cli.engine import kernels
    from opis_cli.engine.binning import ThresholdBins
    from opis_cli.threads import thread_limit

    edges = np.asarray(edges, np.float64)
    t = edges.size
    rng = np.random.default_rng([seed, 4])
    rows = np.sort(rng.choice(p.n, size=min(p.n, anchors), replace=False))
    e0, inv, upper = ThresholdBins(edges).kernel_arguments()
    metric, sq = kernels.metric_arguments(p)
    s_min = kernels.similarity_floor(metric, upper[-1])
    all_counts = np.zeros(t, np.int64)
    pos_counts = np.zeros(t, np.int64)
    with thread_limit(threads) as nt:
        for r0 in range(0, len(rows), 256):
            rr = rows[r0:r0 + 256]
            xr = np.ascontiguousarray(p.x[rr])
            c = p.codes[rr]
            for j0 in range(0, p.n, 8192):
                j1 = min(p.n, j0 + 8192)
                g = xr @ p.x[j0:j1].T
                same_lo = np.clip(p.class_bounds[c] - j0, 0, j1 - j0)
                same_hi = np.clip(p.class_bounds[c + 1] - j0, 0, j1 - j0)
                ah = np.zeros((nt, t), np.int64)
                ph = np.zeros((nt, t), np.int64)
                unused = np.zeros((nt, 1), np.float64)
                kernels.block_pooled_counts(g, same_lo, same_hi, False, metric, s_min, sq[rr], sq[j0:j1], e0, inv,
                                            upper, nt, ah, ph, unused, unused, False, False)
                all_counts += ah.sum(axis=0)
                pos_counts += ph.sum(axis=0)
    sizes = p.class_sizes[p.codes[rows]].astype(np.int64)
    # Each anchor meets N - 1 others (its own pair with itself is a same-class column: remove it).
    pos_total = int((sizes - 1).sum())
    neg_total = int(len(rows) * (p.n - 1) - pos_total)
    pos_in = pos_counts.copy()
    pos_in[0] -= len(rows)  # self pairs (d = 0) land in the first bin
    neg_in = all_counts - pos_counts
    pos_h = np.concatenate([pos_in, [pos_total - pos_in.sum()]])
    neg_h = np.concatenate([neg_in, [neg_total - neg_in.sum()]])
    return PooledHistogram(edges=edges, pos=pos_h, neg=neg_h), len(rows)


def estimate_far_range(p: PreparedEmbeddings, far_lo: float, far_hi: float, *, anchors: int, seed: int,
                       threads: int | None = None) -> CalibrationRange:
    """[lo, hi] from pooled FAR bounds estimated on a seeded anchor sample (approximate engines)."""
    edges, step = fine_edges(metric_upper_bound(p.metric, p.normalized, p.max_norm))
    pooled, used = sampled_pooled_histogram(p, edges, anchors, seed, threads)
    lo = threshold_at_far(edges, pooled.neg, far_lo)
    hi = threshold_at_far(edges, pooled.neg, far_hi)
    if not lo < hi:
        raise ConfigError(
            f"--calib-far {far_lo:g}:{far_hi:g} resolves to a single threshold ({lo:g}); widen it or pass --calib"
        )
    return CalibrationRange(lo=lo, hi=hi, mode="far", far_target=(far_lo, far_hi), resolution=step,
                            sampled_anchors=used)
