"""opis gate / compare / evaluate --bootstrap: checks, exit codes, comparability, percentages,
and the bootstrap intervals' coverage in a seeded simulation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from opis_cli.bootstrap import class_bootstrap
from opis_cli.errors import ConfigError, InputError
from opis_cli.gate import GateOptions, Limit, parse_limit, parse_recall_limit, run_gate
from opis_cli.metrics import opis
from test_cli import SAMPLE, assert_user_error, run

CALIB = "0.6:0.85"  # pinned, as a CI job should: both models on the same range


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("gate")
    for model in ("model_a", "model_b"):
        run("evaluate", SAMPLE / f"{model}.parquet", "--calib", CALIB, "--bootstrap", "300", "--name", model, "-q",
            cwd=cwd, check_code=0)
    run("evaluate", SAMPLE / "model_a.parquet", "--name", "far_range", "-q", cwd=cwd, check_code=0)
    return cwd


def _report(runs, name):
    return json.loads((runs / ".opis" / "runs" / name / "report.json").read_text())


def test_a_report_passes_against_itself(runs):
    proc = run("gate", ".opis/runs/model_a", "--baseline", ".opis/runs/model_a", "--max-opis-increase", "0",
               "--max-eps-opis-increase", "0%", "--max-recall-drop", "0", cwd=runs, check_code=0)
    assert "passed" in proc.stdout


def test_the_worse_model_fails_the_gate(runs):
    proc = run("gate", ".opis/runs/model_b", "--baseline", ".opis/runs/model_a", "--max-opis-increase", "10%",
               "--format", "json", cwd=runs, check_code=1)
    result = json.loads(proc.stdout)
    assert result["passed"] is False and result["checks"][0]["metric"] == "OPIS increase"
    a, b = _report(runs, "model_a")["metrics"]["opis"], _report(runs, "model_b")["metrics"]["opis"]
    assert result["checks"][0]["delta"] == pytest.approx(b - a)
    # ... and the better one passes against the worse.
    run("gate", ".opis/runs/model_a", "--baseline", ".opis/runs/model_b", "--max-opis-increase", "0", cwd=runs,
        check_code=0)


def test_default_current_is_the_last_run_and_absolute_checks_need_no_baseline(runs):
    # latest is far_range (model A): OPIS ~0.004.
    run("gate", "--max-opis", "0.01", "--min-recall-at-k", "1=0.9", cwd=runs, check_code=0)
    run("gate", "--max-opis", "0.001", cwd=runs, check_code=1)
    run("gate", "--min-recall-at-k", "1=0.99", cwd=runs, check_code=1)


def test_significance_tolerates_noise_but_not_a_real_regression(runs):
    a = _report(runs, "model_a")
    noisy = json.loads(json.dumps(a))
    noisy["metrics"]["opis"] *= 1.2  # within the class-bootstrap uncertainty (se ~ 20% of OPIS here)
    options = GateOptions(max_opis_increase=Limit(0.0), significance=0.95)
    assert run_gate(noisy, a, options).passed
    assert not run_gate(noisy, a, GateOptions(max_opis_increase=Limit(0.0))).passed  # plain threshold
    b = _report(runs, "model_b")
    assert not run_gate(b, a, options).passed  # a tenfold OPIS is beyond any noise
    with pytest.raises(InputError, match="--bootstrap"):
        run_gate(_report(runs, "far_range"), None, GateOptions(max_opis=1.0, significance=0.95))


def test_evaluate_gates_in_one_step(runs):
    proc = run("evaluate", SAMPLE / "model_b.parquet", "--calib", CALIB, "--no-save", "--baseline",
               ".opis/runs/model_a", "--max-opis-increase", "5%", "--format", "markdown", cwd=runs, check_code=1)
    assert "### opis gate: **FAILED**" in proc.stdout and "### opis-cli evaluation" in proc.stdout
    run("evaluate", SAMPLE / "model_a.parquet", "--calib", CALIB, "--no-save", "--max-opis", "0.02", "-q", cwd=runs,
        check_code=0)


def test_incomparable_reports_are_refused_or_warned(runs):
    proc = run("gate", ".opis/runs/far_range", "--baseline", ".opis/runs/model_a", "--max-opis-increase", "1",
               cwd=runs)
    assert_user_error(proc, "calibration range differs")
    assert "pin --calib" in proc.stderr
    proc = run("gate", ".opis/runs/far_range", "--baseline", ".opis/runs/model_a", "--max-opis-increase", "1",
               "--on-mismatch", "warn", cwd=runs, check_code=0)
    assert "calibration range differs" in proc.stdout


@pytest.mark.parametrize("change, fragment", [
    (lambda r: r["config"].__setitem__("metric", "l2"), "metric differs"),
    (lambda r: r["config"].__setitem__("beta", 2.0), "beta differs"),
    (lambda r: r["config"].__setitem__("epsilon", 0.2), "epsilon differs"),
    (lambda r: r["calibration"].__setitem__("thresholds", 51), "thresholds differ"),
    (lambda r: r["classes"].pop(), "class sets differ"),
    (lambda r: r["input"].__setitem__("labels_sha256", "0" * 64), "evaluation sets differ"),
])
def test_each_comparability_rule(runs, change, fragment):
    a = _report(runs, "model_a")
    other = json.loads(json.dumps(a))
    change(other)
    with pytest.raises(InputError, match=fragment):
        run_gate(other, a, GateOptions(max_opis_increase=Limit(1.0)))
    assert run_gate(other, a, GateOptions(max_opis_increase=Limit(1.0), on_mismatch="warn")).warnings


def test_percentages_and_limits():
    assert parse_limit("5%", "x") == Limit(0.05, True) and parse_limit("0.002", "x") == Limit(0.002, False)
    assert parse_limit(" 12.5% ", "x").allowed(0.04) == pytest.approx(0.005)
    for bad in ("-1", "5x", "%", "nan", "-3%"):
        with pytest.raises(ConfigError):
            parse_limit(bad, "--max-opis-increase")
    assert parse_recall_limit("5=0.75") == (5, 0.75)
    for bad in ("1", "0=0.5", "1=1.5", "a=b"):
        with pytest.raises(ConfigError):
            parse_recall_limit(bad)


@pytest.mark.parametrize("args, fragment", [
    (["--max-opis-increase", "5%"], "need --baseline"),
    ([], "no checks given"),
    (["--baseline", ".opis/runs/model_a"], "no checks given"),
    (["--max-opis", "0.1", "--significance", "1.5"], "--significance must lie"),
    (["--baseline", ".opis/runs/missing", "--max-opis-increase", "1"], "no report at"),
    (["--min-recall-at-k", "9=0.5"], "no Recall@9"),
])
def test_gate_usage_errors(runs, args, fragment):
    assert_user_error(run("gate", *args, cwd=runs), fragment)


def test_gate_without_any_run(tmp_path):
    assert_user_error(run("gate", "--max-opis", "1", cwd=tmp_path), "no previous run")


def test_compare_table_markdown_json(runs):
    proc = run("compare", ".opis/runs/model_a", ".opis/runs/model_b", "--format", "markdown", cwd=runs,
               check_code=0)
    assert proc.stdout.startswith("|  | model_a | model_b |") and "| OPIS |" in proc.stdout
    data = json.loads(run("compare", ".opis/runs/model_a", ".opis/runs/model_b", "--format", "json", cwd=runs,
                          check_code=0).stdout)
    assert set(data) == {"model_a", "model_b"} and "bootstrap" in data["model_a"]
    assert "model_b" in run("compare", ".opis/runs/model_a", ".opis/runs/model_b", cwd=runs, check_code=0).stdout
    assert_user_error(run("compare", ".opis/runs/model_a", cwd=runs), "two or more runs")


def test_bootstrap_section_in_report(runs):
    boot = _report(runs, "model_b")["bootstrap"]
    assert boot["replicates"] == 300 and boot["unit"] == "class"
    m = _report(runs, "model_b")["metrics"]
    for name in ("opis", "eps_opis"):
        lo, hi = boot[name]["interval"]
        assert lo <= m[name] <= hi and boot[name]["se"] > 0
    lo, hi = boot["recall_at_k"]["1"]["interval"]
    assert lo <= m["recall_at_k"]["1"] <= hi
    # Same seed, same bytes.
    again = run("evaluate", SAMPLE / "model_b.parquet", "--calib", CALIB, "--bootstrap", "300", "--no-save",
                "--json", "-", "-q", cwd=runs, check_code=0).stdout
    assert json.loads(again)["bootstrap"] == boot


def test_bootstrap_intervals_cover_the_population_value_at_about_the_nominal_rate():
    # Population: 100,000 classes with logistic utility curves of random slope and midpoint.
    # Each trial draws 150 classes, computes OPIS with a 95% class-bootstrap interval, and asks
    # whether the population OPIS lies inside. 120 seeded trials: coverage should be ~0.95; a
    # binomial 99.9% band around 0.95 is about [0.88, 0.995].
    rng = np.random.default_rng(2024)
    grid = np.linspace(0.0, 1.0, 21)

    def curves(n):
        slope = rng.uniform(4, 14, n)[:, None]
        mid = rng.normal(0.5, 0.15, n)[:, None]
        return 1.0 / (1.0 + np.exp(-slope * (grid[None, :] - mid)))

    truth = opis(curves(100_000), grid).value
    inside = 0
    trials = 120
    for t in range(trials):
        sample = curves(150)
        boot = class_bootstrap(sample, grid, epsilon=0.1, contrast="rest", replicates=300, seed=t)
        lo, hi = boot["opis"]["interval"]
        inside += lo <= truth <= hi
    assert 0.88 <= inside / trials <= 0.995, inside / trials
