"""The approximate engines: with generous settings they reproduce the exact figures; otherwise
they state their method, diagnostics and error bars."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from opis_cli.engine.approximate import ApproxOptions
from opis_cli.config import EvalConfig
from opis_cli.errors import ConfigError
from opis_cli.data.io import Dataset, InputInfo, encode_labels
from opis_cli.pipeline.evaluation import evaluate_dataset

from test_cli import SAMPLE, run


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(11)
    c = 40
    codes = rng.integers(0, c, 1500)
    spread = rng.uniform(0.6, 1.4, c)
    x = rng.normal(size=(c, 24))[codes] * 0.6 + spread[codes, None] * rng.normal(size=(1500, 24))
    return Dataset(x.astype(np.float32), encode_labels(codes), InputInfo(None, "array"))


@pytest.fixture(scope="module")
def exact(dataset):
    return evaluate_dataset(dataset, EvalConfig(k=(1, 3)), engine="exact")


def _pinned(exact):
    return EvalConfig(calib=(exact.calibration.lo, exact.calibration.hi), k=(1, 3))


def test_ivf_probing_every_list_is_exact(dataset, exact):
    opts = ApproxOptions(index="ivf", nlist=16, nprobe=16, negatives="range")
    r = evaluate_dataset(dataset, _pinned(exact), engine="ivf", approx=opts)
    assert r.approximation["negatives"] == "range"
    assert r.approximation["checks"]["range_recall"] == 1.0
    assert r.approximation["checks"]["knn_recall"] == 1.0
    # FAISS and BLAS round inner products differently: a pair within ~1e-7 of a threshold may move.
    assert r.opis == pytest.approx(exact.opis, rel=1e-6)
    assert r.eps_opis == pytest.approx(exact.eps_opis, rel=1e-6)
    assert r.recall_at_k == exact.recall_at_k
    np.testing.assert_allclose(r.curves.tar, exact.curves.tar, rtol=0, atol=0)  # positives are exact


def test_sampling_the_whole_complement_is_exact(dataset, exact):
    opts = ApproxOptions(index="hnsw", negatives="sample", samples_per_anchor=10_000, ef_search=512)
    r = evaluate_dataset(dataset, _pinned(exact), engine="hnsw", approx=opts)
    assert r.approximation["negatives"] == "sample"
    assert r.opis == pytest.approx(exact.opis, rel=1e-6)
    assert r.approximation["errors"]["opis"]["se"] == pytest.approx(0.0, abs=1e-12)


def test_sampled_estimate_has_an_honest_error_bar(dataset, exact):
    inside = 0
    for seed in range(5):
        opts = ApproxOptions(index="ivf", negatives="sample", samples_per_anchor=200, seed=seed)
        r = evaluate_dataset(dataset, _pinned(exact), engine="ivf", approx=opts)
        lo, hi = r.approximation["errors"]["opis"]["interval"]
        inside += lo <= exact.opis <= hi
        assert abs(r.opis / exact.opis - 1) < 0.05
    assert inside >= 4  # 95% t intervals


def test_same_seed_same_json(dataset, exact):
    opts = ApproxOptions(index="ivf", negatives="sample", samples_per_anchor=300, seed=3)
    a = evaluate_dataset(dataset, _pinned(exact), engine="ivf", approx=opts).to_json()
    b = evaluate_dataset(dataset, _pinned(exact), engine="ivf", approx=opts).to_json()
    assert a == b


def test_auto_switches_with_a_message_and_states_why(dataset, monkeypatch):
    # On a machine 10^7 times slower (the reference rates scaled down), 1,500 rows are over the
    # limit and well covered: auto runs IVF, says so, and the report records the choice.
    from opis_cli.engine import cost

    said = []
    r = evaluate_dataset(dataset, EvalConfig(), engine="auto", notify=said.append)
    assert r.engine["name"] == "exact" and r.engine["choice"] == "auto" and said == []
    assert "within --max-exact-minutes 10" in r.engine["reason"]
    monkeypatch.setattr(cost, "EXACT_FLOPS_PER_S", cost.EXACT_FLOPS_PER_S / 1e7)
    monkeypatch.setattr(cost, "EXACT_KERNEL_PAIRS_PER_S", cost.EXACT_KERNEL_PAIRS_PER_S / 1e7)
    r = evaluate_dataset(dataset, EvalConfig(), engine="auto", notify=said.append)
    assert r.engine["name"] == "approximate" and r.engine["choice"] == "auto"
    assert "approximate (IVF)" in r.engine["reason"] and r.engine["approximate_minutes_estimate"] > 0
    assert said[0].startswith("using the approximate engine:") and "--index exact" in said[0]
    # --tar-at-far (like --group-col) needs exact figures: auto keeps the exact engine and says why.
    r = evaluate_dataset(dataset, EvalConfig(), engine="auto", tar_at_far=(0.01,), notify=said.append)
    assert r.engine["name"] == "exact" and r.engine["reason"].startswith("--tar-at-far needs the exact engine")


def test_bad_approximate_options():
    with pytest.raises(ConfigError, match="range search needs --index ivf"):
        ApproxOptions(index="hnsw", negatives="range")
    with pytest.raises(ConfigError, match="sample-groups"):
        ApproxOptions(sample_groups=1)


def test_cli_approximate_report_states_method_and_errors(tmp_path):
    proc = run("evaluate", SAMPLE / "model_b.parquet", "--index", "ivf", "--negatives", "sample",
               "--samples-per-anchor", "400", "--json", "-", "--no-save", check_code=0)
    report = json.loads(proc.stdout)
    a = report["approximation"]
    assert report["engine"]["name"] == "approximate" and report["engine"]["index"] == "ivf"
    assert a["negatives"] == "sample" and a["positives"] == "exact"
    assert set(a["errors"]) == {"opis", "eps_opis", "recall_at_k"} and a["errors"]["opis"]["se"] > 0
    assert 0 < a["checks"]["knn_recall"] <= 1
    assert a["options"]["samples_per_anchor"] == 400 and a["options"]["seed"] == 0
    assert a["warnings"] == []
    # Every headline figure is an estimate inside its stated 95% interval, with se and method.
    metrics = report["metrics"]
    entries = [(metrics["opis"], a["errors"]["opis"]), (metrics["eps_opis"], a["errors"]["eps_opis"])]
    entries += [(metrics["recall_at_k"][k], a["errors"]["recall_at_k"][k]) for k in metrics["recall_at_k"]]
    for value, entry in entries:
        lo, hi = entry["interval"]
        assert lo <= value <= hi and isinstance(entry["method"], str) and "se" in entry
    # The index's own count is a diagnostic; the exact engine's figures lie inside the intervals.
    assert set(a["checks"]["index_recall_at_k"]) == set(metrics["recall_at_k"])
    exact = json.loads((Path(__file__).parent / "golden" / "model_b.json").read_text())
    lo, hi = a["errors"]["recall_at_k"]["1"]["interval"]
    assert lo <= exact["metrics"]["recall_at_k"]["1"] <= hi


def test_benchmark_smoke_runs():
    import importlib.util

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    for name in ("bench_engine", "bench_approx", "coverage_approx"):
        spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out = module.main(["--smoke"])
        assert out  # prints throughput / accuracy; asserts nothing about speed


def _tiny_classes(seed: int, n: int = 5000) -> Dataset:
    """Mostly classes of 2-3 items plus four of 40-80, compact (every class accepts its positives
    early, so utilities differ by their false accepts): sampling noise in every class's utility."""
    rng = np.random.default_rng([seed, 7])
    sizes = list(rng.integers(40, 80, 4))
    total = int(sum(sizes))
    while total < n:
        sizes.append(min(int(rng.integers(2, 4)), n - total))
        total += sizes[-1]
    codes = np.repeat(np.arange(len(sizes)), sizes)[rng.permutation(n)]
    c = len(sizes)
    x = rng.normal(size=(c, 16))[codes] + rng.uniform(0.2, 0.5, c)[codes, None] * rng.normal(size=(n, 16))
    return Dataset(x.astype(np.float32), encode_labels(codes), InputInfo(None, "array"))


TINY_RANGE = (0.307, 0.673)  # these sets' FAR 0.001 and 0.1 thresholds (within 1e-3)


def test_sampled_opis_intervals_cover_the_exact_value_with_many_tiny_classes():
    # ~2,000 classes of 2-3 items, 200 sampled rows: each class's utility carries sampling noise
    # whose variance inflates the across-class variance (OPIS). Uncorrected (the engine before the
    # bias correction) the estimate sat 23 se high on average and its interval held the exact value
    # in 0 of these 20 sets; a calibrated 95% interval holds it in >= 16 of 20 with probability
    # 0.997, and the mean z is within 1 of 0 unless the se is off by far more than its own noise
    # (sd of the mean ~ 0.25).
    config = EvalConfig(calib=TINY_RANGE, k=(1,))
    inside, z = 0, []
    for seed in range(20):
        data = _tiny_classes(seed)
        exact = evaluate_dataset(data, config, engine="exact")
        opts = ApproxOptions(negatives="sample", samples_per_anchor=200, seed=seed, nlist=16, nprobe=2,
                             check_queries=100)
        r = evaluate_dataset(data, config, engine="ivf", approx=opts)
        err = r.approximation["errors"]["opis"]
        inside += err["interval"][0] <= exact.opis <= err["interval"][1]
        z.append((r.opis - exact.opis) / err["se"])
    assert inside >= 16, (inside, z)
    assert abs(float(np.mean(z))) < 1.0, z


def test_exact_figures_lie_inside_the_intervals_on_a_tiny_class_set():
    data = _tiny_classes(101)
    config = EvalConfig(calib=TINY_RANGE, k=(1, 5))
    exact = evaluate_dataset(data, config, engine="exact")
    r = evaluate_dataset(data, config, engine="ivf",
                         approx=ApproxOptions(negatives="sample", samples_per_anchor=300, seed=4, check_queries=500))
    errors = r.approximation["errors"]
    for name in ("opis", "eps_opis"):
        lo, hi = errors[name]["interval"]
        assert lo <= getattr(exact, name) <= hi and lo <= getattr(r, name) <= hi, name
    for k in (1, 5):
        lo, hi = errors["recall_at_k"][str(k)]["interval"]
        assert lo <= exact.recall_at_k[k] <= hi and lo <= r.recall_at_k[k] <= hi


def test_recall_headline_corrects_a_weak_index():
    # One probed list of 128: the index misses other-label neighbours, which turns misses into hits.
    data = _tiny_classes(5, n=3000)
    config = EvalConfig(calib=TINY_RANGE, k=(1, 5))
    exact = evaluate_dataset(data, config, engine="exact")
    opts = ApproxOptions(negatives="sample", samples_per_anchor=300, nlist=128, nprobe=1, check_queries=800)
    r = evaluate_dataset(data, config, engine="ivf", approx=opts)
    a = r.approximation
    for k in (1, 5):
        index_count = a["checks"]["index_recall_at_k"][str(k)]
        lo, hi = a["errors"]["recall_at_k"][str(k)]["interval"]
        assert index_count > hi  # the index's own count is clearly off: outside the stated interval
        assert r.recall_at_k[k] != index_count and lo <= r.recall_at_k[k] <= hi
        assert lo <= exact.recall_at_k[k] <= hi
        assert abs(r.recall_at_k[k] - exact.recall_at_k[k]) < abs(index_count - exact.recall_at_k[k]) / 2
    # Per-class hit counts (the class bootstrap's input) add up to the headline.
    queries, hits = r.class_recall
    for k in (1, 5):
        assert hits[k].sum() / queries.sum() == pytest.approx(r.recall_at_k[k], abs=1e-12)
        assert np.all(hits[k] >= 0) and np.all(hits[k] <= queries)


def test_coverage_problem_names_the_uncovered_shape():
    from opis_cli.engine.approximate import coverage_problem

    rng = np.random.default_rng(0)
    tiny = np.concatenate([rng.integers(2, 5, 200_000), [300] * 50])  # 200k classes of 2-4 items
    reason = coverage_problem(tiny, int(tiny.sum()), 128, ApproxOptions())
    assert reason is not None and "2-5 members" in reason
    bench = np.full(10_000, 100)  # the benchmarked shape: N / 100 classes
    assert coverage_problem(bench, int(bench.sum()), 128, ApproxOptions()) is None
    few = np.full(2_000, 3)
    assert "samples-per-anchor" in coverage_problem(few, 6_000, 64, ApproxOptions(samples_per_anchor=50))
    # Range search samples nothing: no sampling-noise condition applies.
    assert coverage_problem(tiny, int(tiny.sum()), 128, ApproxOptions(negatives="range")) is None


def test_an_uncovered_shape_is_reported_and_announced():
    data = _tiny_classes(3, n=2000)
    said = []
    r = evaluate_dataset(data, EvalConfig(calib=TINY_RANGE), engine="ivf",
                         approx=ApproxOptions(negatives="sample", samples_per_anchor=40), notify=said.append)
    warnings = r.approximation["warnings"]
    assert "sampled anchor x partner pairs" in warnings[0] and said == warnings


def test_approximate_cost_is_a_pure_function_of_the_shape():
    from opis_cli.engine.approximate import approximate_cost

    sizes = np.full(1000, 100)
    a = approximate_cost(100_000, 128, sizes, 1, ApproxOptions(), 0.1)
    assert a == approximate_cost(100_000, 128, sizes, 1, ApproxOptions(), 0.1)
    assert a["seconds"] > 0 and a["bytes"] > 100_000 * 128 * 4  # the IVF index holds a copy of the rows
    bigger = approximate_cost(1_000_000, 128, np.full(10_000, 100), 1, ApproxOptions(), 0.1)
    assert bigger["seconds"] > 5 * a["seconds"] and bigger["bytes"] > a["bytes"]
