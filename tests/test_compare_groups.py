"""opis_cli.verdicts.compare_groups: runs grouped into arms (seeds x arms), checked against brute force.

Ground truth: one real report of small seeded synthetic data, copied with planted figures, so
every mean, sd and interval is known by hand (numpy) and by scipy's own t-tests; a planted +0.01
OPIS effect with small per-seed noise must come out clear, a zero-mean change must not.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from scipy import stats

import opis_cli
from opis_cli.verdicts.compare_groups import group_key_from_name, group_runs
from opis_cli.errors import ConfigError, InputError
from opis_cli.report.runs import SavedRun

PATTERN = r"^(\w+)-s\d+$"


def _data(seed=0, classes=12, per_class=6, d=6):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), per_class)
    return rng.normal(size=(len(y), d)) + 3 * rng.normal(size=(classes, d))[y], y


@pytest.fixture(scope="module")
def base():
    x, y = _data()
    return opis_cli.evaluate(x, y, calib_far=(0.001, 0.1)).to_dict()


def make(base, name, opis, eps=0.05, recall=0.9, **extra_k):
    """A copy of ``base`` named ``name`` with planted figures (extra_k: more Recall@k, e.g. k5=0.95)."""
    report = copy.deepcopy(base)
    recall_at_k = {"1": recall, **{k[1:]: v for k, v in extra_k.items()}}
    report["metrics"].update(opis=opis, eps_opis=eps, recall_at_k=recall_at_k)
    return SavedRun(name=name, report=report)


def arms(base, values: dict[str, list[float]], order=None):
    """Runs ``<arm>-s<i>`` with OPIS values[arm][i] (eps-OPIS and Recall@1 derived from it)."""
    runs = [make(base, f"{arm}-s{i}", v, eps=2 * v + 0.01 * i, recall=0.9 - v)
            for arm, vs in values.items() for i, v in enumerate(vs)]
    return [runs[i] for i in order] if order else runs


def t_half(sd, n):
    return stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)


def test_group_key_and_pairing_key_from_name():
    key = group_key_from_name(PATTERN)
    assert key("none-s0") == ("none", "*-s0")
    assert key("tcm-s0") == ("tcm", "*-s0")
    assert key("tcm-s12") == ("tcm", "*-s12")
    # Without a capture group the whole match is the key; re.search, so it may sit anywhere.
    assert group_key_from_name(r"tcm|none")("exp-tcm-s1") == ("tcm", "exp-*-s1")
    with pytest.raises(InputError, match=r"'oops'.*\^\(\\w\+\)-s\\d\+\$"):
        key("oops")
    with pytest.raises(ConfigError, match="not a valid regular expression.*missing \\)"):
        group_key_from_name(r"^(\w+-s\d+$")


def test_group_summaries_match_numpy(base):
    values = {"none": [0.020, 0.023, 0.019, 0.025], "tcm": [0.030, 0.028, 0.035]}
    g = group_runs(arms(base, values), pattern=PATTERN)
    assert list(g.groups) == ["none", "tcm"] and g.reference == "none"
    assert g.groups["tcm"] == ["tcm-s0", "tcm-s1", "tcm-s2"]
    for arm, vs in values.items():
        for figure, xs in (("opis", vs), ("eps_opis", [2 * v + 0.01 * i for i, v in enumerate(vs)]),
                           ("recall_at_k.1", [0.9 - v for v in vs])):
            s = g.figures[arm][figure]
            assert s["n"] == len(xs)
            assert s["mean"] == pytest.approx(np.mean(xs), abs=1e-15)
            assert s["sd"] == pytest.approx(np.std(xs, ddof=1), rel=1e-12)
            assert (s["min"], s["max"]) == (min(xs), max(xs))


def test_paired_interval_matches_ttest_rel(base):
    ref, cur = [0.020, 0.023, 0.019, 0.025, 0.022], [0.031, 0.030, 0.029, 0.036, 0.030]
    g = group_runs(arms(base, {"none": ref, "tcm": cur}), pattern=PATTERN)
    entry = g.deltas["tcm"]["opis"]
    d = np.subtract(cur, ref)
    half = t_half(np.std(d, ddof=1), len(d))
    assert entry["method"] == "paired over 5 seeds" and entry["pairs"] == 5
    assert entry["delta"] == pytest.approx(d.mean(), abs=1e-15)
    assert entry["interval"] == pytest.approx([d.mean() - half, d.mean() + half], abs=1e-14)
    ci = stats.ttest_rel(cur, ref).confidence_interval(0.95)
    assert entry["interval"] == pytest.approx([ci.low, ci.high], abs=1e-12)
    # Paired is tighter than Welch here: the seeds share most of their spread.
    welch = stats.ttest_ind(cur, ref, equal_var=False).confidence_interval(0.95)
    assert entry["interval"][1] - entry["interval"][0] < welch.high - welch.low


def test_pairs_line_up_by_key_not_by_run_order(base):
    values = {"none": [0.010, 0.020, 0.040], "tcm": [0.011, 0.022, 0.043]}
    in_order = group_runs(arms(base, values), pattern=PATTERN)
    shuffled = group_runs(arms(base, values, order=[0, 5, 3, 2, 1, 4]), pattern=PATTERN)
    assert shuffled.groups == {"none": ["none-s0", "none-s2", "none-s1"], "tcm": ["tcm-s2", "tcm-s0", "tcm-s1"]}
    assert shuffled.pairing["tcm-s2"] == shuffled.pairing["none-s2"] == "*-s2"
    for figure in in_order.figure_keys:
        assert shuffled.deltas["tcm"][figure] == in_order.deltas["tcm"][figure]  # same pairs, same order of sums
    d = np.array([0.001, 0.002, 0.003])
    assert in_order.deltas["tcm"]["opis"]["interval"][0] == pytest.approx(d.mean() - t_half(d.std(ddof=1), 3))


def test_first_appearance_sets_the_order_and_the_reference(base):
    runs = arms(base, {"none": [0.02, 0.03], "tcm": [0.01, 0.02], "ce": [0.05, 0.04]}, order=[2, 0, 4, 3, 1, 5])
    g = group_runs(runs, pattern=PATTERN)
    assert list(g.groups) == ["tcm", "none", "ce"] and g.reference == "tcm"
    assert set(g.deltas) == {"none", "ce"}
    assert g.to_dict()["order"] == ["tcm", "none", "ce"]
    assert g.table()[0] == ["", "tcm", "none", "ce"]


@pytest.mark.parametrize("names", [
    ["none-s0", "none-s1", "none-s2", "tcm-s0", "tcm-s1", "tcm-s3"],  # other seeds
    ["none-s0", "none-s1", "none-s2", "tcm-s0", "tcm-s1"],  # a seed missing
    ["none-s0", "none-x-s0", "none-s1", "tcm-s0", "tcm-s1", "tcm-s2"],  # a pairing key twice
])
def test_welch_when_runs_do_not_pair_one_to_one(base, names):
    opis = [0.020, 0.023, 0.019, 0.031, 0.030, 0.036][:len(names)]
    runs = [make(base, n, v) for n, v in zip(names, opis)]
    g = group_runs(runs, pattern=r"^(\w+)(?:-x)?-s\d+$")
    ref, cur = [v for n, v in zip(names, opis) if n.startswith("none")], [v for n, v in zip(names, opis)
                                                                            if n.startswith("tcm")]
    entry = g.deltas["tcm"]["opis"]
    assert entry["method"] == "unpaired (Welch)" and entry["pairs"] is None
    v1, v2 = np.var(cur, ddof=1) / len(cur), np.var(ref, ddof=1) / len(ref)
    df = (v1 + v2) ** 2 / (v1 ** 2 / (len(cur) - 1) + v2 ** 2 / (len(ref) - 1))
    half = stats.t.ppf(0.975, df) * np.sqrt(v1 + v2)
    delta = np.mean(cur) - np.mean(ref)
    assert entry["delta"] == pytest.approx(delta, abs=1e-15)
    assert entry["interval"] == pytest.approx([delta - half, delta + half], abs=1e-14)
    ci = stats.ttest_ind(cur, ref, equal_var=False).confidence_interval(0.95)
    assert entry["interval"] == pytest.approx([ci.low, ci.high], abs=1e-12)


def test_one_seed_gives_no_interval(base):
    g = group_runs(arms(base, {"none": [0.02], "tcm": [0.03]}), pattern=PATTERN)
    assert g.figures["none"]["opis"]["sd"] is None
    entry = g.deltas["tcm"]["opis"]
    assert entry["method"] == "paired over 1 seed" and entry["interval"] is None and entry["clear"] is None
    assert entry["delta"] == pytest.approx(0.01)
    g = group_runs([make(base, "none-s0", 0.02), make(base, "tcm-s0", 0.03), make(base, "tcm-s1", 0.04)],
                   pattern=PATTERN)
    assert g.deltas["tcm"]["opis"] == {"delta": pytest.approx(0.015), "interval": None, "method": "unpaired (Welch)",
                                       "pairs": None, "clear": None}
    assert "0.02 (1)" in g.table()[1][0][1]


def test_planted_effect_is_clear_and_no_effect_is_not(base):
    rng = np.random.default_rng(3)
    ref = 0.02 + 0.005 * rng.normal(size=5)  # seeds differ far more than the planted change's noise
    noise = np.array([1, -1, 2, -2, 0.5]) * 2e-4
    runs = [make(base, f"none-s{i}", ref[i], eps=0.05 + ref[i]) for i in range(5)]
    runs += [make(base, f"tcm-s{i}", ref[i] + 0.01 + noise[i], eps=0.05 + ref[i] + noise[i]) for i in range(5)]
    g = group_runs(runs, pattern=PATTERN)
    opis, eps = g.deltas["tcm"]["opis"], g.deltas["tcm"]["eps_opis"]
    assert opis["clear"] is True and opis["interval"][0] > 0.009 and opis["interval"][1] < 0.011
    assert eps["clear"] is False and eps["interval"][0] < 0 < eps["interval"][1]
    # Recall@1 is the same in every run: a zero-width interval at 0 is not a change.
    assert g.deltas["tcm"]["recall_at_k.1"]["clear"] is False
    # Pairing by whole names pairs nothing: Welch then carries the seed-to-seed spread and is wider.
    welch = group_runs(runs, pattern=PATTERN, pair_by=r".+").deltas["tcm"]["opis"]
    assert welch["method"] == "unpaired (Welch)"
    assert welch["interval"][1] - welch["interval"][0] > 10 * (opis["interval"][1] - opis["interval"][0])


def test_field_grouping_and_pair_by(base):
    runs = []
    for arm, shift in (("a", 0.0), ("b", 0.004)):
        for i in range(3):
            run = make(base, f"{arm}-seed{i}", 0.02 + 0.002 * i + shift)
            run.report["input"]["path"] = f"models/{arm}.npy"
            runs.append(run)
    g = group_runs(runs, field="input.path")
    assert list(g.groups) == ["models/a.npy", "models/b.npy"]
    assert g.to_dict()["grouped_by"] == {"field": "input.path", "pair_by": None}
    # Run names are the pairing keys: nothing pairs, so Welch.
    assert g.deltas["models/b.npy"]["opis"]["method"] == "unpaired (Welch)"
    g = group_runs(runs, field="input.path", pair_by=r"seed(\d+)")
    assert g.pairing["b-seed2"] == "2"
    entry = g.deltas["models/b.npy"]["opis"]
    assert entry["method"] == "paired over 3 seeds" and entry["interval"] == pytest.approx([0.004, 0.004])
    with pytest.raises(InputError, match="'a-seed0'.*'engine.nme'"):
        group_runs(runs, field="engine.nme")
    with pytest.raises(InputError, match="'a-seed0'.*--pair-by"):
        group_runs(runs, field="input.path", pair_by=r"run(\d+)")


def test_field_values_that_print_alike_stay_apart(base):
    runs = [make(base, f"r{i}", 0.02 + 0.001 * i) for i in range(4)]
    for run, value in zip(runs, [1, "1", 1, 2.5]):
        run.report["extra"] = {"arm": value}
    assert list(group_runs(runs, field="extra.arm").groups) == ["1", '"1"', "2.5"]
    for run, value in zip(runs, [1, 2, 1, None]):
        run.report["extra"] = {"arm": value}
    assert list(group_runs(runs, field="extra.arm").groups) == ["1", "2", "None"]


def test_recall_ks_are_those_every_run_has(base):
    runs = [make(base, "none-s0", 0.02, k5=0.97, k10=0.99), make(base, "tcm-s0", 0.03, k10=0.98)]
    g = group_runs(runs, pattern=PATTERN)
    assert g.figure_keys == ["opis", "eps_opis", "recall_at_k.1", "recall_at_k.10"]
    assert g.deltas["tcm"]["recall_at_k.10"]["delta"] == pytest.approx(-0.01)


def test_refusals(base):
    runs = arms(base, {"none": [0.02, 0.03], "tcm": [0.01, 0.02]})
    with pytest.raises(ConfigError, match="exactly one"):
        group_runs(runs)
    with pytest.raises(ConfigError, match="exactly one"):
        group_runs(runs, pattern=PATTERN, field="input.path")
    with pytest.raises(ConfigError, match="--pair-by"):
        group_runs(runs, pattern=PATTERN, pair_by="(")
    with pytest.raises(InputError, match="share the name 'none-s0'"):
        group_runs(runs + [runs[0]], pattern=PATTERN)
    with pytest.raises(InputError, match="no runs"):
        group_runs([], pattern=PATTERN)
    other_beta = copy.deepcopy(runs[3])
    other_beta.report["config"]["beta"] = 2.0
    with pytest.raises(InputError, match="tcm-s1 is not comparable with none-s0: beta differs"):
        group_runs(runs[:3] + [other_beta], pattern=PATTERN)
    x, y = _data(seed=1, classes=10)
    other_set = SavedRun(name="tcm-s1", report=opis_cli.evaluate(x, y, calib_far=(0.001, 0.1)).to_dict())
    with pytest.raises(InputError, match="tcm-s1 is not comparable with none-s0: evaluation sets differ"):
        group_runs(runs[:3] + [other_set], pattern=PATTERN)


def test_comparability_warnings_are_collected(base):
    x, y = _data()
    pinned = opis_cli.evaluate(x, y, calib=(0.2, 0.8)).to_dict()
    runs = [SavedRun(name=f"{arm}-s0", report=copy.deepcopy(pinned)) for arm in ("none", "tcm")]
    runs[1].report["calibration"]["far_at_lo"] *= 5
    g = group_runs(runs, pattern=PATTERN)
    assert len(g.warnings) == 1 and "operating points differ" in g.warnings[0]
    assert "> **warning:** operating points differ" in g.to_markdown()


def test_json_table_and_markdown(base):
    values = {"none": [0.020, 0.023, 0.019], "tcm": [0.031, 0.030, 0.029]}
    runs = arms(base, values)
    for run in runs[3:]:
        run.name = run.name.replace("tcm", "t|cm")
    g = group_runs(runs, pattern=r"^(.+)-s\d+$")
    data = json.loads(g.to_json())
    assert data == g.to_dict() and g.to_json().endswith("}\n")
    assert list(data) == ["deltas", "grouped_by", "groups", "order", "reference", "warnings"]
    assert data["reference"] == "none" and data["grouped_by"] == {"pattern": r"^(.+)-s\d+$", "pair_by": None}
    assert set(data["groups"]["t|cm"]["figures"]) == {"opis", "eps_opis", "recall_at_k.1"}
    assert data["groups"]["t|cm"]["runs"] == ["t|cm-s0", "t|cm-s1", "t|cm-s2"]
    assert data["groups"]["t|cm"]["pairing_keys"] == ["*-s0", "*-s1", "*-s2"]
    assert set(data["deltas"]["t|cm"]["opis"]) == {"delta", "interval", "method", "pairs", "clear"}
    summary = data["groups"]["none"]["figures"]["opis"]
    assert summary["n"] == 3 and all(type(summary[k]) is float for k in ("mean", "sd", "min", "max"))
    header, rows = g.table()
    assert header == ["", "none", "t|cm"]
    assert [r[0] for r in rows] == ["OPIS", "eps-OPIS", "Recall@1", "OPIS change vs none",
                                    "eps-OPIS change vs none", "Recall@1 change vs none"]
    s = g.figures["none"]["opis"]
    assert rows[0][1] == f"{s['mean']:.4g} ± {s['sd']:.4g} (3)"
    d = g.deltas["t|cm"]["opis"]
    assert rows[3][1:] == ["-", f"{d['delta']:+.4g} [{d['interval'][0]:+.4g}, {d['interval'][1]:+.4g}] paired"]
    md = g.to_markdown().splitlines()
    assert md[0] == "|  | none | t\\|cm |" and md[1] == "|---|---:|---:|"
    assert len(md) == 2 + len(rows) and all(line.count(" | ") == 2 for line in md[2:])


def test_group_by_through_the_cli(tmp_path):
    from test_cli import SAMPLE, assert_user_error, run

    from opis_cli.config import EvalConfig

    out = tmp_path / ".opis"
    for arm, model in (("a", "model_a"), ("b", "model_b")):  # runs saved in-process: the CLI is tested below
        report = opis_cli.evaluate_file(SAMPLE / f"{model}.parquet", config=EvalConfig(calib_far=(0.001, 0.1)))
        for seed in (0, 1):
            opis_cli.save_run(report, out, f"{arm}-s{seed}")
    dirs = [out / "runs" / n for n in ("a-s0", "a-s1", "b-s0", "b-s1")]
    data = json.loads(run("compare", *dirs, "--group-by", r"^(\w)-s\d$", "--format", "json", check_code=0).stdout)
    assert data["order"] == ["a", "b"] and data["groups"]["b"]["runs"] == ["b-s0", "b-s1"]
    a = json.loads((dirs[0] / "report.json").read_text())["metrics"]["opis"]
    b = json.loads((dirs[2] / "report.json").read_text())["metrics"]["opis"]
    delta = data["deltas"]["b"]["opis"]
    assert delta["delta"] == pytest.approx(b - a, abs=1e-15) and delta["method"] == "paired over 2 seeds"
    md = run("compare", *dirs, "--group-by", r"^(\w)-s\d$", "--format", "markdown", check_code=0).stdout
    assert "change vs a" in md
    assert_user_error(run("compare", *dirs, "--group-by", "(unclosed"), "not a valid regular expression")
    assert_user_error(run("compare", *dirs, "--group-by", r"^x(\d)"), "does not match")
    assert_user_error(run("compare", *dirs, "--pair-by", r"s(\d)"), "--pair-by goes with --group-field")
