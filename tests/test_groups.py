"""Groups in place of classes (--group-col): against a brute force over all pairs."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.integrate import trapezoid

from opis_cli.config import EvalConfig
from opis_cli.data.io import Dataset, InputInfo, encode_labels
from opis_cli.pipeline.evaluation import evaluate_dataset

from bruteforce import distance_matrix, utility
from test_cli import run

GAP = 5e-7


def _case(seed, n=160, classes=12, groups=5, d=10):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    grp = rng.integers(0, groups, n)
    x = (rng.normal(size=(classes, d))[y] + rng.uniform(0.5, 1.5) * rng.normal(size=(n, d))).astype(np.float32)
    return x, y, grp


def _brute(x, y, grp, grid, beta=1.0):
    dist = distance_matrix(x)
    iu, ju = np.triu_indices(len(y), 1)
    d, same = dist[iu, ju], y[iu] == y[ju]
    rows = []
    for g in sorted(set(grp.tolist())):
        touch = (grp[iu] == g) | (grp[ju] == g)
        pos, neg = d[touch & same], d[touch & ~same]
        if len(pos) == 0:
            continue
        tar = np.array([np.mean(pos <= t) for t in grid])
        trr = np.array([np.mean(neg > t) if len(neg) else 1.0 for t in grid])
        rows.append((g, len(pos), len(neg), utility(tar, trr, beta), 1 - trr, 1 - tar))
    u = np.array([r[3] for r in rows])
    span = grid[-1] - grid[0]
    ubar = u.mean(axis=0)
    o = sum(trapezoid((ui - ubar) ** 2, grid) / span for ui in u) / len(u)
    return rows, o, d


@pytest.mark.parametrize("seed", range(6))
def test_group_figures_match_bruteforce(seed):
    x, y, grp = _case(seed)
    grid = np.linspace(0.3, 0.9, 11)
    rows, o, d = _brute(x, y, grp, grid)
    if np.min(np.abs(d[:, None] - grid[None, :])) < GAP:
        pytest.skip("a pair distance within float32 rounding of a threshold")
    ds = Dataset(x, encode_labels(y), InputInfo(None, "array", group_column="g"), groups=encode_labels(grp))
    r = evaluate_dataset(ds, EvalConfig(calib=(0.3, 0.9), thresholds=11), engine="exact", memory_budget=16 << 20)
    sec = r.groups
    assert sec["groups_used"] == len(rows) and sec["column"] == "g"
    assert [row["group"] for row in sec["rows"]] == [g for g, *_ in rows]
    assert [row["positive_pairs"] for row in sec["rows"]] == [r[1] for r in rows]
    assert [row["negative_pairs"] for row in sec["rows"]] == [r[2] for r in rows]
    assert sec["opis"] == pytest.approx(o, rel=1e-9, abs=1e-15)
    # fairlearn's between-groups difference (max - min) and ratio (min / max) at lo and hi
    assert [d["at"] for d in sec["disparity"]] == ["lo", "hi"]
    for d, k in zip(sec["disparity"], (0, -1)):
        assert d["threshold"] == grid[k]
        for key, col in (("far", 4), ("frr", 5)):
            rates = np.array([r[col][k] for r in rows])
            assert d[key]["difference"] == pytest.approx(rates.max() - rates.min(), abs=1e-12)
            assert d[key]["ratio"] == pytest.approx(rates.min() / rates.max() if rates.max() else 1.0, abs=1e-12)
            assert d[key]["max"]["group"] == rows[int(np.argmax(rates))][0]


def test_groups_equal_to_classes_give_the_class_figures():
    x, y, _ = _case(11)
    ds = Dataset(x, encode_labels(y), InputInfo(None, "array"), groups=encode_labels(y))
    r = evaluate_dataset(ds, EvalConfig(calib=(0.3, 0.9)), engine="exact")
    assert r.groups["opis"] == pytest.approx(r.opis, rel=1e-12)
    assert r.groups["eps_opis"] == pytest.approx(r.eps_opis, rel=1e-12)


def test_cli_group_col(tmp_path):
    x, y, grp = _case(3, n=300)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
    names = np.array(["north", "south", "east", "west", "centre"])[grp]
    pq.write_table(pa.table({"embedding": emb, "label": pa.array(y), "region": pa.array(names)}),
                   tmp_path / "d.parquet")
    proc = run("evaluate", tmp_path / "d.parquet", "--group-col", "region", "--calib", "0.3:0.9", "--no-save",
               "--json", "-", check_code=0)
    report = json.loads(proc.stdout)
    assert report["groups"]["column"] == "region" and report["groups"]["groups_used"] == 5
    assert "groups (region)" in proc.stderr  # the table goes to stderr beside JSON on stdout
    assert "at hi (0.9): FAR max/min" in proc.stderr
    md = run("evaluate", tmp_path / "d.parquet", "--group-col", "region", "--calib", "0.3:0.9", "--no-save",
             "--format", "markdown", check_code=0).stdout
    assert "**Groups** (region): OPIS" in md and "- at hi (0.9): FAR max/min" in md
    assert md.count("| north |") + md.count("| south |") + md.count("| east |") >= 1
    proc = run("evaluate", tmp_path / "d.parquet", "--group-col", "nope", "--no-save")
    assert proc.returncode == 2 and "no column 'nope' for --group-col" in proc.stderr


def test_thresholds_per_group_match_bruteforce():
    from opis_cli.pipeline.thresholds import thresholds_dataset

    x, y, grp = _case(4)
    ds = Dataset(x, encode_labels(y), InputInfo(None, "array", group_column="g"), groups=encode_labels(grp))
    t = 0.6
    r = thresholds_dataset(ds, EvalConfig(calib=(0.3, 0.9), thresholds=11), threshold=t).to_dict()
    dist = distance_matrix(x)
    iu, ju = np.triu_indices(len(y), 1)
    d, same = dist[iu, ju], y[iu] == y[ju]
    assert np.min(np.abs(d - t)) > GAP
    for row in r["groups"]["rows"]:
        touch = (grp[iu] == row["group"]) | (grp[ju] == row["group"])
        assert row["far"] == pytest.approx(np.mean(d[touch & ~same] <= t), abs=1e-12)
        assert row["frr"] == pytest.approx(np.mean(d[touch & same] > t), abs=1e-12)
    fars = np.array([row["far"] for row in r["groups"]["rows"]])
    gap = r["groups"]["disparity"]["far"]
    assert gap["difference"] == pytest.approx(fars.max() - fars.min()) and gap["ratio"] == pytest.approx(
        fars.min() / fars.max())
