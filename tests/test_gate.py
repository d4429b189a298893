"""opis gate / evaluate --bootstrap: checks, exit codes, comparability at matched operating points,
paired significance, refusals of reports that must not be trusted, and the bootstrap intervals'
coverage in seeded simulations.

Ground truth used here: the sample models (B is worse than A by construction) and a *planted*
regression (model A with a common direction added to every vector, which moves all distances,
and extra scatter in 30% of its classes, which makes it less threshold-consistent): compared at
one pinned distance range the planted model looks as good as A; at matched pooled FAR it is
several times worse.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from opis_cli.statistics.bootstrap import class_bootstrap, paired_class_bootstrap
from opis_cli.errors import ConfigError, InputError
from opis_cli.verdicts.gate import GateOptions, Limit, parse_limit, parse_recall_limit, run_gate
from opis_cli.statistics.metrics import opis
from opis_cli.report.report import SCHEMA_VERSION
from test_cli import SAMPLE, assert_user_error, run, saved_run

CALIB = "0.6:0.85"  # a pinned range (same model, new data)


def planted_regression(path):
    """Model A with a common direction added (all distances move) and 30% of its classes scattered."""
    x = np.load(SAMPLE / "model_a.npy")
    y = np.load(SAMPLE / "labels.npy")
    rng = np.random.default_rng(5)
    u = rng.normal(size=x.shape[1])
    z = x + 0.5 * u / np.linalg.norm(u)
    classes = np.unique(y)
    bad = np.isin(y, rng.choice(classes, int(len(classes) * 0.3), replace=False))
    z[bad] += 0.3 * rng.normal(size=(int(bad.sum()), x.shape[1])) / np.sqrt(x.shape[1])
    np.save(path, z.astype(np.float32))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # The runs are made in this process (saved_run: opis evaluate's own library call); the gate
    # under test runs through the CLI.
    cwd = tmp_path_factory.mktemp("gate")
    planted = planted_regression(cwd / "planted.npy")
    pinned = tuple(float(v) for v in CALIB.split(":"))
    for model in ("model_a", "model_b"):
        saved_run(cwd, SAMPLE / f"{model}.parquet", model, calib=pinned, bootstrap=300)
        saved_run(cwd, SAMPLE / f"{model}.parquet", f"{model}_far")
    a_far = json.loads((cwd / ".opis/runs/model_a_far/report.json").read_text())["calibration"]
    a_range = (a_far["lo"], a_far["hi"])
    labels = SAMPLE / "labels.npy"
    saved_run(cwd, SAMPLE / "model_a.npy", "a_pinned", labels=labels, calib=a_range)
    saved_run(cwd, planted, "planted_pinned", labels=labels, calib=a_range)
    saved_run(cwd, planted, "planted_far", labels=labels)
    saved_run(cwd, SAMPLE / "model_a.parquet", "far_range")
    return cwd


def _report(runs, name):
    return json.loads((runs / ".opis" / "runs" / name / "report.json").read_text())


def _gate_json(runs, *args, code):
    return json.loads(run("gate", *args, "--format", "json", cwd=runs, check_code=code).stdout)


def test_a_report_passes_against_itself(runs):
    proc = run("gate", ".opis/runs/model_a", "--baseline", ".opis/runs/model_a", "--max-opis-increase", "0",
               "--max-eps-opis-increase", "0%", "--max-recall-drop", "0", cwd=runs, check_code=0)
    assert "passed" in proc.stdout


def test_the_worse_model_fails_the_gate(runs):
    result = _gate_json(runs, ".opis/runs/model_b", "--baseline", ".opis/runs/model_a", "--max-opis-increase", "10%",
                        code=1)
    assert result["passed"] is False and result["checks"][0]["metric"] == "OPIS increase"
    a, b = _report(runs, "model_a")["metrics"]["opis"], _report(runs, "model_b")["metrics"]["opis"]
    assert result["checks"][0]["delta"] == pytest.approx(b - a)
    # ... and the better one passes against the worse.
    run("gate", ".opis/runs/model_a", "--baseline", ".opis/runs/model_b", "--max-opis-increase", "0", cwd=runs,
        check_code=0)


def test_models_at_matched_far_are_compared_each_at_its_own_range(runs):
    result = _gate_json(runs, ".opis/runs/model_b_far", "--baseline", ".opis/runs/model_a_far",
                        "--max-opis-increase", "10%", code=1)
    a, b = _report(runs, "model_a_far")["calibration"], _report(runs, "model_b_far")["calibration"]
    assert (a["lo"], a["hi"]) != (b["lo"], b["hi"])  # each model its own distance range ...
    assert result["ranges"] == {"model_a_far": f"FAR 0.001:0.1 -> [{a['lo']:.4g}, {a['hi']:.4g}]",
                                "model_b_far": f"FAR 0.001:0.1 -> [{b['lo']:.4g}, {b['hi']:.4g}]"}
    assert result["warnings"] == []  # ... at the same operating points
    md = run("gate", ".opis/runs/model_b_far", "--baseline", ".opis/runs/model_a_far", "--max-opis-increase", "10%",
             "--format", "markdown", cwd=runs, check_code=1).stdout
    assert "FAR 0.001:0.1 ->" in md and "**FAILED**" in md


def test_a_pinned_range_hides_the_planted_regression_and_says_so(runs):
    truth_a, truth_b = _report(runs, "model_a_far")["metrics"]["opis"], _report(runs, "planted_far")["metrics"]["opis"]
    assert truth_b > 2 * truth_a  # the planted model is far less consistent at matched operating points
    # At A's distance range pinned for both, the regression almost vanishes: the limit passes ...
    proc = run("gate", ".opis/runs/planted_pinned", "--baseline", ".opis/runs/a_pinned", "--max-opis-increase", "10%",
               cwd=runs, check_code=0)
    # ... but not silently: the two models sit at different pooled FARs on that range.
    assert "operating points differ" in proc.stdout and "--calib-far" in proc.stdout
    planted = _report(runs, "planted_pinned")["calibration"]
    assert planted["far_at_hi"] > 2 * _report(runs, "a_pinned")["calibration"]["far_at_hi"]
    md = run("gate", ".opis/runs/planted_pinned", "--baseline", ".opis/runs/a_pinned", "--max-opis-increase", "10%",
             "--format", "markdown", cwd=runs, check_code=0).stdout
    assert "> **warning:** operating points differ" in md
    assert_user_error(run("gate", ".opis/runs/planted_pinned", "--baseline", ".opis/runs/a_pinned",
                          "--max-opis-increase", "10%", "--strict", cwd=runs), "operating points differ")
    # Matched operating points catch it.
    result = _gate_json(runs, ".opis/runs/planted_far", "--baseline", ".opis/runs/model_a_far", "--max-opis-increase",
                        "10%", code=1)
    assert result["checks"][0]["delta"] == pytest.approx(truth_b - truth_a)
    # compare says the same.
    out = run("compare", ".opis/runs/a_pinned", ".opis/runs/planted_pinned", cwd=runs, check_code=0).stdout
    assert "operating points differ" in out
    assert_user_error(run("compare", ".opis/runs/a_pinned", ".opis/runs/planted_pinned", "--strict", cwd=runs),
                      "operating points differ")


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


def test_significance_is_paired_on_run_directories_and_unpaired_on_bare_reports(runs, tmp_path):
    args = ["--baseline", ".opis/runs/model_a", "--max-opis-increase", "10%", "--max-recall-drop", "0",
            "--significance", "0.95"]
    paired = _gate_json(runs, ".opis/runs/model_b", *args, code=1)
    assert paired["significance"] == "paired"
    assert all("paired tolerance" in c["note"] for c in paired["checks"])
    # Bare report files have no per-class curves: the reports' own bootstrap errors, unpaired.
    for name in ("model_a", "model_b"):
        shutil.copy(runs / ".opis/runs" / name / "report.json", tmp_path / f"{name}.json")
    unpaired = _gate_json(runs, str(tmp_path / "model_b.json"), "--baseline", str(tmp_path / "model_a.json"),
                          *args[2:], code=1)
    assert unpaired["significance"] == "unpaired"
    assert all("unpaired tolerance" in c["note"] for c in unpaired["checks"])
    # Paired runs need no bootstrap section at all (the far runs have none).
    far = _gate_json(runs, ".opis/runs/model_b_far", "--baseline", ".opis/runs/model_a_far", "--max-opis-increase",
                     "10%", "--significance", "0.95", code=1)
    assert far["significance"] == "paired"
    assert_user_error(run("gate", ".opis/runs/far_range", "--max-opis", "1", "--significance", "0.95", cwd=runs),
                      "--bootstrap")


def test_evaluate_gates_in_one_step(runs):
    proc = run("evaluate", SAMPLE / "model_b.parquet", "--calib", CALIB, "--no-save", "--baseline",
               ".opis/runs/model_a", "--max-opis-increase", "5%", "--format", "markdown", cwd=runs, check_code=1)
    assert "### opis gate: **FAILED**" in proc.stdout and "### opis-cli evaluation" in proc.stdout
    run("evaluate", SAMPLE / "model_a.parquet", "--calib", CALIB, "--no-save", "--max-opis", "0.02", "-q", cwd=runs,
        check_code=0)
    # One step with a paired significance test (the evaluation in memory against a run directory).
    proc = run("evaluate", SAMPLE / "model_b.parquet", "--no-save", "--baseline", ".opis/runs/model_a_far",
               "--max-opis-increase", "10%", "--significance", "0.95", "--format", "markdown", cwd=runs, check_code=1)
    assert "significance: paired class bootstrap" in proc.stdout


def test_different_calibrations_are_refused_or_warned(runs):
    proc = run("gate", ".opis/runs/far_range", "--baseline", ".opis/runs/model_a", "--max-opis-increase", "1",
               cwd=runs)
    assert_user_error(proc, "calibration differs")
    assert "--calib-far" in proc.stderr and "pinned [0.6, 0.85]" in proc.stderr
    proc = run("gate", ".opis/runs/far_range", "--baseline", ".opis/runs/model_a", "--max-opis-increase", "1",
               "--on-mismatch", "warn", cwd=runs, check_code=0)
    assert "calibration differs" in proc.stdout


def _edited(runs, tmp_path, name, change, raw=None):
    data = _report(runs, name)
    change(data)
    path = tmp_path / f"{name}-edited.json"
    path.write_text(raw(json.dumps(data)) if raw else json.dumps(data))
    return path


@pytest.mark.parametrize("change, fragment", [
    (lambda r: r["config"].__setitem__("metric", "l2"), "metric differs"),
    (lambda r: r["config"].__setitem__("beta", 2.0), "beta differs"),
    (lambda r: r["config"].__setitem__("epsilon", 0.2), "epsilon differs"),
    (lambda r: r["calibration"].__setitem__("thresholds", 51), "thresholds differ"),
    (lambda r: r["calibration"].update(far_target=[0.01, 0.1]), "FAR bounds differ"),
])
def test_each_setting_rule(runs, change, fragment):
    a = _report(runs, "model_a_far")
    other = json.loads(json.dumps(a))
    change(other)
    with pytest.raises(InputError, match=fragment):
        run_gate(other, a, GateOptions(max_opis_increase=Limit(1.0)))
    assert run_gate(other, a, GateOptions(max_opis_increase=Limit(1.0), on_mismatch="warn")).warnings


def _drop_hash(r):
    del r["input"]["labels_sha256"]


def _one_class_bigger(r):
    r["classes"][0]["size"] += 1
    r["input"]["n"] += 1


def _other_items(r):
    r["classes"][0]["size"] += 1
    r["classes"][1]["size"] -= 1


@pytest.mark.parametrize("change, fragment", [
    (_drop_hash, "has no evaluation-set hash"),
    (lambda r: r["input"].__setitem__("n", r["input"]["n"] + 5), "3,000 items in baseline model_a, 3,005 in current"),
    (_one_class_bigger, "evaluation sets differ"),
    (_other_items, "2 class size(s) differ"),
    (lambda r: r["classes"].pop() and r["input"].__setitem__("classes_used", 57), "class sets differ"),
    (lambda r: r["input"].__setitem__("labels_sha256", "0" * 64), "evaluation sets differ (labels hash)"),
])
def test_another_evaluation_set_is_always_refused(runs, tmp_path, change, fragment):
    edited = _edited(runs, tmp_path, "model_a", change)
    proc = run("gate", edited, "--baseline", ".opis/runs/model_a", "--max-opis-increase", "1", "--on-mismatch", "warn",
               cwd=runs)
    assert_user_error(proc, fragment)
    if change is _drop_hash:
        assert "re-run `opis evaluate`" in proc.stderr


# Every version this reader knows, as the refusal lists them.
UNKNOWN_VERSION = f"version 99 is unknown; this opis-cli reads {', '.join(map(str, range(1, SCHEMA_VERSION + 1)))} (upgrade"
THROUGH_THE_CLI = {"metrics.opis is nan", "metrics.opis is False, expected a number", "bootstrap.opis.se is 1e+300",
                   UNKNOWN_VERSION, "cannot read it"}


@pytest.mark.parametrize("change, raw, fragment", [
    (lambda r: r["metrics"].__setitem__("opis", -1), None, "metrics.opis is -1"),
    (lambda r: r["metrics"].__setitem__("opis", False), None, "metrics.opis is False, expected a number"),
    (lambda r: r["metrics"].__setitem__("opis", 0.3), None, "metrics.opis is 0.3, outside [0, 0.25]"),
    (lambda r: r["metrics"].__setitem__("opis", 0.001), lambda t: t.replace("0.001", "NaN", 1), "metrics.opis is nan"),
    (lambda r: r["metrics"]["recall_at_k"].__setitem__("1", 1.5), None, "recall_at_k.1 is 1.5"),
    (lambda r: r["metrics"].__setitem__("eps_opis", "0.01"), None, "metrics.eps_opis is '0.01'"),
    (lambda r: r["bootstrap"]["opis"].__setitem__("se", 1e300), None, "bootstrap.opis.se is 1e+300"),
    (lambda r: r["bootstrap"]["opis"].__setitem__("se", -0.1), None, "bootstrap.opis.se is -0.1"),
    (lambda r: r["bootstrap"]["opis"].__setitem__("interval", [0.2, 0.1]), None, "expected lo <= hi"),
    (lambda r: r["calibration"].__setitem__("far_at_hi", 2.0), None, "calibration.far_at_hi is 2.0"),
    (lambda r: r["calibration"].__setitem__("hi", r["calibration"]["lo"]), None, "is empty"),
    (lambda r: r.__setitem__("schema_version", 99), None, UNKNOWN_VERSION),
    (lambda r: r.__setitem__("schema_version", 0), None, "version 0 is unknown"),
    (lambda r: r.__setitem__("schema_version", "2"), None, "version '2' is unknown"),
    (lambda r: r.__setitem__("schema_version", True), None, "version True is unknown"),
    (lambda r: r.__setitem__("schema_version", 777), lambda t: t.replace("777", "7" * 5000, 1), "cannot read it"),
    (lambda r: r["classes"][0].__setitem__("size", 1), None, "classes[0].size is 1"),
    (lambda r: r.__setitem__("classes", {}), None, "classes lists {}"),
    (lambda r: r.__setitem__("engine", {"name": "magic"}), None, "engine.name is 'magic'"),
])
def test_a_report_outside_its_domain_is_refused(runs, tmp_path, change, raw, fragment):
    from opis_cli.report.runs import load_report_json

    edited = _edited(runs, tmp_path, "model_a", change, raw)
    with pytest.raises(InputError, match=re.escape(fragment)):
        load_report_json(edited)
    if fragment in THROUGH_THE_CLI:  # every reader refuses it: gate as current or baseline, compare
        for args in (["gate", edited, "--max-opis", "0.5"],
                     ["gate", ".opis/runs/model_a", "--baseline", edited, "--max-opis-increase", "10%", "--format",
                      "json"],
                     ["compare", edited, ".opis/runs/model_a"]):
            assert_user_error(run(*args, cwd=runs), fragment)


def test_deeply_nested_json_is_refused(runs, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 3000 + "]" * 3000)
    assert_user_error(run("gate", path, "--max-opis", "1", cwd=runs), "is not an opis report")
    path.write_text('{"schema_version": 2, "metrics": ' + "[" * 3000 + "]" * 3000 + "}")
    assert_user_error(run("gate", path, "--max-opis", "1", cwd=runs), "nested too deeply")


@pytest.fixture(scope="module")
def approximate_run(runs):
    run("evaluate", SAMPLE / "model_a.parquet", "--calib", CALIB, "--index", "ivf", "--negatives", "sample",
        "--samples-per-anchor", "400", "--name", "model_a_ivf", "-q", cwd=runs, check_code=0)
    return _report(runs, "model_a_ivf")


def test_an_approximate_report_is_compared_only_when_allowed_and_at_its_interval(runs, approximate_run):
    args = [".opis/runs/model_a_ivf", "--baseline", ".opis/runs/model_a", "--max-opis-increase", "0"]
    proc = run("gate", *args, cwd=runs)
    assert_user_error(proc, "approximate")
    assert "--allow-approximate" in proc.stderr and "--index exact" in proc.stderr
    result = _gate_json(runs, *args, "--allow-approximate", code=1)
    # The estimate is judged at the top of its interval against the exact baseline: an increase
    # of at least half the interval's width, which a zero-increase limit cannot accept.
    lo, hi = approximate_run["approximation"]["errors"]["opis"]["interval"]
    exact = _report(runs, "model_a")["metrics"]["opis"]
    assert lo <= exact <= hi and hi > exact
    check = result["checks"][0]
    assert not check["passed"] and check["note"] == f"approximate: judged at {hi - exact:+.4g}"
    limit = f"{(hi - exact) * 1.01:.4e}"
    run("gate", *args[:3], "--max-opis-increase", limit, "--allow-approximate", cwd=runs, check_code=0)
    # An absolute limit on an approximate report alone is judged at the interval's top, always.
    absolute = _gate_json(runs, ".opis/runs/model_a_ivf", "--max-opis", f"{(approximate_run['metrics']['opis'] + hi) / 2:.8f}",
                          code=1)
    assert "the top of its interval" in absolute["checks"][0]["note"]


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
    (["--max-opis", "0.1", "--significance", "nan"], "--significance must lie"),
    (["--baseline", ".opis/runs/missing", "--max-opis-increase", "1"], "no report at"),
    (["--min-recall-at-k", "9=0.5"], "no Recall@9"),
])
def test_gate_usage_errors(runs, args, fragment):
    assert_user_error(run("gate", *args, cwd=runs), fragment)


def test_gate_without_any_run(tmp_path):
    assert_user_error(run("gate", "--max-opis", "1", cwd=tmp_path), "no previous run")


def test_compare_shows_each_change_with_its_paired_interval(runs):
    md = run("compare", ".opis/runs/model_a_far", ".opis/runs/model_b_far", "--format", "markdown", cwd=runs,
             check_code=0).stdout
    assert md.startswith("|  | model_a_far | model_b_far |") and "| OPIS |" in md
    assert "| OPIS change vs model_a_far | - | +" in md and "paired |" in md
    data = json.loads(run("compare", ".opis/runs/model_a_far", ".opis/runs/model_b_far", "--format", "json",
                          cwd=runs, check_code=0).stdout)
    assert data["reference"] == "model_a_far" and set(data["runs"]) == {"model_a_far", "model_b_far"}
    change = data["runs"]["model_b_far"]["change"]["opis"]
    a, b = (_report(runs, n)["metrics"]["opis"] for n in ("model_a_far", "model_b_far"))
    assert change["method"] == "paired" and change["delta"] == pytest.approx(b - a)
    assert change["interval"][0] <= b - a <= change["interval"][1] and change["interval"][0] > 0
    assert data["warnings"] == []
    table = run("compare", ".opis/runs/model_a_far", ".opis/runs/model_b_far", cwd=runs, check_code=0).stdout
    assert "model_b_far" in table and "FAR 0.001:0.1 ->" in table
    # Incomparable runs are shown side by side with a warning and no change; --strict refuses.
    mixed = json.loads(run("compare", ".opis/runs/model_a", ".opis/runs/model_b_far", "--format", "json", cwd=runs,
                           check_code=0).stdout)
    assert "change" not in mixed["runs"]["model_b_far"] and "calibration differs" in mixed["warnings"][0]
    assert_user_error(run("compare", ".opis/runs/model_a", ".opis/runs/model_b_far", "--strict", cwd=runs),
                      "not comparable")
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


def _logistic_population(rng, grid, n):
    slope = rng.uniform(4, 14, n)[:, None]
    mid = rng.normal(0.5, 0.15, n)[:, None]
    return slope, mid


def _curves(grid, slope, mid):
    return 1.0 / (1.0 + np.exp(-slope * (grid[None, :] - mid)))


def test_bootstrap_intervals_cover_the_population_value_at_about_the_nominal_rate():
    # Population: 100,000 classes with logistic utility curves of random slope and midpoint.
    # Each trial draws 150 classes, computes OPIS with a 95% class-bootstrap interval, and asks
    # whether the population OPIS lies inside. 120 seeded trials: coverage should be ~0.95; a
    # binomial 99.9% band around 0.95 is about [0.88, 0.995].
    rng = np.random.default_rng(2024)
    grid = np.linspace(0.0, 1.0, 21)
    truth = opis(_curves(grid, *_logistic_population(rng, grid, 100_000)), grid).value
    inside = 0
    trials = 120
    for t in range(trials):
        sample = _curves(grid, *_logistic_population(rng, grid, 150))
        boot = class_bootstrap(sample, grid, epsilon=0.1, contrast="rest", replicates=300, seed=t)
        lo, hi = boot["opis"]["interval"]
        inside += lo <= truth <= hi
    assert 0.88 <= inside / trials <= 0.995, inside / trials


def test_paired_bootstrap_covers_the_population_change_and_is_tighter_than_unpaired():
    # Two models of the same population of classes: the second moves every class's midpoint a
    # little at random (more spread across classes: a real rise in OPIS), but which classes are
    # hard is shared. Each trial samples 150 classes; the paired interval of the OPIS change should
    # hold the population change ~95% of the time, and its se should beat the unpaired
    # sqrt(se_a^2 + se_b^2), which ignores what the two models share.
    rng = np.random.default_rng(7)
    grid = np.linspace(0.0, 1.0, 21)

    def population(n):
        slope, mid = _logistic_population(rng, grid, n)
        return _curves(grid, slope, mid), _curves(grid, slope, mid + rng.normal(0, 0.06, (n, 1)))

    base, cur = population(100_000)
    truth = opis(cur, grid).value - opis(base, grid).value
    assert truth > 0
    inside, ratios = 0, []
    trials = 80
    for t in range(trials):
        b, c = population(150)
        paired = paired_class_bootstrap((b, grid), (c, grid), epsilon=0.1, contrast="rest", replicates=300, seed=t)
        lo, hi = paired["opis"]["interval"]
        inside += lo <= truth <= hi
        se_b = class_bootstrap(b, grid, epsilon=0.1, contrast="rest", replicates=300, seed=t)["opis"]["se"]
        se_c = class_bootstrap(c, grid, epsilon=0.1, contrast="rest", replicates=300, seed=t)["opis"]["se"]
        ratios.append(paired["opis"]["se"] / np.hypot(se_b, se_c))
    assert 0.86 <= inside / trials <= 1.0, inside / trials
    assert np.median(ratios) < 0.8, np.median(ratios)
    # A run against itself: every paired replicate difference is exactly zero.
    same = paired_class_bootstrap((b, grid), (b, grid), epsilon=0.1, contrast="rest", replicates=50)
    assert same["opis"] == {"se": 0.0, "interval": [0.0, 0.0]}
