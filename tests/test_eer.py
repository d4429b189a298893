"""EER (docs/definitions.md, "EER"): the grid figure and its interval against brute force, through
the library and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import opis_cli
from opis_cli.statistics.eer import EER_THRESHOLDS, equal_error_rates

from bruteforce import distance_matrix, pair_lists
from test_cli import run
from test_oracle import lattice_case


def _exact_eer(pos: np.ndarray, neg: np.ndarray) -> list[float]:
    """Every EER the definition allows: (FAR + FRR) / 2 at each threshold t (all real t: -inf and
    every pair distance) where |FAR(t) - FRR(t)| is smallest."""
    candidates = np.concatenate([[-np.inf], np.unique(np.concatenate([pos, neg]))])
    far, frr = _rates(pos, neg, candidates)
    gap = np.abs(far - frr)
    best = gap <= gap.min() + 1e-12
    return sorted(set(((far + frr) / 2)[best].round(12).tolist()))


def _on_grid(pos, neg, grid):
    """The grid threshold with the smallest |FAR - FRR| (first within 1e-12) and its EER."""
    far, frr = _rates(pos, neg, grid)
    gap = np.abs(far - frr)
    k = int(np.flatnonzero(gap <= gap.min() + 1e-12)[0])
    return k, (far[k] + frr[k]) / 2


def _rates(pos, neg, thresholds):
    """FAR(t) = share of negatives with d <= t, FRR(t) = share of positives with d > t, by sorting
    the distances (no histogram)."""
    far = np.searchsorted(np.sort(neg), thresholds, side="right") / len(neg) if len(neg) else np.zeros(len(thresholds))
    frr = 1.0 - np.searchsorted(np.sort(pos), thresholds, side="right") / len(pos)
    return far, frr


def _histogram(d, grid):
    # bin b holds t_{b-1} < d <= t_b; bin T holds d > t_T
    return np.bincount(np.searchsorted(grid, d, side="left"), minlength=len(grid) + 1)


@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(0, 200), st.integers(2, 40),
       st.sampled_from([0.0, 0.3, 1.0]))
def test_grid_eer_and_its_interval_against_all_thresholds(seed, n_pos, n_neg, t, overlap):
    rng = np.random.default_rng(seed)
    # Positives near 0.4, negatives near 0.4 + (1 - overlap): from well separated to mixed; some ties.
    pos = np.round(rng.normal(0.4, 0.15, n_pos).clip(0, 2), 2)
    neg = np.round(rng.normal(1.4 - overlap, 0.2, n_neg).clip(0, 2), 2)
    grid = np.sort(np.concatenate([[2.0], rng.uniform(0, 2, t - 1)]))
    assume(len(np.unique(grid)) == t)
    e = equal_error_rates(_histogram(pos, grid), _histogram(neg, grid), grid)
    k, eer = _on_grid(pos, neg, grid)
    assert e.threshold == grid[k]
    assert e.eer == pytest.approx(eer, abs=1e-12)
    assert e.lower <= e.eer + 1e-12 and e.eer <= e.upper + 1e-12
    for exact in _exact_eer(pos, neg):
        assert e.lower - 1e-12 <= exact <= e.upper + 1e-12


def test_a_fine_grid_narrows_the_interval():
    rng = np.random.default_rng(3)
    pos, neg = rng.normal(0.4, 0.1, 3000), rng.normal(0.8, 0.1, 30000)
    coarse, fine = np.linspace(0, 2, 21), np.linspace(0, 2, 2001)
    ec = equal_error_rates(_histogram(pos, coarse), _histogram(neg, coarse), coarse)
    ef = equal_error_rates(_histogram(pos, fine), _histogram(neg, fine), fine)
    assert ef.upper - ef.lower < (ec.upper - ec.lower) / 20
    (exact,) = _exact_eer(pos, neg)
    assert ef.lower <= exact <= ef.upper and ec.lower <= exact <= ec.upper


@given(lattice_case())
def test_evaluate_eer_matches_bruteforce_pair_by_pair(case):
    """Lattice embeddings: every distance is exact in float32 and float64 (a multiple of 1/16), so
    the pooled and per-class EER must equal the brute force's on the same grid exactly."""
    labels, x, _, _, _ = case
    sizes = np.bincount(labels)
    assume((sizes >= 2).sum() >= 2 and np.ceil(0.1 * (sizes >= 2).sum()) < (sizes >= 2).sum())
    dist = distance_matrix(x)
    per_class = pair_lists(dist, labels)
    # A range with pairs inside (the evaluation itself needs one); the EER grid is the whole span.
    iu, ju = np.triu_indices(len(labels), 1)
    d = dist[iu, ju]
    lo, hi = float(d.min()), float(d.max())
    assume(hi > lo)
    report = opis_cli.evaluate(x, labels, calib=(lo, hi), thresholds=5, eer=True)
    grid = report.eer.edges
    assert len(grid) == EER_THRESHOLDS and grid[0] == 0.0 and grid[-1] == 2.0
    used = [c for c, (pos, _) in per_class.items() if len(pos)]
    assert report.labels == used
    for row, c in enumerate(used):
        pos, neg = per_class[c]
        k, eer = _on_grid(pos, neg, grid)
        assert report.eer.classes.threshold[row] == grid[k], c
        assert report.eer.classes.eer[row] == pytest.approx(eer, abs=1e-12), c
        for exact in _exact_eer(pos, neg):
            assert report.eer.classes.lower[row] - 1e-12 <= exact <= report.eer.classes.upper[row] + 1e-12
    same = labels[iu] == labels[ju]
    k, eer = _on_grid(d[same], d[~same], grid)
    assert report.eer.pooled.threshold == grid[k]
    assert report.eer.pooled.eer == pytest.approx(eer, abs=1e-12)
    rows = report.to_dict()["classes"]
    assert [r["eer"] for r in rows] == [float(v) for v in report.eer.classes.eer]


def test_cli_eer_json_rates_and_refusal(tmp_path, sample_dir):
    out = tmp_path / "o"
    proc = run("evaluate", sample_dir / "model_a.parquet", "--eer", "--json", "-", "--quiet", "--out-dir", out,
               "--name", "a", check_code=0)
    report = json.loads(proc.stdout)
    e = report["metrics"]["eer"]
    assert e["interval"][0] <= e["eer"] <= e["interval"][1] and e["resolution"] == pytest.approx(0.001)
    assert report["config"]["eer"] is True and all("eer" in c for c in report["classes"])
    run_ = opis_cli.load_run(out / "runs" / "a")
    assert run_.rates is not None and len(run_.rates["classes"]) == 5
    highest = sorted(report["classes"], key=lambda c: -c["eer"])[0]["label"]
    assert run_.rates["classes"][0][0] == highest
    assert run_.rates["far"][-1] == 1.0 and run_.rates["frr"][-1] == 0.0
    np.testing.assert_allclose(run_.pooled_far[[0, -1]], [report["calibration"]["far_at_lo"],
                                                          report["calibration"]["far_at_hi"]])
    refused = run("evaluate", sample_dir / "model_a.parquet", "--eer", "--index", "ivf", "--no-save")
    assert refused.returncode == 2 and "--eer needs the exact engine" in refused.stderr, refused.stderr


def test_reference_kernel_gives_the_same_eer():
    from opis_cli.config import EvalConfig
    from opis_cli.pipeline.evaluation import array_dataset, evaluate_dataset

    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(12), 9)
    x = rng.normal(size=(len(y), 8)) + rng.normal(size=(12, 8))[y] * 1.5
    ds, config = array_dataset(x, y), EvalConfig(eer=True)
    fused = evaluate_dataset(ds, config, kernel="numba", engine="exact").to_dict()
    reference = evaluate_dataset(ds, config, kernel="numpy", engine="exact").to_dict()
    assert fused["metrics"]["eer"] == reference["metrics"]["eer"]
    assert [c["eer"] for c in fused["classes"]] == [c["eer"] for c in reference["classes"]]
