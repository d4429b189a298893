"""The exact engine on a Dask cluster: the same stripe function as the local engine, identical
results, survives a worker lost mid-run. Uses a LocalCluster of worker processes on this machine."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import opis_cli  # noqa: E402
from opis_cli.engine.dask_engine import local_cluster_client  # noqa: E402
from opis_cli.engine.accumulators import ClassCounts, GroupCounts, PooledCounts  # noqa: E402
from opis_cli.engine.panels import row_stripes  # noqa: E402
from opis_cli.engine.sweep import run_stripes  # noqa: E402
from opis_cli.data.prepare import prepare_embeddings  # noqa: E402

from test_cli import SAMPLE, run  # noqa: E402

BUDGET = 16 << 20  # small panels: many stripes, so tasks are many and short


@pytest.fixture(scope="module")
def client():
    c = local_cluster_client(2)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 60, 5000)
    x = rng.normal(size=(60, 24))[y] + rng.normal(size=(5000, 24)) * rng.uniform(0.5, 1.5, 60)[y, None]
    return x, y


def _without_engine(report) -> dict:
    d = report.to_dict()
    d.pop("engine")
    return d


def test_stripes_partition_the_pairs_and_merge_in_any_order(data):
    x, y = data
    p = prepare_embeddings(x, y, 60)
    edges = np.linspace(0.3, 0.9, 21)
    groups = np.arange(p.n) % 7
    specs = [ClassCounts(edges, kmax=2), PooledCounts(edges, with_sums=True), GroupCounts(edges, groups, 7)]
    stripes = row_stripes(p.n, BUDGET)
    whole = run_stripes(p, [a.fresh() for a in specs], stripes, memory_budget=BUDGET, n_threads=2)
    parts = [run_stripes(p, [a.fresh() for a in specs], [s], memory_budget=BUDGET, n_threads=1) for s in stripes]
    merged = parts[-1]
    for part in reversed(parts[:-1]):
        merged = [a.merge(b) for a, b in zip(merged, part)]
    np.testing.assert_array_equal(merged[0].anchored, whole[0].anchored)
    np.testing.assert_array_equal(merged[0].pos, whole[0].pos)
    np.testing.assert_array_equal(merged[0].neighbours.same, whole[0].neighbours.same)
    np.testing.assert_array_equal(np.sort(merged[0].neighbours.other, axis=1), np.sort(whole[0].neighbours.other, axis=1))
    np.testing.assert_array_equal(merged[1].counts, whole[1].counts)
    np.testing.assert_allclose(merged[1].sums, whole[1].sums, rtol=1e-12)
    np.testing.assert_array_equal(merged[2].pos, whole[2].pos)
    np.testing.assert_array_equal(merged[2].neg, whole[2].neg)


@pytest.mark.parametrize("options", [dict(k=(1, 3)), dict(calib=(0.4, 0.9), k=(1,))])
def test_dask_engine_gives_the_local_figures_byte_for_byte(client, data, options):
    x, y = data
    local = opis_cli.evaluate(x, y, memory_budget=BUDGET, **options)
    seen = []
    remote = opis_cli.evaluate(x, y, memory_budget=BUDGET, client=client,
                               progress=lambda stage, done, total: seen.append((stage, done, total)), **options)
    assert remote.engine["executor"] == "dask"
    assert json.dumps(_without_engine(remote)) == json.dumps(_without_engine(local))
    assert seen and seen[-1][1] == seen[-1][2]  # progress from task completion reaches the end


def test_a_worker_lost_mid_run_is_survived(data):
    x, y = data
    local = opis_cli.evaluate(x, y, memory_budget=BUDGET, calib=(0.4, 0.9), k=(1, 2))
    c = local_cluster_client(2)
    try:
        victim = sorted(c.scheduler_info()["workers"])[0]
        killed = []

        def progress(stage, done, total):
            if not killed:  # after the first finished task, kill a worker process (its nanny restarts it)
                killed.append(victim)
                c.run(lambda: threading.Timer(0.05, os._exit, [1]).start(), workers=[victim])

        remote = opis_cli.evaluate(x, y, memory_budget=BUDGET, calib=(0.4, 0.9), k=(1, 2), client=c,
                                   progress=progress)
        assert killed
        assert json.dumps(_without_engine(remote)) == json.dumps(_without_engine(local))
    finally:
        cluster = c.cluster
        c.close()
        cluster.close()


def test_cli_engine_dask_with_a_local_cluster(tmp_path):
    args = ("evaluate", SAMPLE / "model_a.parquet", "--calib", "0.6:0.85", "--json", "-", "--no-save", "-q")
    local = json.loads(run(*args, check_code=0).stdout)
    remote = json.loads(run(*args, "--engine", "dask", "--workers", "2", check_code=0).stdout)
    assert remote.pop("engine") == {"name": "exact", "passes": 1, "executor": "dask", "choice": "auto",
                                    "reason": "a Dask cluster was given"}
    local.pop("engine")
    assert remote == local


def test_benchmark_smoke_runs():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_dask.py"
    proc = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["engine"] for r in rows] == ["local", "dask, 1 worker(s)", "dask, 2 worker(s)"]
    assert all(r.get("identical", True) for r in rows)


def test_dask_group_counts_give_the_local_report(client, data):
    # --group-col, --eer and --retrieval on the cluster: the group accumulator (its specs scattered
    # once), the whole-span per-class counts and the MAP@R buckets give the local report byte for byte.
    from dataclasses import replace

    from opis_cli.config import EvalConfig
    from opis_cli.data.io import encode_labels
    from opis_cli.pipeline.evaluation import array_dataset, evaluate_dataset

    x, y = data
    ds = array_dataset(x, y)
    ds = replace(ds, groups=encode_labels(np.arange(len(y)) % 5), info=replace(ds.info, group_column="g"))
    config = EvalConfig(calib=(0.4, 0.9), eer=True, retrieval=True)
    local = evaluate_dataset(ds, config, memory_budget=BUDGET, engine="exact")
    remote = evaluate_dataset(ds, config, memory_budget=BUDGET, engine="exact", client=client)
    assert remote.groups == local.groups and remote.groups["groups_used"] == 5
    assert {"eer", "map_at_r"} <= set(_without_engine(local)["metrics"])
    assert json.dumps(_without_engine(remote)) == json.dumps(_without_engine(local))


def test_the_reference_kernel_on_a_cluster_is_a_usage_error(client, data):
    from opis_cli.engine.sweep import exact_pass
    from opis_cli.errors import ConfigError

    x, y = data
    p = prepare_embeddings(x, y, 60)
    with pytest.raises(ConfigError, match="drop --kernel numpy"):
        exact_pass(p, np.linspace(0.3, 0.9, 5), kernel="numpy", client=client)


def test_dask_query_reference_mode_gives_the_local_report(client, data):
    # --reference on the cluster: rectangular panels (queries x references), the same figures.
    from opis_cli.config import EvalConfig
    from opis_cli.data.reference import with_reference
    from opis_cli.pipeline.evaluation import array_dataset, evaluate_dataset

    x, y = data
    ds = with_reference(array_dataset(x[::2], y[::2]), array_dataset(x[1::2], y[1::2]))
    config = EvalConfig(calib=(0.4, 0.9), retrieval=True, k=(1, 3))
    local = evaluate_dataset(ds, config, memory_budget=BUDGET, engine="exact")
    remote = evaluate_dataset(ds, config, memory_budget=BUDGET, engine="exact", client=client)
    assert "reference" in local.input
    assert json.dumps(_without_engine(remote)) == json.dumps(_without_engine(local))
