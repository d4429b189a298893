"""Query/reference mode (``--reference``, docs/definitions.md): every figure against a brute force
over the (query, reference) pairs, the CLI, the report's inputs and the gate's comparability."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import opis_cli
from opis_cli.errors import ConfigError, InputError

from bruteforce import cross_reference
from test_cli import run

GAP = 1e-5


@st.composite
def query_reference_case(draw):
    """Queries and references of a few classes, some classes on one side only."""
    n_classes = draw(st.integers(3, 7))
    q_sizes = [draw(st.integers(0, 6)) for _ in range(n_classes)]
    g_sizes = [draw(st.integers(0, 6)) for _ in range(n_classes)]
    both = [i for i in range(n_classes) if q_sizes[i] and g_sizes[i]]
    assume(len(both) >= 2 and sum(q_sizes) >= 2 and sum(g_sizes) >= 2)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    d = draw(st.integers(2, 8))
    centres = rng.normal(size=(n_classes, d)) * draw(st.sampled_from([0.5, 1.0, 2.0]))
    yq, yg = np.repeat(np.arange(n_classes), q_sizes), np.repeat(np.arange(n_classes), g_sizes)
    xq = (centres[yq] + rng.normal(size=(len(yq), d))).astype(np.float32)
    xg = (centres[yg] + rng.normal(size=(len(yg), d))).astype(np.float32)
    metric, normalize = draw(st.sampled_from([("cosine", True), ("l2", True), ("l2", False)]))
    return xq, rng.permutation(yq) if draw(st.booleans()) else yq, xg, yg, metric, normalize


def _no_near_ties(ref, grid):
    d = ref["dist"].ravel()
    return np.min(np.abs(d[:, None] - np.asarray(grid)[None, :])) > GAP


@given(query_reference_case(), st.sampled_from([8, 1 << 20]), st.sampled_from(["rest", "best"]))
def test_every_figure_matches_the_bruteforce(case, tile, contrast):
    xq, yq, xg, yg, metric, normalize = case
    dist_span = (0.3, 1.2) if (metric == "cosine" or normalize) else (0.5, 4.0)
    grid = np.linspace(*dist_span, 7)
    ref = cross_reference(xq, yq, xg, yg, grid, metric=metric, normalize=normalize, contrast=contrast, ks=(1, 2))
    assume(_no_near_ties(ref, grid))
    c = len(ref["labels"])
    w = math.ceil(round(0.1 * c, 9))
    assume(w < c if contrast == "rest" else 2 * w <= c)
    inside = ((ref["dist"] > grid[0]) & (ref["dist"] <= grid[-1])).any()
    assume(inside)
    # Recall@k and MAP@R: no reference within the gap of a query's same-label one
    for q in range(len(yq)):
        same = yg == yq[q]
        if same.any() and (~same).any():
            assume(np.min(np.abs(ref["dist"][q][same][:, None] - ref["dist"][q][~same][None, :])) > GAP)
    report = opis_cli.evaluate(xq, yq, reference=(xg, yg), metric=metric, normalize=normalize, calib=dist_span,
                               thresholds=7, eps_contrast=contrast, k=(1, 2), retrieval=True, eer=True,
                               memory_budget=tile * tile * 30)
    assert report.labels == ref["labels"]
    np.testing.assert_allclose(report.curves.tar, ref["tar"], atol=1e-12)
    np.testing.assert_allclose(report.curves.trr, ref["trr"], atol=1e-12)
    assert report.opis == pytest.approx(ref["opis"], rel=1e-9, abs=1e-15)
    assert report.eps_opis == pytest.approx(ref["eps_opis"], rel=1e-9, abs=1e-15)
    assert sorted(report.worst.tolist()) == ref["worst"]
    for k in (1, 2):
        assert report.recall_at_k[k] == pytest.approx(ref["recall"][k], abs=1e-12)
    assert report.retrieval.queries == ref["queries"]
    assert report.retrieval.map_at_r == pytest.approx(ref["map_at_r"], abs=1e-12)
    assert report.retrieval.r_precision == pytest.approx(ref["r_precision"], abs=1e-12)
    pos, neg = ref["pooled"]
    d = report.to_dict()
    assert d["pairs"] == {"positive": len(pos), "negative": len(neg)}
    e = d["metrics"]["eer"]
    far = np.mean(neg <= e["threshold"])
    frr = np.mean(pos > e["threshold"])
    if np.min(np.abs(ref["dist"].ravel() - e["threshold"])) > GAP:
        assert e["far"] == pytest.approx(far, abs=1e-12) and e["frr"] == pytest.approx(frr, abs=1e-12)


def test_one_set_split_by_hand_is_not_the_query_reference_figures():
    # The mode counts only (query, reference) pairs: evaluating the union instead gives other
    # figures (within-query pairs count there), so the two must not agree by accident.
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(6), 10)
    x = rng.normal(size=(6, 8))[y] + rng.normal(size=(60, 8))
    union = opis_cli.evaluate(x, y, calib=(0.2, 1.0))
    split = opis_cli.evaluate(x[::2], y[::2], reference=(x[1::2], y[1::2]), calib=(0.2, 1.0))
    assert union.to_dict()["pairs"]["positive"] == 6 * 45
    assert split.to_dict()["pairs"]["positive"] == 6 * 5 * 5
    assert split.opis != union.opis


def test_mismatched_inputs_are_refused():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(4), 5)
    with pytest.raises(InputError, match="dimensions"):
        opis_cli.evaluate(rng.normal(size=(20, 8)), y, reference=(rng.normal(size=(20, 6)), y))
    with pytest.raises(InputError, match="different types"):
        opis_cli.evaluate(rng.normal(size=(20, 8)), y, reference=(rng.normal(size=(20, 8)), y.astype(str)))
    with pytest.raises(InputError, match="both queries and references"):
        opis_cli.evaluate(rng.normal(size=(20, 8)), y, reference=(rng.normal(size=(20, 8)), y + 10))
    with pytest.raises(ConfigError, match="--k 25 is larger than the database"):
        opis_cli.evaluate(rng.normal(size=(20, 8)), y, reference=(rng.normal(size=(20, 8)), y), k=(25,))


def _split(tmp_path, model, stem):
    """The sample model's items split alternately into queries and references (two Parquet files)."""
    import pyarrow.parquet as pq

    from test_cli import SAMPLE

    table = pq.read_table(SAMPLE / f"{model}.parquet")
    rows = np.arange(table.num_rows)
    q, g = tmp_path / f"{stem}_q.parquet", tmp_path / f"{stem}_g.parquet"
    pq.write_table(table.take(rows[rows % 2 == 0]), q)
    pq.write_table(table.take(rows[rows % 2 == 1]), g)
    return q, g


def test_cli_query_reference_report_bootstrap_and_gate(tmp_path):
    qa, ga = _split(tmp_path, "model_a", "a")
    qb, gb = _split(tmp_path, "model_b", "b")
    out = tmp_path / "runs"
    proc = run("evaluate", qa, "--reference", ga, "--retrieval", "--eer", "--bootstrap", "50", "--json", "-",
               "--out-dir", out, "--name", "a", "-q", check_code=0)
    report = json.loads(proc.stdout)
    ref = report["input"]["reference"]
    assert ref["n"] == 1500 and report["input"]["n"] == 1500 and len(ref["sha256"]) == 64
    assert report["pairs"]["positive"] + report["pairs"]["negative"] == 1500 * 1500
    assert report["metrics"]["queries"] == 1500 - ref["queries_without_reference"]
    assert report["bootstrap"]["opis"]["interval"][0] <= report["metrics"]["opis"]
    # the planted regression (model B) fails the gate at matched operating points on the same split
    gate = run("evaluate", qb, "--reference", gb, "--baseline", out / "runs" / "a", "--max-opis-increase", "50%",
               "--out-dir", out, "--name", "b", "-q")
    assert gate.returncode == 1, gate.stderr
    # a single-set run is not comparable with a query/reference one
    single = run("evaluate", tmp_path / "a_q.parquet", "--no-save", "--baseline", out / "runs" / "a",
                 "--max-opis-increase", "50%", "-q")
    assert single.returncode == 2 and "only baseline a was evaluated against references" in single.stderr


def test_cli_reference_refusals(tmp_path):
    qa, ga = _split(tmp_path, "model_a", "a")
    proc = run("evaluate", qa, "--reference", ga, "--index", "ivf", "--no-save")
    assert proc.returncode == 2 and "--reference needs the exact engine" in proc.stderr
    proc = run("evaluate", qa, "--reference", tmp_path / "missing.parquet", "--no-save")
    assert proc.returncode == 2 and "missing.parquet" in proc.stderr


def test_thresholds_in_query_reference_mode_match_the_bruteforce():
    from opis_cli.config import EvalConfig
    from opis_cli.data.reference import with_reference
    from opis_cli.pipeline.evaluation import array_dataset
    from opis_cli.pipeline.thresholds import thresholds_dataset

    rng = np.random.default_rng(4)
    yq, yg = np.repeat(np.arange(8), 6), np.repeat(np.arange(8), 4)
    c = rng.normal(size=(8, 10))
    xq = (c[yq] + rng.normal(size=(len(yq), 10))).astype(np.float32)
    xg = (c[yg] + rng.normal(size=(len(yg), 10))).astype(np.float32)
    t = 0.55
    ref = cross_reference(xq, yq, xg, yg, [0.3, 0.9])
    assert np.min(np.abs(ref["dist"] - t)) > GAP
    ds = with_reference(array_dataset(xq, yq), array_dataset(xg, yg))
    r = thresholds_dataset(ds, EvalConfig(calib=(0.3, 0.9)), threshold=t).to_dict()
    assert r["input"]["reference"]["n"] == len(yg)
    pos, neg = ref["pooled"]
    assert r["pooled"]["far"] == pytest.approx(np.mean(neg <= t), abs=1e-12)
    assert r["pooled"]["positive_pairs"] == len(pos) and r["pooled"]["negative_pairs"] == len(neg)
    for row in r["classes"]:
        p_c, n_c = ref["per_class"][row["label"]]
        assert row["far"] == pytest.approx(np.mean(n_c <= t), abs=1e-12)
        assert row["frr"] == pytest.approx(np.mean(p_c > t), abs=1e-12)


def test_margins_in_query_reference_mode_count_only_cross_pairs(tmp_path):
    qa, ga = _split(tmp_path, "model_a", "a")
    proc = run("margins", qa, "--reference", ga, "--target-far", "0.01", "--target-frr", "0.05", "--format", "json",
               "--no-save", "-q", check_code=0)
    report = json.loads(proc.stdout)
    rec = report["margins"]["recommended"]
    # m- sits where the pooled FAR of the (query, reference) pairs first reaches 0.01: its hard negatives
    assert report["pairs"]["positive"] + report["pairs"]["negative"] == 1500 * 1500
    assert abs(rec["hard_negative_share"] - 0.01) < 1e-3 and "reference" in report["input"]
    import pyarrow.parquet as pq

    from bruteforce import cross_distances

    def load(path):
        t = pq.read_table(path)
        return np.stack(t.column("embedding").to_numpy(zero_copy_only=False)), np.asarray(t.column("label").to_pylist())

    (xq, yq), (xg, yg) = load(qa), load(ga)
    dist = cross_distances(xq, xg)
    neg = dist[yq[:, None] != yg[None, :]]
    t_minus = 1.0 - rec["margin_minus"]
    # the same hard negatives over the (query, reference) pairs, up to pairs within float32 rounding of t-
    assert abs(rec["hard_negatives"] - int((neg <= t_minus).sum())) <= int((np.abs(neg - t_minus) < 1e-5).sum())
