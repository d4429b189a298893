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

from .distance import metric_upper_bound
from .errors import ConfigError
from .pairs import PooledHistogram, ProgressCallback, exact_pass
from .prepare import PreparedEmbeddings

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
) -> tuple[CalibrationRange, PooledHistogram]:
    """Derive [lo, hi] from pooled FAR bounds with one exact pooled pass over all pairs."""
    edges, step = fine_edges(metric_upper_bound(p.metric, p.normalized, p.max_norm))
    result = exact_pass(p, edges, per_class=False, memory_budget=memory_budget, progress=progress,
                        threads=threads, kernel=kernel)
    pooled = result.histograms
    lo = threshold_at_far(edges, pooled.neg, far_lo)
    hi = threshold_at_far(edges, pooled.neg, far_hi)
    if not lo < hi:
        raise ConfigError(
            f"--calib-far {far_lo:g}:{far_hi:g} resolves to a single threshold ({lo:g}): the "
            "negative distances jump past both FAR levels at once; widen the range or pass --calib"
        )
    return CalibrationRange(lo=lo, hi=hi, mode="far", far_target=(far_lo, far_hi), resolution=step), pooled
