"""The class bootstrap's batched figures (per-class draw counts and matrix products) against the
plain definition applied to each resampled set of curve rows."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from opis_cli.statistics.bootstrap import _summary, class_bootstrap, paired_class_bootstrap
from opis_cli.statistics.metrics import eps_opis, opis


def _reference(u, grid, epsilon, contrast, queries, hits, replicates, seed):
    """Every replicate by the definition: draw C rows with replacement, sort them (label order),
    recompute OPIS, eps-OPIS and Recall@k on the drawn rows."""
    rng = np.random.default_rng([seed, 11])
    out = {"opis": [], "eps_opis": [], **{k: [] for k in hits}}
    for _ in range(replicates):
        idx = np.sort(rng.integers(0, u.shape[0], u.shape[0]))
        out["opis"].append(opis(u[idx], grid).value)
        out["eps_opis"].append(eps_opis(u[idx], grid, epsilon=epsilon, contrast=contrast).value)
        for k in hits:
            out[k].append(hits[k][idx].sum() / queries[idx].sum())
    return {name: np.array(v) for name, v in out.items()}


@st.composite
def runs(draw):
    c = draw(st.integers(4, 40))
    t = draw(st.integers(2, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Coarse values make exact ties in mean utility (the tie rule) common.
    levels = draw(st.sampled_from([3, 5, 1000]))
    u = rng.integers(0, levels, (c, t)) / (levels - 1)
    grid = np.cumsum(rng.uniform(0.1, 1.0, t))
    contrast = draw(st.sampled_from(["rest", "best"]))
    epsilon = draw(st.sampled_from([0.05, 0.1, 0.25, 0.4]))
    if contrast == "best" and 2 * int(np.ceil(round(epsilon * c, 9))) > c:
        epsilon = 0.05
    queries = rng.integers(2, 30, c)
    hits = {1: rng.integers(0, 2, c) * queries // 2, 5: queries - rng.integers(0, 2, c)}
    return u, grid, epsilon, contrast, queries, hits, seed % 1000


@given(runs())
def test_batched_bootstrap_equals_the_definition_on_every_resample(case):
    u, grid, epsilon, contrast, queries, hits, seed = case
    ref = _reference(u, grid, epsilon, contrast, queries, hits, 45, seed)
    got = class_bootstrap(u, grid, epsilon=epsilon, contrast=contrast, recall_hits=hits, recall_queries=queries,
                          replicates=45, seed=seed)
    for name in ("opis", "eps_opis"):
        want = _summary(ref[name])
        np.testing.assert_allclose(got[name]["interval"], want["interval"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got[name]["se"], want["se"], rtol=1e-7, atol=1e-12)
    for k in hits:
        want = _summary(ref[k])
        np.testing.assert_allclose(got["recall_at_k"][str(k)]["interval"], want["interval"], rtol=1e-12)


@given(runs(), st.integers(0, 2**32 - 1))
def test_paired_bootstrap_equals_the_definition_on_every_resample(case, other_seed):
    u, grid, epsilon, contrast, queries, hits, seed = case
    rng = np.random.default_rng(other_seed)
    u2 = np.clip(u + rng.normal(0, 0.1, u.shape), 0, 1)
    grid2 = grid * 1.5 + 0.2  # matched-FAR runs: each its own range
    hits2 = {k: np.minimum(queries, h + rng.integers(0, 2, len(h))) for k, h in hits.items()}
    a = _reference(u, grid, epsilon, contrast, queries, hits, 30, seed)
    b = _reference(u2, grid2, epsilon, contrast, queries, hits2, 30, seed)
    got = paired_class_bootstrap((u, grid), (u2, grid2), epsilon=epsilon, contrast=contrast,
                                 baseline_recall=(queries, hits), current_recall=(queries, hits2), replicates=30,
                                 seed=seed)
    for name in ("opis", "eps_opis"):
        want = _summary(b[name] - a[name])
        np.testing.assert_allclose(got[name]["interval"], want["interval"], rtol=1e-7, atol=1e-12)
    for k in hits:
        want = _summary(b[k] - a[k])
        np.testing.assert_allclose(got["recall_at_k"][str(k)]["interval"], want["interval"], rtol=1e-9, atol=1e-12)
