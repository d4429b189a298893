"""Property-based tests: every figure against the brute-force reference (tests/bruteforce.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import opis_cli
from opis_cli.errors import ConfigError

from bruteforce import far_threshold, reference

TIE_GAP = 1e-5  # float32 distances vs float64 reference: farther than this from a threshold agree


@st.composite
def class_layouts(draw, max_n=48):
    """Labels with singletons, a possibly dominant class and at least two classes of size >= 2."""
    n_classes = draw(st.integers(2, 8))
    dominant = draw(st.booleans())
    sizes = [draw(st.integers(1, 8)) for _ in range(n_classes)]
    if dominant:
        sizes[0] = draw(st.integers(10, max_n - sum(sizes[1:]) if max_n - sum(sizes[1:]) > 10 else 10))
    assume(sum(1 for s in sizes if s >= 2) >= 2 and sum(sizes) <= max_n + 10)
    labels = np.repeat(np.arange(n_classes), sizes)
    perm = draw(st.permutations(range(len(labels))))
    return labels[np.array(perm)]


@st.composite
def generic_case(draw):
    """Continuous random embeddings (with duplicated rows) and a random grid, no near-ties."""
    labels = draw(class_layouts())
    n = len(labels)
    d = draw(st.integers(2, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(labels.max() + 1, d)) * draw(st.sampled_from([0.5, 1.0, 2.0]))
    x = centres[labels] + rng.normal(size=(n, d))
    n_dup = draw(st.integers(0, 3))
    for _ in range(n_dup):  # duplicate points inside a class, as real data has
        i = int(rng.integers(n))
        same = np.flatnonzero(labels == labels[i])
        x[same[int(rng.integers(len(same)))]] = x[i]
    metric, normalize = draw(st.sampled_from([("cosine", True), ("l2", True), ("l2", False)]))
    lo = draw(st.floats(0.05, 1.0))
    width = draw(st.floats(0.05, 1.0))
    hi = lo + width if (metric == "cosine" or normalize) else (lo + width) * 3
    if metric == "cosine" or normalize:
        hi = min(hi, 2.0)
    t = draw(st.integers(2, 12))
    ks = tuple(sorted(set(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))))
    return labels, x.astype(np.float32), metric, normalize, (lo, hi), t, ks


def _assume_no_near_ties(ref, labels, grid):
    dist = ref["dist"]
    iu, ju = np.triu_indices(len(labels), 1)
    d = dist[iu, ju]
    assume(np.min(np.abs(d[:, None] - grid[None, :])) > TIE_GAP)
    # Recall: no other-label item within the gap of the query's nearest same-label item.
    for q in range(len(labels)):
        same = (labels == labels[q])
        same[q] = False
        if not same.any():
            continue
        m = dist[q][same].min()
        other = dist[q][labels != labels[q]]
        assume(np.all(np.abs(other - m) > TIE_GAP))


def _no_pair_inside(ref, labels, lo, hi) -> bool:
    """No pair distance in (lo, hi]: every threshold of the range makes the same decisions, the
    curves are flat, and the pipeline refuses the range (docs/errors.md) instead of reporting it."""
    iu, ju = np.triu_indices(len(labels), 1)
    pair_d = ref["dist"][iu, ju]
    return not ((pair_d > lo) & (pair_d <= hi)).any()


def _check(report, ref, labels):
    assert report.labels == ref["labels"]
    np.testing.assert_allclose(report.curves.tar, ref["tar"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(report.curves.trr, ref["trr"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(report.curves.utility, ref["utility"], rtol=1e-12, atol=1e-12)
    assert report.opis == pytest.approx(ref["opis"], rel=1e-9, abs=1e-15)
    np.testing.assert_allclose(report.opis_contributions, ref["contributions"], rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(report.mean_utility, ref["mean_utility"], rtol=1e-12, atol=1e-12)
    assert report.eps_opis == pytest.approx(ref["eps_opis"], rel=1e-9, abs=1e-15)
    assert sorted(report.worst.tolist()) == ref["worst"]
    for k, v in ref["recall"].items():
        assert report.recall_at_k[k] == pytest.approx(v, abs=1e-12), k


@given(generic_case(), st.sampled_from([0.5, 1.0, 2.0]), st.sampled_from([0.1, 0.25, 0.5]),
       st.sampled_from(["rest", "best"]), st.sampled_from([8, 16, 1 << 20]))
def test_matches_bruteforce_on_random_data(case, beta, epsilon, contrast, tile):
    labels, x, metric, normalize, (lo, hi), t, ks = case
    assume(max(ks) <= len(labels) - 1)
    grid = np.linspace(lo, hi, t)
    ref_kwargs = dict(metric=metric, normalize=normalize, beta=beta, epsilon=epsilon, contrast=contrast, ks=ks)
    c_used = sum(1 for c in set(labels.tolist()) if (labels == c).sum() >= 2)
    w = math.ceil(round(epsilon * c_used, 9))
    if (contrast == "rest" and w >= c_used) or (contrast == "best" and 2 * w > c_used):
        with pytest.raises(ConfigError):
            opis_cli.evaluate(x, labels, metric=metric, normalize=normalize, calib=(lo, hi), thresholds=t,
                              epsilon=epsilon, eps_contrast=contrast)
        return
    ref = reference(x, labels, grid, **ref_kwargs)
    _assume_no_near_ties(ref, labels, grid)
    if _no_pair_inside(ref, labels, lo, hi):
        with pytest.raises(ConfigError, match="no pair distance lies inside"):
            opis_cli.evaluate(x, labels, metric=metric, normalize=normalize, calib=(lo, hi), thresholds=t,
                              beta=beta, epsilon=epsilon, eps_contrast=contrast, k=ks)
        return
    report = opis_cli.evaluate(
        x, labels, metric=metric, normalize=normalize, calib=(lo, hi), thresholds=t, beta=beta,
        epsilon=epsilon, eps_contrast=contrast, k=ks, memory_budget=tile * tile * 30,
    )
    _check(report, ref, labels)


@st.composite
def lattice_case(draw):
    """Vectors whose normalised entries are exact dyadic numbers: every distance and every grid
    threshold is exact in float32 and float64 alike, so ties at thresholds are real ties."""
    labels = draw(class_layouts(max_n=40))
    n = len(labels)
    dim = 16
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = np.zeros((n, dim))
    protos = [rng.choice([-1.0, 1.0], size=dim) for _ in range(labels.max() + 1)]
    for i in range(n):
        if rng.random() < 0.5:  # norm 2: four entries of +-1
            idx = rng.choice(dim, size=4, replace=False)
            x[i, idx] = protos[labels[i]][idx]
            if rng.random() < 0.3:
                x[i, idx[0]] *= -1
        else:  # norm 4: sixteen entries of +-1
            x[i] = protos[labels[i]] * np.where(rng.random(dim) < 0.15, -1, 1)
    # Grid on multiples of 1/16 in [0, 2]: lo, hi integers in sixteenths, T - 1 divides hi - lo.
    lo16 = draw(st.integers(0, 28))
    hi16 = draw(st.integers(lo16 + 1, 32))
    divisors = [m for m in range(1, hi16 - lo16 + 1) if (hi16 - lo16) % m == 0]
    step = draw(st.sampled_from(divisors))
    t = (hi16 - lo16) // step + 1
    assume(t >= 2)
    ks = tuple(sorted(set(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))))
    return labels, x.astype(np.float32), (lo16 / 16, hi16 / 16), t, ks


@given(lattice_case(), st.sampled_from([0.5, 1.0, 3.0]), st.sampled_from([8, 1 << 20]))
def test_exact_ties_at_thresholds_and_between_neighbours(case, beta, tile):
    labels, x, (lo, hi), t, ks = case
    assume(max(ks) <= len(labels) - 1)
    grid = np.linspace(lo, hi, t)
    assert np.all(grid * 16 == np.round(grid * 16))  # the grid is exact
    c_used = sum(1 for c in set(labels.tolist()) if (labels == c).sum() >= 2)
    assume(math.ceil(0.1 * c_used) < c_used)
    ref = reference(x, labels, grid, beta=beta, ks=ks)
    if _no_pair_inside(ref, labels, lo, hi):
        with pytest.raises(ConfigError, match="no pair distance lies inside"):
            opis_cli.evaluate(x, labels, calib=(lo, hi), thresholds=t, beta=beta, k=ks)
        return
    report = opis_cli.evaluate(x, labels, calib=(lo, hi), thresholds=t, beta=beta, k=ks,
                               memory_budget=tile * tile * 30)
    _check(report, ref, labels)


@given(generic_case(), st.sampled_from([(0.001, 0.1), (0.01, 0.5), (0.05, 0.2)]))
def test_far_calibration_matches_bruteforce(case, far):
    labels, x, metric, normalize, _, t, _ = case
    assume(metric == "cosine")
    ref_dist = reference(x, labels, np.array([0.0, 1.0]))["dist"]
    lo = far_threshold(ref_dist, labels, far[0])
    hi = far_threshold(ref_dist, labels, far[1])
    iu, ju = np.triu_indices(len(labels), 1)
    neg = ref_dist[iu, ju][labels[iu] != labels[ju]]
    for edge in (lo, lo - 1e-4, hi, hi - 1e-4):  # the count at the deciding edges must be unambiguous
        assume(np.min(np.abs(neg - edge)) > 1e-6)
    if not lo < hi:
        with pytest.raises(ConfigError):
            opis_cli.evaluate(x, labels, calib_far=far, thresholds=t)
        return
    report = opis_cli.evaluate(x, labels, calib_far=far, thresholds=t)
    assert report.calibration.lo == lo
    assert report.calibration.hi == hi
    assert report.calibration.mode == "far"
    # FAR actually reached at lo and hi, exactly, from the pair counts.
    assert report.far_at_lo == pytest.approx(np.mean(neg <= lo), abs=1e-12)
    assert report.far_at_hi == pytest.approx(np.mean(neg <= hi), abs=1e-12)
    assert report.far_at_lo >= far[0] - 1e-12


@pytest.mark.parametrize("cut", ["sampled", "too_low", "none"])
def test_far_calibration_grid_cut_never_changes_the_range(monkeypatch, cut):
    # The calibration pass counts on a fine grid cut at a sampled upper bound; a cut too low must
    # be detected and the pass repeated, so the range is that of the whole grid in every case.
    from opis_cli.statistics import calibration

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 12, 700)
    x = rng.normal(size=(12, 8))[labels] + rng.normal(size=(700, 8)) * 1.2
    whole = opis_cli.evaluate(x, labels, calib_far=(0.01, 0.2))
    passes = []
    orig_pass = calibration.exact_pass
    monkeypatch.setattr(calibration, "exact_pass", lambda *a, **k: passes.append(len(a[1])) or orig_pass(*a, **k))
    if cut == "too_low":
        monkeypatch.setattr(calibration, "_upper_edge_index", lambda *a: 3)
    elif cut == "none":
        monkeypatch.setattr(calibration, "_upper_edge_index", lambda p, edges, *a: len(edges) - 1)
    report = opis_cli.evaluate(x, labels, calib_far=(0.01, 0.2))
    assert (report.calibration.lo, report.calibration.hi) == (whole.calibration.lo, whole.calibration.hi)
    assert report.to_json() == whole.to_json()
    full = len(calibration.fine_edges(2.0)[0])
    if cut == "sampled":
        assert len(passes) == 1 and passes[0] < full / 2  # one pass, on a cut grid
    else:
        assert passes == {"too_low": [4, full], "none": [full]}[cut]


@pytest.mark.parametrize("seed", range(12))
def test_float64_input_agrees_with_a_float64_bruteforce(seed):
    # Computed in float32 (with a note): pairs within float32 rounding of a threshold may change
    # sides, which moves OPIS by far less than 1e-5 on realistic data; the truth here is float64.
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(4, 12))
    labels = rng.integers(0, n_classes, 240)
    d = int(rng.integers(4, 64))
    scale = 10.0 ** rng.uniform(-3, 3)  # the float32 conversion must not depend on the input's scale
    x = (rng.normal(size=(n_classes, d))[labels] + rng.uniform(0.3, 1.5) * rng.normal(size=(240, d))) * scale
    metric, normalize = [("cosine", True), ("l2", True), ("l2", False)][seed % 3]
    ref64 = reference(x, labels, np.array([0.0, 1.0]), metric=metric, normalize=normalize, as_float32=False)
    iu, ju = np.triu_indices(len(labels), 1)
    dist = ref64["dist"][iu, ju]
    lo, hi = np.quantile(dist, [0.02, 0.3])
    grid = np.linspace(lo, hi, 51)
    ref = reference(x, labels, grid, metric=metric, normalize=normalize, as_float32=False)
    said = []
    from opis_cli.config import EvalConfig
    from opis_cli.data.io import Dataset, InputInfo, encode_labels
    from opis_cli.pipeline.evaluation import evaluate_dataset

    report = evaluate_dataset(Dataset(x.astype(np.float32), encode_labels(labels),
                                      InputInfo(None, "array", dtype="float64")),
                              EvalConfig(metric=metric, normalize=normalize, calib=(float(lo), float(hi)),
                                         thresholds=51), notify=said.append)
    assert any("float64; computed in float32" in m for m in said)
    assert report.input["dtype"] == "float64"
    assert abs(report.opis - ref["opis"]) <= 1e-5
    assert abs(report.eps_opis - ref["eps_opis"]) <= 1e-5
    # And through the public call with the float64 array itself.
    direct = opis_cli.evaluate(x, labels, metric=metric, normalize=normalize, calib=(float(lo), float(hi)),
                               thresholds=51)
    assert direct.input["dtype"] == "float64" and direct.opis == report.opis
