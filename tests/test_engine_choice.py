"""``--index auto`` is a documented function of the input's shape and the options: never of a
timing, so the same input and flags give the same report on an idle and on a busy machine."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys

import numpy as np
import pytest

from opis_cli.engine import cost
from opis_cli.engine.approximate import ApproxOptions
from opis_cli.engine.cost import choose_engine, estimate_exact_seconds
from test_cli import SAMPLE, assert_user_error, run


def _choose(n, d, sizes, limit_minutes=10.0, calib_given=False, budget=1 << 30, **opts):
    return choose_engine(n, d, np.asarray(sizes), kmax=1, calib_given=calib_given, far_at_hi=0.1,
                         max_exact_seconds=limit_minutes * 60, memory_budget=budget, approx=ApproxOptions(**opts))


def test_small_inputs_stay_exact_and_say_why():
    choice = _choose(3000, 64, [50] * 60)
    assert choice.engine == "exact" and "within --max-exact-minutes 10" in choice.reason
    assert choice.to_dict()["choice"] == "auto"


def test_the_estimate_is_the_documented_formula():
    n, d = 100_000, 512
    pairs = n * (n - 1) / 2
    per_pass = pairs * (2 * d / cost.EXACT_FLOPS_PER_S + 1 / cost.EXACT_KERNEL_PAIRS_PER_S)
    rest = cost.EXACT_FIXED_SECONDS + n * cost.EXACT_ROW_SECONDS
    assert estimate_exact_seconds(n, d, 2) == pytest.approx(2 * per_pass + rest)
    assert _choose(n, d, [100] * 1000).exact_seconds == pytest.approx(2 * per_pass + rest)
    assert _choose(n, d, [100] * 1000, calib_given=True).exact_seconds == pytest.approx(per_pass + rest)


def test_millions_of_rows_in_well_covered_classes_go_approximate():
    sizes = np.full(5000, 400)  # 2M rows, classes of 400
    choice = _choose(int(sizes.sum()), 128, sizes)
    assert choice.engine == "ivf", choice.reason
    assert choice.approximate_seconds * cost.APPROXIMATE_SPEEDUP <= choice.exact_seconds
    assert "approximate (IVF)" in choice.reason


def test_a_shape_whose_intervals_are_not_known_to_hold_stays_exact():
    from opis_cli.engine.approximate import coverage_problem

    rng = np.random.default_rng(0)
    sizes = np.concatenate([rng.integers(1, 4, 400_000), [50] * 100])  # most classes of 1-3 items
    opts = ApproxOptions()
    problem = coverage_problem(sizes, int(sizes.sum()), 128, opts)
    assert problem is not None
    choice = _choose(int(sizes.sum()), 128, sizes)
    assert choice.engine == "exact" and problem in choice.reason


def test_the_choice_does_not_depend_on_the_machine(monkeypatch):
    # Nothing is timed: a clock that jumps would change any timed decision.
    import time

    sizes = np.full(5000, 400)
    first = _choose(int(sizes.sum()), 128, sizes)
    monkeypatch.setattr(time, "perf_counter", lambda: float(np.random.default_rng().uniform(0, 1e6)))
    monkeypatch.setattr(time, "time", lambda: float(np.random.default_rng().uniform(0, 1e6)))
    assert _choose(int(sizes.sum()), 128, sizes) == first


def _burn(stop):
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def test_same_input_same_json_on_an_idle_and_a_busy_machine(tmp_path):
    args = ["evaluate", SAMPLE / "model_b.parquet", "--json", "-", "--no-save", "-q"]
    idle = run(*args, check_code=0).stdout
    stop = multiprocessing.Event()
    burners = [multiprocessing.Process(target=_burn, args=(stop,)) for _ in range(4)]
    for p in burners:
        p.start()
    try:
        busy = run(*args, check_code=0).stdout
    finally:
        stop.set()
        for p in burners:
            p.join()
    assert busy == idle
    engine = json.loads(idle)["engine"]
    assert engine["choice"] == "auto" and engine["name"] == "exact" and "reference machine" in engine["reason"]


def test_the_table_says_which_engine_ran_and_why():
    out = run("evaluate", SAMPLE / "model_a.parquet", "--no-save", check_code=0).stdout
    assert "exact (auto: estimated" in " ".join(out.split())
    given = json.loads(run("evaluate", SAMPLE / "model_a.parquet", "--index", "exact", "--json", "-", "--no-save",
                           "-q", check_code=0).stdout)["engine"]
    assert given["choice"] == "given" and "reason" not in given


@pytest.mark.parametrize("value", ["nan", "-1"])
def test_max_exact_minutes_must_be_a_non_negative_number(value):
    assert_user_error(run("evaluate", SAMPLE / "model_a.parquet", "--no-save", "--max-exact-minutes", value),
                      "--max-exact-minutes must be a non-negative number")


def test_a_crash_exits_3_never_1():
    # A bug must not read as a failed gate: the entry point maps it to exit code 3.
    code = ("import sys, opis_cli.pipeline.evaluation as p\n"
            "def boom(*a, **k): raise RuntimeError('planted bug')\n"
            "p.evaluate_file = boom\n"
            f"sys.argv = ['opis', 'evaluate', {str(SAMPLE / 'model_a.parquet')!r}, '--no-save']\n"
            "from opis_cli.cli.app import main\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    # One line: what failed and where the traceback went; the traceback is in that file.
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "RuntimeError: planted bug" in lines[0] and "this is a bug in opis-cli" in lines[0]
    import re
    from pathlib import Path

    path = Path(re.search(r"traceback saved to (\S+opis-crash-\S+\.txt)", lines[0]).group(1))
    try:
        saved = path.read_text()
        assert "Traceback (most recent call last)" in saved and "planted bug" in saved
    finally:
        path.unlink(missing_ok=True)


def test_an_approximate_run_over_the_memory_budget_stays_exact_and_says_what_would_allow_it():
    from opis_cli.engine.approximate import approximate_cost

    sizes = np.full(200_000, 50)  # 10M rows: 200k classes' sampled counts alone pass 1 GiB
    n = int(sizes.sum())
    need = approximate_cost(n, 64, sizes, 1, ApproxOptions(), 0.1)["working_bytes"]
    assert need > 1 << 30
    tight = _choose(n, 64, sizes, budget=1 << 30)
    assert tight.engine == "exact" and "more than --memory-budget 1.0 GiB" in tight.reason
    assert f"with --memory-budget {-(-need // 2**30)}G" in tight.reason
    roomy = _choose(n, 64, sizes, budget=int(need) + 1)
    assert roomy.engine == "ivf", roomy.reason
