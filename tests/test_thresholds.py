"""The deployment view (opis thresholds) against a brute force over all pairs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from opis_cli.config import EvalConfig
from opis_cli.errors import ConfigError
from opis_cli.data.io import Dataset, InputInfo, encode_labels
from opis_cli.pipeline.thresholds import thresholds_dataset

from bruteforce import distance_matrix, utility
from test_cli import SAMPLE, run

GAP = 5e-7  # float32 distances vs the float64 reference: farther than this from a threshold agree


def _data(seed, n=150, classes=10, d=12):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = (rng.normal(size=(classes, d))[y] + rng.uniform(0.6, 1.4) * rng.normal(size=(n, d))).astype(np.float32)
    return x, y


def _brute(x, y, fars, grid_lo_hi, thresholds, beta=1.0, given=None):
    dist = distance_matrix(x)
    iu, ju = np.triu_indices(len(y), 1)
    d = dist[iu, ju]
    same = y[iu] == y[ju]
    neg = np.sort(d[~same])
    chosen = {}
    for f in fars:  # largest k / 10^4 with FAR <= f
        k = int(np.floor(neg[int(math.floor(f * len(neg)))] * 1e4)) if math.floor(f * len(neg)) < len(neg) else 20000
        while k >= 0 and np.searchsorted(neg, k / 1e4, side="right") > f * len(neg):
            k -= 1
        while np.searchsorted(neg, (k + 1) / 1e4, side="right") <= f * len(neg) and k < 20000:
            k += 1
        chosen[f] = k / 1e4
    t = given if given is not None else chosen[fars[0]]
    grid = np.linspace(*grid_lo_hi, thresholds)
    out = {"t": t, "chosen": chosen, "classes": []}
    for c in sorted(set(y.tolist())):
        if (y == c).sum() < 2:
            continue
        pos = d[same & (y[iu] == c)]
        ng = d[(~same) & ((y[iu] == c) | (y[ju] == c))]

        def rates(th):
            return np.mean(pos <= th), np.mean(ng > th)

        tar, trr = rates(t)
        # The whole span is searched: the calibration grid, t and 201 thresholds over [0, 2].
        cand = sorted(set(grid.tolist()) | {t} | set(np.linspace(0.0, 2.0, 201).tolist()))
        us = [utility(np.array([rates(g)[0]]), np.array([rates(g)[1]]), beta)[0] for g in cand]
        best = cand[int(np.argmax(us))] if max(us) > 0 else None
        out["classes"].append({"far": 1 - trr, "frr": 1 - tar,
                               "utility": utility(np.array([tar]), np.array([trr]), beta)[0], "best": best,
                               "tar_at": {f: np.mean(pos <= chosen[f]) for f in fars}})
    out["dist"] = d
    return out


@pytest.mark.parametrize("seed", range(12))
def test_thresholds_match_bruteforce(seed):
    # n = 80: few enough pairs that most seeds keep every distance clear of the ~220 searched
    # thresholds by more than float32 rounding (a seed that does not is skipped, never guessed).
    x, y = _data(seed, n=80)
    lo_hi = (0.3, 0.9)
    fars = (0.01, 0.05)
    ref = _brute(x, y, fars, lo_hi, 11)
    critical = [ref["t"], *ref["chosen"].values(), *np.linspace(*lo_hi, 11), *np.linspace(0.0, 2.0, 201)]
    if np.min(np.abs(ref["dist"][:, None] - np.array(critical)[None, :])) < GAP:
        pytest.skip("a pair distance within float32 rounding of a threshold")
    ds = Dataset(x, encode_labels(y), InputInfo(None, "array"))
    r = thresholds_dataset(ds, EvalConfig(calib=lo_hi, thresholds=11), target_far=0.01, tar_at_far=fars).to_dict()
    assert r["threshold"]["value"] == ref["t"]
    assert r["threshold"]["far_on_chosen_set"] <= 0.01
    for got, want in zip(r["classes"], ref["classes"]):
        assert got["far"] == pytest.approx(want["far"], abs=1e-12)
        assert got["frr"] == pytest.approx(want["frr"], abs=1e-12)
        assert got["utility"] == pytest.approx(want["utility"], abs=1e-12)
        if want["best"] is None:
            assert got["best_threshold"] is None and got["never_served"]
        else:
            assert got["best_threshold"] == pytest.approx(want["best"], abs=1e-12) and not got["never_served"]
    for f in fars:
        entry = r["tar_at_far"][repr(f)]
        assert entry["threshold"] == ref["chosen"][f]
        np.testing.assert_allclose(entry["tar"], [c["tar_at"][f] for c in ref["classes"]], atol=1e-12)


def test_dev_set_chooses_and_the_test_set_is_measured():
    x, y = _data(7)
    xd, yd = _data(8)
    ds = Dataset(x, encode_labels(y), InputInfo(None, "array"))
    dev = Dataset(xd, encode_labels(yd), InputInfo(None, "array"))
    r = thresholds_dataset(ds, EvalConfig(calib=(0.3, 0.9)), dev=dev, target_far=0.02).to_dict()
    ref_dev = _brute(xd, yd, (0.02,), (0.3, 0.9), 101)
    assert r["threshold"]["chosen_on"] == "dev" and r["threshold"]["value"] == ref_dev["t"]
    ref = _brute(x, y, (0.02,), (0.3, 0.9), 101, given=ref_dev["t"])
    assert r["pooled"]["far"] == pytest.approx(np.mean(
        ref["dist"][~(y[np.triu_indices(len(y), 1)[0]] == y[np.triu_indices(len(y), 1)[1]])] <= ref["t"]), abs=1e-12)
    given = thresholds_dataset(ds, EvalConfig(calib=(0.3, 0.9)), threshold=ref_dev["t"]).to_dict()
    assert given["classes"] == r["classes"] and given["threshold"]["chosen_on"] == "given"


def test_option_errors():
    x, y = _data(1)
    ds = Dataset(x, encode_labels(y), InputInfo(None, "array"))
    with pytest.raises(ConfigError, match="exactly one"):
        thresholds_dataset(ds, target_far=0.1, threshold=0.5)
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        thresholds_dataset(ds, target_far=1.5)
    with pytest.raises(ConfigError, match="outside"):
        thresholds_dataset(ds, threshold=3.0)


def test_cli_table_json_and_plot(tmp_path):
    out = tmp_path / "t.json"
    proc = run("thresholds", SAMPLE / "model_b.parquet", "--target-far", "0.01", "--tar-at-far", "0.001,0.01",
               "--json", out, check_code=0)
    assert "global threshold" in proc.stdout and "worst classes" in proc.stdout
    report = json.loads(out.read_text())
    assert report["kind"] == "thresholds" and report["threshold"]["target_far"] == 0.01
    assert set(report["tar_at_far"]) == {"0.001", "0.01"}
    png = tmp_path / "op.png"
    run("plot", out, "--kind", "operating-points", "--out", png, check_code=0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proc = run("thresholds", SAMPLE / "model_b.parquet")
    assert proc.returncode == 2 and "exactly one of --target-far and --threshold" in proc.stderr


def test_operating_points_plot_refuses_other_reports(tmp_path):
    run("evaluate", SAMPLE / "model_a.parquet", "--calib", "0.6:0.85", "--out-dir", tmp_path / "o", "-q",
        check_code=0)
    proc = run("plot", tmp_path / "o" / "latest" / "report.json", "--kind", "operating-points", "--out",
               tmp_path / "x.png")
    assert proc.returncode == 2 and "is not an opis thresholds report" in proc.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("calib", [None, (0.3, 0.9)])
def test_evaluate_tar_at_far_matches_bruteforce_and_changes_no_other_figure(calib):
    import opis_cli

    x, y = _data(2)
    kwargs = dict(calib=calib) if calib else {}
    plain = opis_cli.evaluate(x, y, **kwargs)
    fars = (0.01, 0.2)  # 0.2 lies beyond the default calibration's FAR 0.1: one more pooled pass
    with_taf = opis_cli.evaluate(x, y, tar_at_far=fars, **kwargs)
    a, b = plain.to_dict(), with_taf.to_dict()
    section = b.pop("tar_at_far")
    a["engine"].pop("passes"), b["engine"].pop("passes")
    assert a == b
    ref = _brute(x, y, fars, (0.3, 0.9), 11)
    if np.min(np.abs(ref["dist"][:, None] - np.array(list(ref["chosen"].values()))[None, :])) < GAP:
        pytest.skip("a pair distance within float32 rounding of a threshold")
    for f in fars:
        assert section[repr(f)]["threshold"] == ref["chosen"][f]
        np.testing.assert_allclose(section[repr(f)]["tar"], [c["tar_at"][f] for c in ref["classes"]], atol=1e-12)


def _served_and_unserved():
    # Class 0 sits apart (served); class 1's two members are far apart while every other item is
    # close to one of them: it has no threshold at which it gains (utility 0 everywhere).
    rng = np.random.default_rng(3)
    blocks, labels = [], []
    for c in range(6):
        centre = rng.normal(size=8) * 3
        blocks.append(centre + 0.3 * rng.normal(size=(12, 8)))
        labels += [c] * 12
    a, b = np.eye(8)[0], -np.eye(8)[0]
    blocks.append(np.stack([a, b]))
    labels += [99, 99]
    tiny = rng.normal(size=8) * 3
    blocks.append(np.stack([tiny, tiny + 0.01 * rng.normal(size=8)]))
    labels += [77, 77]
    x = np.vstack(blocks).astype(np.float32)
    return x, np.array(labels)


def test_never_served_classes_are_flagged_and_listed_apart():
    x, y = _served_and_unserved()
    ds = Dataset(x, encode_labels(y), InputInfo(None, "array"))
    r = thresholds_dataset(ds, EvalConfig(calib=(0.05, 0.5), thresholds=11), threshold=0.2).to_dict()
    rows = {c["label"]: c for c in r["classes"]}
    # Brute force: class 99's only positive pair is at distance 2 (opposite vectors), so it is
    # accepted only at t = 2, where every negative is accepted too: utility 0 everywhere.
    ref = _brute(x, y, (0.01,), (0.05, 0.5), 11, given=0.2)
    by_label = dict(zip(sorted(set(y.tolist())), ref["classes"]))
    assert by_label[99]["best"] is None
    assert rows[99]["never_served"] and rows[99]["best_threshold"] is None and rows[99]["best_minus_global"] is None
    assert 99 in r["never_served"] and 99 not in r["worst_by_utility"] and 99 not in r["worst_by_far"]
    for label, c in rows.items():
        if label != 99:
            assert not c["never_served"] and c["best_threshold"] == pytest.approx(by_label[label]["best"], abs=1e-12)
    assert r["search"]["lo"] == 0.0 and r["search"]["hi"] == 2.0


def test_min_class_size_keeps_tiny_classes_out_of_the_worst_lists_and_says_so():
    x, y = _served_and_unserved()
    ds = Dataset(x, encode_labels(y), InputInfo(None, "array"))
    plain = thresholds_dataset(ds, EvalConfig(calib=(0.05, 0.5), thresholds=11), threshold=0.3).to_dict()
    held = thresholds_dataset(ds, EvalConfig(calib=(0.05, 0.5), thresholds=11), threshold=0.3,
                              min_class_size=3).to_dict()
    assert 77 in plain["worst_by_utility"] and plain["held_back"] == {"min_class_size": 2, "classes": 0}
    assert 77 not in held["worst_by_utility"] and 77 not in held["worst_by_far"]
    assert held["held_back"] == {"min_class_size": 3, "classes": 1}  # 77 (99 is never served: listed apart)
    assert held["classes"] == plain["classes"]  # figures unchanged, only the lists
    with pytest.raises(ConfigError, match="min-class-size"):
        thresholds_dataset(ds, EvalConfig(calib=(0.05, 0.5)), threshold=0.3, min_class_size=1)


def test_thresholds_markdown_through_the_cli(tmp_path):
    proc = run("thresholds", SAMPLE / "model_a.parquet", "--target-far", "0.01", "--min-class-size", "3",
               "--format", "markdown", check_code=0)
    out = proc.stdout
    assert out.startswith("### opis thresholds") and "| label | size | FAR | FRR | utility |" in out
    assert "global threshold" in out and "held back" in out
    proc = run("thresholds", SAMPLE / "model_a.parquet", "--target-far", "0.01", "--format", "markdown",
               "--json", "-")
    assert proc.returncode == 2 and "--json -" in proc.stderr


def test_a_dev_set_of_another_dimension_is_refused():
    x, y = _data(1, n=60)
    xd, yd = _data(2, n=60, d=7)
    ds = Dataset(x, encode_labels(y), InputInfo(None, "array"))
    dev = Dataset(xd, encode_labels(yd), InputInfo(None, "array"))
    from opis_cli.errors import InputError

    with pytest.raises(InputError, match="--dev has 7-dimensional embeddings but the input has 12"):
        thresholds_dataset(ds, EvalConfig(calib=(0.3, 0.9)), dev=dev, target_far=0.02)


def test_the_typed_result_is_what_the_cli_writes(tmp_path):
    # opis thresholds is one library call (pipeline.thresholds.thresholds_file): its typed result's
    # JSON is the CLI's --json, byte for byte.
    import subprocess
    import sys
    from pathlib import Path

    from opis_cli.pipeline.thresholds import thresholds_file

    data = Path(__file__).resolve().parents[1] / "sample_data" / "model_a.parquet"
    result = thresholds_file(data, config=EvalConfig(calib=(0.2, 0.8)), target_far=0.01, tar_at_far=(0.001,))
    assert result.value == result.to_dict()["threshold"]["value"] and result.classes
    out = tmp_path / "t.json"
    opis = Path(sys.executable).parent / "opis"
    subprocess.run([str(opis), "thresholds", str(data), "--calib", "0.2:0.8", "--target-far", "0.01",
                    "--tar-at-far", "0.001", "--json", str(out), "-q"], check=True, capture_output=True)
    assert out.read_text() == result.to_json()
