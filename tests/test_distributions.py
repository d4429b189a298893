"""Whole-span pair-distance histograms (for plots) against a brute-force count, and their
round trip through the run directory's table."""

from __future__ import annotations

import numpy as np

from opis_cli.distributions import POOLED, DistanceDistributions, distance_distributions
from opis_cli.prepare import prepare_embeddings


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
