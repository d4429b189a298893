"""The approximate engines: with generous settings they reproduce the exact figures; otherwise
they state their method, diagnostics and error bars."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from opis_cli.approximate import ApproxOptions
from opis_cli.config import EvalConfig
from opis_cli.errors import ConfigError
from opis_cli.io import Dataset, InputInfo, encode_labels
from opis_cli.pipeline import evaluate_dataset

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


def test_auto_switches_with_a_message(dataset):
    said = []
    r = evaluate_dataset(dataset, EvalConfig(), engine="auto", max_exact_seconds=0.0, notify=said.append)
    assert r.engine["name"] == "approximate" and "approximate engine" in said[0]
    r = evaluate_dataset(dataset, EvalConfig(), engine="auto", notify=said.append)
    assert r.engine["name"] == "exact" and len(said) == 1


@pytest.mark.parametrize("calib", [None, (0.5, 0.9)])
def test_auto_times_the_exact_engine_on_a_sample_when_the_choice_is_close(dataset, monkeypatch, calib):
    # The fixed cost model only fits the machine it was measured on; near the limit the engine is
    # timed on seeded rows of the data itself, and the estimate decides (both ways).
    from opis_cli import cost

    monkeypatch.setattr(cost, "PROBE_ROWS", 700)
    monkeypatch.setattr(cost, "PROBE_WINDOW", 1e12)
    config = EvalConfig(calib=calib) if calib else EvalConfig()
    said = []
    r = evaluate_dataset(dataset, config, engine="auto", max_exact_seconds=1e-9, notify=said.append)
    estimate = r.timings["exact_estimate"]
    assert r.engine["name"] == "approximate" and "timed on a sample of this data" in said[-1]
    assert estimate["method"] == "probe" and estimate["probe_pairs"] == 700 * 699 // 2
    assert estimate["passes"] == (1 if calib else 2) and estimate["seconds"] > 0
    r = evaluate_dataset(dataset, config, engine="auto", max_exact_seconds=1e9, notify=said.append)
    assert r.engine["name"] == "exact" and r.timings["exact_estimate"]["method"] == "probe"
    # Far from the limit the model alone decides and nothing is timed.
    monkeypatch.setattr(cost, "PROBE_WINDOW", 20.0)
    r = evaluate_dataset(dataset, config, engine="auto", max_exact_seconds=600, notify=said.append)
    assert r.timings["exact_estimate"]["method"] == "model"


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
    assert report["engine"] == {"name": "approximate", "index": "ivf"}
    assert a["negatives"] == "sample" and a["positives"] == "exact"
    assert set(a["errors"]) == {"opis", "eps_opis", "recall_at_k"} and a["errors"]["opis"]["se"] > 0
    assert 0 < a["checks"]["knn_recall"] <= 1
    assert a["options"]["samples_per_anchor"] == 400 and a["options"]["seed"] == 0
    # Recall@1 by exact search on the check queries: its interval holds the exact engine's figure.
    sampled = a["errors"]["recall_at_k"]["1"]
    assert sampled["queries"] == 500
    exact = json.loads((Path(__file__).parent / "golden" / "model_b.json").read_text())
    lo, hi = sampled["interval"]
    assert lo <= exact["metrics"]["recall_at_k"]["1"] <= hi
    assert lo <= sampled["exact_on_sample"] <= hi


def test_benchmark_smoke_runs():
    import importlib.util

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    for name in ("bench_engine", "bench_approx", "coverage_approx"):
        spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out = module.main(["--smoke"])
        assert out  # prints throughput / accuracy; asserts nothing about speed
