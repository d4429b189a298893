"""The fused numba kernel against the numpy reference block path: identical counts and
neighbours, for every metric, panel shape and thread count."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from opis_cli.engine.histograms import PairHistograms
from opis_cli.engine.panels import iter_panels, panel_shape
from opis_cli.engine.sweep import exact_pass
from opis_cli.data.prepare import prepare_embeddings


@st.composite
def datasets(draw):
    n = draw(st.integers(3, 90))
    c = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    codes = rng.integers(0, c, n)
    x = rng.normal(size=(c, 5))[codes] * draw(st.sampled_from([0.0, 1.0, 3.0])) + rng.normal(size=(n, 5))
    if draw(st.booleans()):
        x[rng.integers(0, n, 3)] = x[0]  # duplicates, across classes too
    return x.astype(np.float32), codes, c


@given(datasets(), st.sampled_from([("cosine", True), ("l2", True), ("l2", False)]),
       st.integers(2, 30), st.sampled_from([0, 1, 3]), st.sampled_from([1920, 30_000, 1 << 30]),
       st.sampled_from([1, 2]), st.booleans())
def test_fused_kernel_equals_numpy_reference(data, metric, t, kmax, budget, threads, per_class):
    x, codes, c = data
    p = prepare_embeddings(x, codes, c, metric=metric[0], normalize=metric[1])
    hi = 2.0 if metric[1] else 2.0 * p.max_norm
    edges = np.linspace(0.3 * hi, 0.7 * hi, t)
    kmax = kmax if per_class else 0
    a = exact_pass(p, edges, kmax=kmax, per_class=per_class, memory_budget=budget, kernel="numba", threads=threads)
    b = exact_pass(p, edges, kmax=kmax, per_class=per_class, memory_budget=budget, kernel="numpy")
    np.testing.assert_array_equal(a.histograms.pos, b.histograms.pos)
    np.testing.assert_array_equal(a.histograms.neg, b.histograms.neg)
    if kmax:
        queries = p.class_sizes[p.codes] >= 2
        if kmax > 1:
            np.testing.assert_array_equal(a.neighbours.same, b.neighbours.same)
            np.testing.assert_array_equal(np.sort(a.neighbours.other, axis=1), np.sort(b.neighbours.other, axis=1))
            for k in range(1, kmax + 1):
                np.testing.assert_array_equal(a.neighbours.hits(k)[queries], b.neighbours.hits(k)[queries])
        else:
            _check_recall1_minima(a.neighbours, b.neighbours, queries, edges[-1])


def _check_recall1_minima(fused, ref, queries, hi):
    """kmax == 1: the kernel keeps minima over in-range pairs (d <= hi, bit-identical to the
    reference); pairs.resolve_far_neighbours computes the rest with its own matrix products,
    equal to within float32 rounding of the inner product, and leaves an other-label minimum at
    +inf only when the query is a hit anyway."""
    tol = 1e-5 * max(1.0, float(hi))  # a few float32 roundings of a distance of this size
    near = ref.same <= hi - tol
    np.testing.assert_array_equal(fused.same[near], ref.same[near])
    np.testing.assert_allclose(fused.same, ref.same, rtol=0, atol=tol)
    known = np.isfinite(fused.other[:, 0])
    np.testing.assert_allclose(fused.other[known], ref.other[known], rtol=0, atol=tol)
    far = ~known & queries
    assert (ref.other[far, 0] > hi - tol).all() and (ref.same[far] < ref.other[far, 0]).all()
    decided = queries & (np.abs(ref.same - ref.other[:, 0]) > tol)  # not a float32 near-tie
    np.testing.assert_array_equal(fused.hits(1)[decided], ref.hits(1)[decided])


@pytest.mark.parametrize("n, budget", [(1, 1 << 20), (100, 1920), (1000, 30_000), (5000, 1 << 30)])
def test_panels_cover_the_upper_triangle_once(n, budget):
    rows, cols = panel_shape(n, budget)
    seen = 0
    for i0, i1, j0, j1 in iter_panels(n, rows, cols):
        assert j0 >= i0 and i1 <= n and j1 <= n
        r = np.arange(i0, i1)[:, None]
        col = np.arange(j0, j1)[None, :]
        seen += int((col > r).sum())
    assert seen == n * (n - 1) // 2


def test_histograms_add_up_across_disjoint_pair_sets():
    edges = np.linspace(0, 1, 5)
    a = PairHistograms(edges, np.ones((2, 6), np.int64), np.ones((2, 6), np.int64))
    s = a + a
    assert s.pos.sum() == 24 and s.pooled().neg.sum() == 12
    with pytest.raises(ValueError):
        a + PairHistograms(edges + 1, a.pos, a.neg)


def test_public_api_runs_on_the_non_spinning_thread_pool():
    # The pool is fixed at numba's first thread launch; entering through the public API (not by
    # importing kernels first) must still get the workqueue pool (docs/performance.md).
    import os
    import subprocess
    import sys

    code = ("import numpy as np, opis_cli, numba; "
            "opis_cli.evaluate(np.random.default_rng(0).normal(size=(200, 4)), np.arange(200) % 4, calib=(0.2, 1.0)); "
            "print(numba.threading_layer())")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "workqueue"


@given(st.sampled_from([0, 1]), st.floats(-0.5, 2.5, width=32), st.integers(0, 2**32 - 1))
def test_similarity_floor_selects_exactly_the_in_range_pairs(metric, hi, seed):
    # The kernels pick in-range pairs by g >= floor instead of computing d(g) <= hi: the two must
    # agree on every float32 inner product, the ones next to the floor included.
    from opis_cli.engine import kernels

    hi = np.float32(hi)
    floor = kernels.similarity_floor(metric, hi)
    rng = np.random.default_rng(seed)
    s = rng.uniform(-1.05, 1.05, 2000).astype(np.float32)
    if np.isfinite(floor):
        near = np.array([floor], np.float32)
        for _ in range(3):
            near = np.r_[near, np.nextafter(near[-1:], np.float32(np.inf)), np.nextafter(near[:1], np.float32(-np.inf))]
        s = np.r_[s, near.astype(np.float32)]
    d = np.array([kernels.kernel_distance(v, metric) for v in s], np.float32)
    assert np.array_equal(s >= floor, d <= hi)


def test_every_accumulator_on_one_sweep_equals_its_own_pass():
    # Riding on one sweep changes nothing: class counts, group counts, pooled sums and anchor
    # distributions from a shared sweep equal each from a sweep of its own, bit for bit.
    from opis_cli.engine.accumulators import ClassCounts, GroupCounts, PooledCounts
    from opis_cli.engine.distributions import AnchorDistances
    from opis_cli.engine.sweep import sweep

    rng = np.random.default_rng(5)
    codes = rng.integers(0, 9, 500)
    x = (rng.normal(size=(9, 8))[codes] + rng.normal(size=(500, 8))).astype(np.float32)
    p = prepare_embeddings(x, codes, 9)
    edges = np.linspace(0.2, 0.9, 31)
    groups = rng.integers(0, 4, 500)[p.order]
    specs = [ClassCounts(edges, kmax=1), GroupCounts(edges, groups, 4), PooledCounts(edges, with_sums=True),
             PooledCounts(np.linspace(0, 2.001, 50), with_sums=True, positives_only=True),
             AnchorDistances(np.arange(0, 500, 7), 40, 2.0)]
    together = sweep(p, specs, memory_budget=40_000, threads=2).results
    alone = [sweep(p, [spec], memory_budget=40_000, threads=1).results[0] for spec in specs]
    np.testing.assert_array_equal(together[0].histograms.pos, alone[0].histograms.pos)
    np.testing.assert_array_equal(together[0].histograms.neg, alone[0].histograms.neg)
    np.testing.assert_array_equal(together[0].neighbours.same, alone[0].neighbours.same)
    for r in (1, 2, 3):
        np.testing.assert_array_equal(together[r].pos, alone[r].pos)
        np.testing.assert_array_equal(together[r].neg, alone[r].neg)
    np.testing.assert_allclose(together[2].neg_sum, alone[2].neg_sum, rtol=1e-12)
    np.testing.assert_array_equal(together[4][0], alone[4][0])
    np.testing.assert_array_equal(together[4][1], alone[4][1])
    # Exact against the reference path, and the pooled view of the class counts equals PooledCounts.
    ref = exact_pass(p, edges, kmax=1, kernel="numpy", memory_budget=40_000)
    np.testing.assert_array_equal(together[0].histograms.pos, ref.histograms.pos)
    np.testing.assert_array_equal(together[0].histograms.pooled().neg, together[2].neg)
