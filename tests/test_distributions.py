"""Whole-span pair-distance histograms (for plots) against a brute-force count, and their
round trip through the run directory's table."""

from __future__ import annotations

import numpy as np

from opis_cli.engine.distributions import POOLED, DistanceDistributions, distance_distributions
from opis_cli.data.prepare import prepare_embeddings


def test_histograms_equal_bruteforce_when_every_item_is_an_anchor():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, 120)
    x = (rng.normal(size=(5, 6))[labels] + rng.normal(size=(120, 6))).astype(np.float32)
    p = prepare_embeddings(x, labels, 5)
    d = distance_distributions(p, [2, 4], ["two", "four"], bins=50, anchors=1000, memory_budget=4096)
    xs = p.x.astype(np.float64)
    dist = 1.0 - xs @ xs.T
    same = p.codes[:, None] == p.codes[None, :]
    off = ~np.eye(p.n, dtype=bool)
    for s, rows in enumerate([np.arange(p.n), np.flatnonzero(p.codes == 2), np.flatnonzero(p.codes == 4)]):
        for mask, counts in ((same & off, d.pos[s]), (~same, d.neg[s])):
            values = dist[rows][mask[rows]]
            ref = np.bincount(np.clip((values * 25).astype(int), 0, 49), minlength=50)
            # float32 vs float64 distances may straddle a bin edge: compare totals exactly and
            # bins to within a pair or two.
            assert counts.sum() == ref.sum() and np.abs(counts - ref).sum() <= 4
    assert d.scopes == [POOLED, "two", "four"] and d.anchors == [120, int((p.codes == 2).sum()), int((p.codes == 4).sum())]
    back = DistanceDistributions.from_table(d.to_table())
    assert back.scopes == d.scopes and back.anchors == d.anchors
    assert np.array_equal(back.pos, d.pos) and np.array_equal(back.neg, d.neg) and np.allclose(back.edges, d.edges)


def test_pooled_anchors_are_a_seeded_sample():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 400)
    p = prepare_embeddings(rng.normal(size=(400, 4)).astype(np.float32), labels, 3)
    a = distance_distributions(p, [], [], anchors=50, seed=1)
    b = distance_distributions(p, [], [], anchors=50, seed=1)
    assert a.anchors == [50] and np.array_equal(a.neg, b.neg)
    assert a.pos.sum() + a.neg.sum() == 50 * 399


def test_the_binning_kernel_equals_the_numpy_binning_bit_for_bit():
    # The kernel replaced numpy's (g * scale).astype(int64) + clip + masks: same float32 product,
    # same truncation, same positives (own class minus the item itself) and negatives.
    from opis_cli.engine.distributions import bin_counts

    rng = np.random.default_rng(7)
    for metric, normalize in (("cosine", True), ("l2", False)):
        labels = rng.integers(0, 6, 300)
        x = (rng.normal(size=(6, 5))[labels] + rng.normal(size=(300, 5))).astype(np.float32)
        p = prepare_embeddings(x, labels, 6, metric=metric, normalize=normalize)
        from opis_cli.engine.distance import gram_to_distance

        r = np.sort(rng.choice(p.n, 40, replace=False))
        g = p.x[r] @ p.x.T
        if p.sq_norms is not None:
            gram_to_distance(g, p.metric, p.sq_norms[r], p.sq_norms)
        else:
            gram_to_distance(g, p.metric)
        g[0, :3] = [-1e-7, 1e9, 0.0]  # below the span and beyond it: clipped to the end bins
        lo, hi = p.class_bounds[p.codes[r]], p.class_bounds[p.codes[r] + 1]
        bins, scale = 37, 37 / 2.3
        pos, neg = np.zeros(bins, np.int64), np.zeros(bins, np.int64)
        bin_counts(g, r, lo, hi, scale, bins, pos, neg)
        b = np.clip((g * scale).astype(np.int64), 0, bins - 1)
        cols = np.arange(p.n)[None, :]
        same = (cols >= lo[:, None]) & (cols < hi[:, None])
        same[np.arange(r.size), r] = False
        other = (cols < lo[:, None]) | (cols >= hi[:, None])
        assert np.array_equal(pos, np.bincount(b[same], minlength=bins))
        assert np.array_equal(neg, np.bincount(b[other], minlength=bins))


def test_anchor_distributions_on_the_sweep_equal_the_standalone_sample():
    # The exact engine collects the pooled anchors' distances on the main sweep (AnchorDistances):
    # the same ordered pairs as the standalone computation, each anchor against every other item.
    from opis_cli.engine.distributions import AnchorDistances, anchor_sample
    from opis_cli.engine.sweep import sweep

    rng = np.random.default_rng(11)
    labels = rng.integers(0, 6, 700)
    x = (rng.normal(size=(6, 5))[labels] + rng.normal(size=(700, 5))).astype(np.float32)
    p = prepare_embeddings(x, labels, 6)
    _, rows = anchor_sample(p, 90, 0)
    pos, neg = sweep(p, [AnchorDistances(rows, 60, 2.0)], memory_budget=50_000, threads=2).results[0]
    alone = distance_distributions(p, [], [], bins=60, anchors=90)
    assert pos.sum() + neg.sum() == 90 * 699 == alone.pos.sum() + alone.neg.sum()
    assert pos.sum() == alone.pos.sum()
    # Panel products and row products may round a distance differently: a pair or two per bin edge.
    assert np.abs(pos - alone.pos[0]).sum() + np.abs(neg - alone.neg[0]).sum() <= 6
    both = distance_distributions(p, [1], ["one"], bins=60, anchors=90, pooled=(pos, neg))
    assert np.array_equal(both.pos[0], pos) and both.anchors[0] == 90
