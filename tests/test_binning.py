"""The grid binning equals the comparison d <= t for every float32 distance, at every edge."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from opis_cli.engine.binning import ThresholdBins, round_down_float32
from opis_cli.statistics.curves import accepted_at_thresholds


def exact_bins(d32: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # float32 -> float64 is exact, so this is the true comparison d <= t.
    return (d32.astype(np.float64)[:, None] > edges[None, :]).sum(axis=1)


@given(
    lo=st.floats(-0.5, 1.5), width=st.floats(1e-4, 2.0), t=st.integers(2, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_bins_equal_exact_comparisons(lo, width, t, seed):
    edges = np.linspace(lo, lo + width, t)
    rng = np.random.default_rng(seed)
    e32 = round_down_float32(edges)
    # Values on, just below and just above every edge, plus random ones around the grid.
    near = np.concatenate([e32, np.nextafter(e32, np.float32(-np.inf)), np.nextafter(e32, np.float32(np.inf)),
                           edges.astype(np.float32)])
    rand = rng.uniform(lo - 0.1, lo + width + 0.1, size=500).astype(np.float32)
    d = np.concatenate([near, rand, np.float32([-1e30, 1e30, 0.0, -0.0])]).astype(np.float32)
    got = ThresholdBins(edges).assign_simple(d)
    np.testing.assert_array_equal(got, exact_bins(d, edges))


def test_round_down_float32_is_largest_float32_below():
    v = np.array([0.1, 1 / 3, 2.0, -0.7, 1e-9])
    r = round_down_float32(v)
    assert np.all(r.astype(np.float64) <= v)
    assert np.all(np.nextafter(r, np.float32(np.inf)).astype(np.float64) > v)


def test_cumulative_counts_are_accepted_pairs():
    edges = np.array([0.2, 0.4, 0.6])
    d = np.float32([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    hist = np.bincount(ThresholdBins(edges).assign_simple(d), minlength=4)
    # d <= 0.2: {0.1, 0.2}; d <= 0.4: +{0.3, 0.4}; d <= 0.6: +{0.5, 0.6}. float32(0.2) > 0.2, etc.
    expected = [(d.astype(np.float64) <= t).sum() for t in edges]
    np.testing.assert_array_equal(accepted_at_thresholds(hist), expected)
