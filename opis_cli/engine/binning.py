"""Exact assignment of distances to the bins of a threshold grid.

For thresholds t_0 < ... < t_{T-1}, a distance d goes to bin

    0        if d <= t_0
    k        if t_{k-1} < d <= t_k      (1 <= k <= T-1)
    T        if d >  t_{T-1}

so the number of pairs accepted at t_k (d <= t_k) is the sum of bins 0..k: a cumulative sum
of the histogram gives exact counts at every threshold. The bin is first computed
arithmetically (fast but can be off by one next to an edge) and then corrected by comparing
with the edges themselves, so the result equals the comparison ``d <= t_k`` for the float32
distance ``d``, bit for bit.
"""

from __future__ import annotations

import numpy as np


def round_down_float32(values: np.ndarray) -> np.ndarray:
    """The largest float32 <= each float64 value: for float32 d, d <= t iff d <= round_down(t)."""
    v = np.asarray(values, dtype=np.float64)
    f = v.astype(np.float32)
    too_big = f.astype(np.float64) > v
    f[too_big] = np.nextafter(f[too_big], np.float32(-np.inf))
    return f


class ThresholdBins:
    """Bins of a uniform threshold grid ``linspace(lo, hi, T)``; ``n_bins = T + 1``."""

    def __init__(self, edges: np.ndarray):
        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
            raise ValueError("edges must be a strictly increasing 1-D grid of at least 2 values")
        self.edges = edges
        self.n_edges = edges.size
        self.n_bins = edges.size + 1
        e32 = round_down_float32(edges)
        self.edges32 = e32
        self._lower = np.concatenate([[-np.inf], e32]).astype(np.float32)
        self._upper = np.concatenate([e32, [np.inf]]).astype(np.float32)
        step = (edges[-1] - edges[0]) / (edges.size - 1)
        self._scale = np.float32(1.0 / step)
        self._offset = np.float32(-edges[0] / step)

    def kernel_arguments(self) -> tuple[np.float32, np.float32, np.ndarray]:
        """(first edge, 1 / step, float32 edges rounded down): the grid as the numba kernels take it."""
        return np.float32(self.edges[0]), self._scale, self.edges32

    def assign(self, d: np.ndarray, out: np.ndarray, scratch: np.ndarray, flag: np.ndarray) -> np.ndarray:
        """Write the bin of every element of ``d`` into ``out`` (int64, same shape).

        ``scratch`` (float32) and ``flag`` (bool) are caller-owned work buffers of the same shape,
        so a block costs no allocation.
        """
        np.multiply(d, self._scale, out=scratch)
        np.add(scratch, self._offset, out=scratch)
        np.ceil(scratch, out=scratch)
        np.clip(scratch, 0, self.n_edges, out=scratch)
        np.copyto(out, scratch, casting="unsafe")
        # Arithmetic binning is within one bin of the truth; one comparison each way fixes it.
        np.take(self._lower, out, out=scratch)
        np.less_equal(d, scratch, out=flag)
        np.subtract(out, flag, out=out)
        np.take(self._upper, out, out=scratch)
        np.greater(d, scratch, out=flag)
        np.add(out, flag, out=out)
        return out

    def assign_simple(self, d: np.ndarray) -> np.ndarray:
        """Allocating variant of :meth:`assign` for small inputs."""
        d = np.ascontiguousarray(d, dtype=np.float32)
        out = np.empty(d.shape, dtype=np.int64)
        return self.assign(d, out, np.empty(d.shape, np.float32), np.empty(d.shape, bool))
