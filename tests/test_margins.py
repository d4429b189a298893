"""opis margins: margins, hard pairs and the TCM loss against brute force; a hand-worked loss;
the CLI's formats and errors."""

from __future__ import annotations

import json
import numpy as np
import pytest

from opis_cli.config import EvalConfig
from opis_cli.errors import ConfigError
from opis_cli.data.io import Dataset, InputInfo, encode_labels
from opis_cli.pipeline.margins import margins_dataset
from test_cli import SAMPLE, assert_user_error, run


def _dataset(x, labels):
    return Dataset(np.asarray(x, np.float32), encode_labels(labels), InputInfo(None, "array"))


def _pairs(x, labels):
    """Float32 cosine distances of all unordered pairs, as the engine computes them."""
    x = np.asarray(x, np.float32)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = (x.astype(np.float64) @ x.T.astype(np.float64)).astype(np.float32)
    d = (np.float32(1.0) - s).astype(np.float32)
    iu, ju = np.triu_indices(len(labels), 1)
    same = labels[iu] == labels[ju]
    return d[iu, ju].astype(np.float64), same, iu, ju


def _grid_threshold(values, share):
    # smallest t = j / 10^4 with #(values <= t) >= share * len(values)
    need = share * len(values)
    for j in range(0, 20001):
        t = j / 10_000
        if (values <= t).sum() >= need:
            return t
    return 2.0


def test_hand_worked_tcm_loss():
    # Unit vectors a = (1, 0), b = (0.6, 0.8) in class X; c = (0, 1), d = (-1, 0) in class Y.
    # Similarities: positives s(a,b) = 0.6, s(c,d) = 0; negatives s(a,c) = 0, s(a,d) = -1,
    # s(b,c) = 0.8, s(b,d) = -0.6. With m+ = 0.9, m- = 0.5:
    #   hard positives (s <= 0.9): both, violations 0.9 - 0.6 = 0.3 and 0.9 - 0 = 0.9, mean 0.6;
    #   hard negatives (s >= 0.5): (b,c) only, violation 0.8 - 0.5 = 0.3, mean 0.3;
    #   L = l+ * 0.6 + l- * 0.3 = 2 * 0.6 + 0.5 * 0.3 = 1.35 with l+ = 2, l- = 0.5.
    x = [[1, 0], [0.6, 0.8], [0, 1], [-1, 0]]
    labels = np.array(["X", "X", "Y", "Y"])
    report = margins_dataset(_dataset(x, labels), EvalConfig(calib=(0.1, 1.5), thresholds=11, epsilon=0.5),
                             margin_plus=0.9, margin_minus=0.5, lambda_plus=2.0, lambda_minus=0.5,
                             target_far=0.5, target_frr=0.5)
    given = report.margins["given"]
    assert given["hard_positives"] == 2 and given["hard_negatives"] == 1
    assert given["tcm_positive_term"] == pytest.approx(0.6, abs=1e-6)
    assert given["tcm_negative_term"] == pytest.approx(0.3, abs=1e-6)
    assert given["tcm_loss"] == pytest.approx(1.35, abs=1e-6)
    by_label = {c["label"]: c for c in report.margins["classes"]}
    assert by_label["X"]["hard_positives"] == 1 and by_label["Y"]["hard_positives"] == 1
    assert by_label["X"]["hard_negatives"] == 1 and by_label["Y"]["hard_negatives"] == 1  # (b, c) has an end in each


def _clean_case(case: int):
    """Random data whose pair distances keep clear of the deciding edges (2.5e-7, ~2 float32 ulps):
    the brute force's float32 distances may differ from the engine's BLAS ones in the last bit,
    which is a rounding question, not a margin one. Deterministic: the first clean seed wins."""
    far, frr = [0.02, 0.1, 0.3][case], [0.05, 0.2, 0.4][case]
    mp, mm = 0.55 + 0.05 * case, 0.15 + 0.02 * case
    for seed in range(100 * case, 100 * case + 100):
        rng = np.random.default_rng(seed)
        n, c = 260, 9
        labels = rng.integers(0, c, n)
        x = rng.normal(size=(c, 12))[labels] * rng.uniform(0.5, 1.5) + rng.normal(size=(n, 12))
        d, same, iu, ju = _pairs(x, labels)
        pos, neg = d[same], d[~same]
        t_minus = _grid_threshold(neg, far)
        t_plus = next(j / 10_000 for j in range(20001) if (pos > j / 10_000).sum() <= frr * len(pos))
        if all(np.min(np.abs(d - t)) > 2.5e-7 for t in (t_minus, t_plus, 1 - mp, 1 - mm)):
            return x, labels, far, frr, mp, mm, d, same, iu, ju, t_minus, t_plus
    raise AssertionError("no clean case")


@pytest.mark.parametrize("case", [0, 1, 2])
def test_margins_loss_and_hard_pairs_against_bruteforce(case):
    x, labels, far, frr, mp, mm, d, same, iu, ju, t_minus, t_plus = _clean_case(case)
    pos, neg = d[same], d[~same]
    report = margins_dataset(_dataset(x, labels), EvalConfig(calib=(0.3, 1.1)), target_far=far, target_frr=frr,
                             margin_plus=mp, margin_minus=mm, lambda_plus=1.5, lambda_minus=0.7)
    rec = report.margins["recommended"]
    assert rec["margin_minus"] == pytest.approx(1 - t_minus, abs=1e-9)
    assert rec["margin_plus"] == pytest.approx(1 - t_plus, abs=1e-9)
    for section, (m_plus, m_minus) in (("recommended", (1 - t_plus, 1 - t_minus)), ("given", (mp, mm))):
        r = report.margins[section]
        s_pos, s_neg = 1 - pos, 1 - neg
        hp, hn = s_pos <= m_plus, s_neg >= m_minus
        assert r["hard_positives"] == hp.sum() and r["hard_negatives"] == hn.sum()
        lp = (m_plus - s_pos[hp]).mean() if hp.any() else 0.0
        ln = (s_neg[hn] - m_minus).mean() if hn.any() else 0.0
        assert r["tcm_positive_term"] == pytest.approx(lp, abs=1e-6)
        assert r["tcm_negative_term"] == pytest.approx(ln, abs=1e-6)
        assert r["tcm_loss"] == pytest.approx(1.5 * lp + 0.7 * ln, abs=1e-6)
    # Per class (the given margins): hard positives in the class, hard negatives with an end in it.
    s = 1 - d
    for row in report.margins["classes"]:
        k = int(row["label"])
        in_k_pos = same & (labels[iu] == k)
        in_k_neg = ~same & ((labels[iu] == k) | (labels[ju] == k))
        assert row["hard_positives"] == int((in_k_pos & (s <= mp)).sum())
        assert row["hard_negatives"] == int((in_k_neg & (s >= mm)).sum())


def test_what_if_moves_hard_pairs_onto_the_margins():
    # The what-if curves: TAR = 1 at thresholds >= t+, TRR = 1 below t-; the rest unchanged.
    from opis_cli.analyses.margins import what_if

    class Curves:
        grid = np.linspace(0.2, 0.8, 7)
        tar = np.tile(np.linspace(0.1, 0.7, 7), (3, 1)) * np.array([[1.0], [0.5], [0.9]])
        trr = np.tile(np.linspace(1.0, 0.4, 7), (3, 1))

    o, e = what_if(Curves, t_plus=0.2, t_minus=0.9, beta=1.0, epsilon=0.34, contrast="rest")
    assert o == 0.0 and e == 0.0  # every class perfect over the whole range
    o, e = what_if(Curves, t_plus=0.9, t_minus=0.1, beta=1.0, epsilon=0.34, contrast="rest")
    from opis_cli.statistics.curves import utility
    from opis_cli.statistics.metrics import opis

    assert o == pytest.approx(opis(utility(Curves.tar, Curves.trr), Curves.grid).value)  # nothing moved


def test_only_cosine_and_option_checks():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 80)
    ds = _dataset(rng.normal(size=(80, 5)), labels)
    with pytest.raises(ConfigError, match="cosine"):
        margins_dataset(ds, EvalConfig(metric="l2", calib=(0.2, 1.0)))
    with pytest.raises(ConfigError, match="both --margin-plus and --margin-minus"):
        margins_dataset(ds, EvalConfig(calib=(0.2, 1.0)), margin_plus=0.9)
    with pytest.raises(ConfigError, match="--target-far must lie in"):
        margins_dataset(ds, EvalConfig(calib=(0.2, 1.0)), target_far=1.5)


def test_cli_formats_run_directory_and_plot(tmp_path):
    proc = run("margins", SAMPLE / "model_b.parquet", "--format", "pml", "--name", "m", cwd=tmp_path, check_code=0)
    line = proc.stdout.strip()
    assert line.startswith("ThresholdConsistentMarginLoss(lambda_plus=1.0, lambda_minus=1.0, margin_plus=")
    report = json.loads((tmp_path / ".opis/runs/m/report.json").read_text())
    rec = report["margins"]["recommended"]
    assert f"margin_plus={rec['margin_plus']:.4f}" in line and len(report["margins"]["candidates"]) == 9
    # Defaults bracket the calibration range: m- = 1 - hi, m+ = 1 - lo.
    assert rec["margin_minus"] == pytest.approx(1 - report["calibration"]["hi"], abs=1e-9)
    assert rec["margin_plus"] == pytest.approx(1 - report["calibration"]["lo"], abs=1e-9)
    table = run("margins", SAMPLE / "model_b.parquet", "--no-save", cwd=tmp_path, check_code=0).stdout
    assert "hard positives" in table and "candidates" in table and "what-if" in table
    out = json.loads(run("margins", SAMPLE / "model_b.parquet", "--no-save", "--format", "json",
                         "--margin-plus", "0.9", "--margin-minus", "0.5", cwd=tmp_path, check_code=0).stdout)
    assert out["margins"]["given"]["margin_plus"] == 0.9
    run("plot", "--kind", "distributions", "--out", tmp_path / "d.png", cwd=tmp_path, check_code=0)
    assert (tmp_path / "d.png").stat().st_size > 5000


@pytest.mark.parametrize("args, fragment", [
    (["--target-far", "0"], "--target-far must lie in (0, 1)"),
    (["--target-frr", "1"], "--target-frr must lie in (0, 1)"),
    (["--margin-plus", "0.9"], "give both"),
    (["--margin-plus", "1.5", "--margin-minus", "0.5"], "cosine similarity in [-1, 1]"),
    (["--lambda-plus", "-1"], "--lambda-plus must be"),
])
def test_cli_errors(tmp_path, args, fragment):
    assert_user_error(run("margins", SAMPLE / "model_a.parquet", "--no-save", *args, cwd=tmp_path), fragment)


def test_meaning_and_warnings_against_bruteforce():
    # Conflicting targets: a low FAR and a low FRR on overlapping classes put t+ above t-.
    x, labels, *_ = _clean_case(1)
    d, same, _, _ = _pairs(x, labels)
    pos, neg = d[same], d[~same]
    far, frr = 0.01, 0.02
    report = margins_dataset(_dataset(x, labels), EvalConfig(calib=(0.3, 1.1)), target_far=far, target_frr=frr)
    rec = report.margins["recommended"]
    t_minus = _grid_threshold(neg, far)
    t_plus = next(j / 10_000 for j in range(20001) if (pos > j / 10_000).sum() <= frr * len(pos))
    assert t_plus > t_minus  # the brute force agrees the targets conflict
    assert rec["frr_at_margin_minus"] == pytest.approx((pos > t_minus).mean(), abs=1e-12)
    assert rec["hard_negative_share"] == pytest.approx((neg <= t_minus).mean(), abs=1e-12)  # = FAR(t-)
    conflict = [w for w in rec["warnings"] if "targets conflict" in w]
    assert len(conflict) == 1 and f"{rec['frr_at_margin_minus']:.4g}" in conflict[0]
    assert any(c["conflict"] for c in report.margins["candidates"])
    # Loose targets: m+ above m-, nothing conflicts; most negatives hard is flagged.
    loose = margins_dataset(_dataset(x, labels), EvalConfig(calib=(0.3, 1.1)), target_far=0.7, target_frr=0.2)
    rl = loose.margins["recommended"]
    assert rl["margin_plus"] >= rl["margin_minus"] or not any("conflict" in w for w in rl["warnings"])
    assert any("of the negative pairs are hard" in w for w in rl["warnings"])
    assert rl["hard_negative_share"] > 0.5


def test_sane_margins_have_no_warnings_and_a_useless_what_if_is_flagged():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(12), 15)
    x = rng.normal(size=(12, 16))[labels] * 3 + rng.normal(size=(180, 16))  # well separated classes
    report = margins_dataset(_dataset(x, labels), EvalConfig())
    rec = report.margins["recommended"]
    assert rec["warnings"] == [], rec["warnings"]
    assert rec["margin_plus"] > rec["margin_minus"] and rec["what_if_opis"] < report.opis
    from opis_cli.analyses.margins import margin_warnings

    useless = {**rec, "what_if_opis": report.opis}
    assert any("not below the current" in w for w in margin_warnings(useless, report.opis))
    outside = {**rec, "margin_plus": 1.2}
    assert any("outside [-1, 1]" in w for w in margin_warnings(outside, report.opis))


def test_python_api_equals_the_cli(tmp_path):
    import polars as pl

    import opis_cli

    data = pl.read_parquet(SAMPLE / "model_b.parquet")
    emb_col = next(c for c in data.columns if data[c].dtype != pl.Utf8 and c not in ("label", "class"))
    cli = json.loads(run("margins", SAMPLE / "model_b.parquet", "--no-save", "--format", "json",
                         "--target-far", "0.02", cwd=tmp_path, check_code=0).stdout)
    ds = opis_cli.load_dataset(SAMPLE / "model_b.parquet")
    advice = opis_cli.recommend_margins(ds.embeddings, [ds.labels.values[c] for c in ds.labels.codes],
                                        target_far=0.02)
    rec = cli["margins"]["recommended"]
    assert isinstance(advice, opis_cli.MarginAdvice) and emb_col
    for key in ("margin_plus", "margin_minus", "target_far", "target_frr", "hard_positives", "hard_negatives",
                "hard_positive_share", "hard_negative_share", "tcm_loss", "what_if_opis", "frr_at_margin_minus"):
        assert getattr(advice, key) == rec[key], key
    assert list(advice.warnings) == rec["warnings"] and advice.opis == cli["metrics"]["opis"]
    assert advice.pml_kwargs() == {"lambda_plus": 1.0, "lambda_minus": 1.0, "margin_plus": rec["margin_plus"],
                                   "margin_minus": rec["margin_minus"]}
    pml = run("margins", SAMPLE / "model_b.parquet", "--no-save", "--format", "pml", "--target-far", "0.02",
              cwd=tmp_path, check_code=0).stdout.strip()
    assert advice.pml_line() == pml


def test_markdown_format_states_meaning_and_warnings(tmp_path):
    out = run("margins", SAMPLE / "model_b.parquet", "--no-save", "--format", "markdown", "--target-far", "0.001",
              "--target-frr", "0.01", cwd=tmp_path, check_code=0).stdout
    assert out.startswith("### opis margins: TCM margins at your targets")
    assert "| pooled FRR at the FAR target |" in out and "docs/tcm.md" in out
    assert "> **warning:** m+" in out and "targets conflict" in out
    table = run("margins", SAMPLE / "model_b.parquet", "--no-save", "--target-far", "0.001", "--target-frr", "0.01",
                cwd=tmp_path, check_code=0).stdout
    assert "warning:" in table and "targets conflict" in table
