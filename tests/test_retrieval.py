"""MAP@R and R-precision (docs/definitions.md, "Retrieval metrics"): against brute force, with exact
ties, against pytorch-metric-learning when it is installed, and through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import opis_cli

from bruteforce import distance_matrix, retrieval
from test_cli import run
from test_oracle import generic_case, lattice_case

GAP = 1e-5  # float32 vs float64 distances: farther apart than this, the two rank alike


def _per_class(values, labels, used):
    return np.array([np.nanmean(values[labels == c]) for c in used])


def _check(report, x, labels, metric="cosine", normalize=True):
    dist = distance_matrix(x, metric, normalize)
    ap, rp = retrieval(dist, labels)
    r = report.retrieval
    assert r.queries == int(np.isfinite(ap).sum())
    assert r.map_at_r == pytest.approx(np.nanmean(ap), abs=1e-12)
    assert r.r_precision == pytest.approx(np.nanmean(rp), abs=1e-12)
    np.testing.assert_allclose(r.class_map_at_r, _per_class(ap, labels, report.labels), atol=1e-12)
    np.testing.assert_allclose(r.class_r_precision, _per_class(rp, labels, report.labels), atol=1e-12)
    rows = report.to_dict()["classes"]
    assert [row["map_at_r"] for row in rows] == [float(v) for v in r.class_map_at_r]


def _no_near_ties(x, labels, metric, normalize):
    dist = distance_matrix(x, metric, normalize)
    for q in range(len(labels)):
        same = labels == labels[q]
        same[q] = False
        if same.any() and (~same).sum() > 1:
            other = dist[q][(labels != labels[q])]
            if np.min(np.abs(dist[q][same][:, None] - other[None, :])) <= GAP:
                return False
    return True


@given(generic_case(), st.sampled_from([8, 16, 1 << 20]))
def test_matches_bruteforce_on_random_data(case, tile):
    labels, x, metric, normalize, _, _, _ = case
    assume(_no_near_ties(x, labels, metric, normalize))
    report = opis_cli.evaluate(x, labels, metric=metric, normalize=normalize, calib_far=(0.01, 0.5),
                               retrieval=True, memory_budget=tile * tile * 30)
    _check(report, x, labels, metric, normalize)


@given(lattice_case())
def test_exact_ties_rank_against_the_query(case):
    # Lattice embeddings: every distance exact in float32 and float64, so positives and negatives
    # at equal distance are real ties, ranked with the negative first.
    labels, x, _, _, _ = case
    sizes = np.bincount(labels)
    assume(np.ceil(0.1 * (sizes >= 2).sum()) < (sizes >= 2).sum())
    dist = distance_matrix(x)
    iu = np.triu_indices(len(labels), 1)
    assume(dist[iu].max() > dist[iu].min())
    report = opis_cli.evaluate(x, labels, calib=(float(dist[iu].min()), float(dist[iu].max())), thresholds=5,
                               retrieval=True, memory_budget=8 * 8 * 30)
    _check(report, x, labels)


def test_matches_pytorch_metric_learning():
    pytest.importorskip("pytorch_metric_learning")
    torch = pytest.importorskip("torch")
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(20), rng.integers(2, 12, 20))
    x = (rng.normal(size=(20, 24))[y] * 0.8 + rng.normal(size=(len(y), 24))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    calc = AccuracyCalculator(include=("mean_average_precision_at_r", "r_precision"), k="max_bin_count")
    pml = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(x), torch.from_numpy(y),
                            ref_includes_query=True)
    report = opis_cli.evaluate(x, y, retrieval=True)
    assert report.retrieval.map_at_r == pytest.approx(pml["mean_average_precision_at_r"], abs=1e-6)
    assert report.retrieval.r_precision == pytest.approx(pml["r_precision"], abs=1e-6)


def test_cli_retrieval_and_refusal(sample_dir):
    proc = run("evaluate", sample_dir / "model_b.parquet", "--retrieval", "--no-save", "--json", "-", check_code=0)
    report = json.loads(proc.stdout)
    m = report["metrics"]
    assert 0 < m["map_at_r"] <= m["r_precision"] <= 1 and m["queries"] == 3000 - 2
    assert all(0 <= c["map_at_r"] <= 1 for c in report["classes"]) and report["config"]["retrieval"] is True
    assert "MAP@R / R-precision" in proc.stderr
    refused = run("evaluate", sample_dir / "model_b.parquet", "--retrieval", "--index", "hnsw", "--no-save")
    assert refused.returncode == 2 and "--retrieval needs the exact engine" in refused.stderr


def test_compare_shows_map_at_r_and_eer_where_both_runs_have_them():
    from opis_cli.report.runs import SavedRun

    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(10), 8)
    x = rng.normal(size=(10, 12))[y] + rng.normal(size=(80, 12))
    a = opis_cli.evaluate(x, y, retrieval=True, eer=True)
    b = opis_cli.evaluate(x + 0.8 * rng.normal(size=x.shape), y, retrieval=True, eer=True)
    plain = opis_cli.evaluate(x, y)
    result = opis_cli.compare_runs([SavedRun.from_report(r, n) for r, n in ((a, "a"), (b, "b"), (plain, "p"))])
    assert result.deltas["b"]["map_at_r"]["delta"] == pytest.approx(b.retrieval.map_at_r - a.retrieval.map_at_r)
    assert result.deltas["b"]["eer"]["delta"] == pytest.approx(float(b.eer.pooled.eer - a.eer.pooled.eer))
    assert "map_at_r" not in result.deltas["p"]
    rows = {row[0]: row[1:] for row in result.table()[1]}
    assert rows["MAP@R"][2] == "-" and rows["EER (pooled)"][0] != "-"


def test_retrieval_state_beyond_the_memory_budget_is_refused_before_any_pass():
    from opis_cli.errors import ConfigError

    # Two classes of 700: 2 x 700 x 699 (query, positive) pairs, 20 bytes each: ~19.6 MB > 16 MiB.
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 700)
    x = rng.normal(size=(1400, 4))
    with pytest.raises(ConfigError, match="exact MAP@R over 1,400 queries .* more than --memory-budget"):
        opis_cli.evaluate(x, y, retrieval=True, calib=(0.1, 0.9), memory_budget=1 << 20)
    assert opis_cli.evaluate(x, y, retrieval=True, calib=(0.1, 0.9), memory_budget=64 << 20).retrieval.queries == 1400
