"""Run directories, atomic output, and the library API."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import opis_cli
from opis_cli.errors import ConfigError, InputError, OpisError
from opis_cli.report.runs import atomic_write, atomic_write_text, resolve_run, save_run


@pytest.fixture(scope="module")
def report():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(12), rng.integers(2, 20, 12))
    x = rng.normal(size=(12, 8))[labels] + rng.normal(size=(len(labels), 8))
    return opis_cli.evaluate(x, labels, calib=(0.2, 1.2), thresholds=21, k=(1, 2))


def test_save_run_and_latest(tmp_path, report):
    first = save_run(report, tmp_path, "one")
    second = save_run(report, tmp_path)
    assert (tmp_path / "latest").resolve() == second.resolve()
    assert resolve_run(None, tmp_path) == (second / "report.json").resolve()
    assert resolve_run(first) == first / "report.json"
    assert json.loads((first / "report.json").read_text()) == report.to_dict()
    meta = json.loads((first / "run.json").read_text())
    assert meta["name"] == "one" and "pair_pass" in meta["timings"]
    with pytest.raises(OpisError, match="already exists"):
        save_run(report, tmp_path, "one")


def test_no_previous_run(tmp_path):
    with pytest.raises(InputError, match="no previous run"):
        resolve_run(None, tmp_path)


def test_failed_write_leaves_target_and_no_temp_file(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")

    def broken(path):
        path.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OpisError, match="No space left on device"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_interrupted_run_keeps_latest(tmp_path, report, monkeypatch):
    good = save_run(report, tmp_path, "good")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(report), "curves_table", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_run(report, tmp_path, "bad")
    assert (tmp_path / "latest").resolve() == good.resolve()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["good"]


def test_atomic_write_text_into_missing_directory(tmp_path):
    with pytest.raises(OpisError, match="does not exist"):
        atomic_write_text(tmp_path / "nope" / "r.json", "{}")


def test_api_report_views(report):
    assert set(report.recall_at_k) == {1, 2}
    assert report.curves.utility.shape == (12, 21)
    assert np.isclose(report.opis_contributions.sum(), report.opis)
    assert "OPIS" in str(report) and report.to_markdown().startswith("### ")
    table = report.curves_table()
    assert table.num_rows == 14 * 21  # 12 classes, the mean and the pooled curve
    import pyarrow.compute as pc

    mean_rows = table.filter(pc.equal(table["curve"].cast("string"), "mean"))
    assert mean_rows.num_rows == 21 and mean_rows["label"].null_count == 21


def test_api_progress_callback_reports_every_pair():
    rng = np.random.default_rng(0)
    labels = np.arange(100) % 5
    x = rng.normal(size=(100, 4))
    seen = []
    opis_cli.evaluate(x, labels, memory_budget=16 * 16 * 30, progress=lambda s, d, t: seen.append((s, d, t)))
    stages = [s for s, _, _ in seen]
    assert stages[0] == "calibrating" and stages[-1] == "counting pairs"
    assert seen[-1][1] == seen[-1][2] == 100 * 99 // 2


def test_api_errors_are_domain_exceptions():
    with pytest.raises(InputError, match="length mismatch"):
        opis_cli.evaluate(np.ones((4, 2)), [0, 0, 1])
    with pytest.raises(InputError, match="mix several types"):
        opis_cli.evaluate(np.eye(4) + 1, np.array([1, "a", 1, "a"], dtype=object))
    with pytest.raises(InputError, match="2-D"):
        opis_cli.evaluate(np.ones(4), [0, 0, 1, 1])
    with pytest.raises(InputError, match="floating point"):
        opis_cli.evaluate(np.ones((4, 2), dtype=np.int64), [0, 0, 1, 1])


def test_calibration_range_with_no_pair_inside_is_refused_with_counts():
    # A range below every distance rejects everything at every threshold: OPIS would be 0, a figure
    # a gate would pass. Refused, with where the pairs are (most likely a range in the wrong units).
    rng = np.random.default_rng(1)
    labels = np.arange(40) % 4
    x = rng.normal(size=(40, 6))
    with pytest.raises(ConfigError, match=r"no pair distance lies inside .*\(0 pairs at or below lo, 780 above hi\)"):
        opis_cli.evaluate(x, labels, calib=(0.0, 1e-6), thresholds=5)
    # One pair inside is enough: the figures are computed (exactly; the oracle tests check that).
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    d01 = float(1 - xn[0] @ xn[1])
    r = opis_cli.evaluate(x, labels, calib=(d01 - 1e-4, d01 + 1e-4), thresholds=3)
    assert r.far_at_hi >= r.far_at_lo


def test_device_targets_are_written_in_place_never_replaced():
    # Renaming a temporary file over /dev/null would, as root, replace the machine's /dev/null.
    import stat

    before = os.stat("/dev/null")
    assert atomic_write_text("/dev/null", "{}\n") == Path("/dev/null")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    with pytest.raises(OpisError, match="No space left on device"):
        atomic_write_text("/dev/full", "{}\n")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_a_report_too_big_for_the_machine_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from opis_cli.errors import ConfigError
    from opis_cli.report.runs import load_report_json

    path = tmp_path / "big.json"
    path.write_text("[" + "1.0," * 300_000 + "1.0]")  # 1.2 MB: needs ~14 MB parsed
    monkeypatch.setenv("OPIS_AVAILABLE_MEMORY", str(8 << 20))
    with pytest.raises(ConfigError, match="reading .*big.json"):
        load_report_json(path)
