"""Golden test: the sample data's JSON report, produced through the CLI with default options.

Update after an intended change with ``OPIS_UPDATE_GOLDEN=1 make test`` and review the diff.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from test_cli import ROOT, run

GOLDEN = Path(__file__).parent / "golden"


def _assert_same(got, want, path="$"):
    assert type(got) is type(want), f"{path}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, dict):
        assert list(got) == list(want), f"{path}: keys {list(got)} != {list(want)}"
        for k in want:
            _assert_same(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{path}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        # Bit-identical on one machine; a different BLAS/numpy build may reorder float sums.
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-15), f"{path}: {got} != {want}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def _check(name, args, tmp_path):
    proc = run("evaluate", *args, "--json", "-", "--no-save", cwd=ROOT, check_code=0)
    golden = GOLDEN / f"{name}.json"
    if os.environ.get("OPIS_UPDATE_GOLDEN"):
        golden.write_text(proc.stdout)
    _assert_same(json.loads(proc.stdout), json.loads(golden.read_text()))
    # Determinism: a second run gives the same bytes.
    again = run("evaluate", *args, "--json", "-", "--no-save", cwd=ROOT, check_code=0)
    assert again.stdout == proc.stdout


def test_golden_model_a_default_options(tmp_path):
    _check("model_a", ["sample_data/model_a.parquet"], tmp_path)


def test_golden_model_b_pinned_range_with_eer(tmp_path):
    _check("model_b", ["sample_data/model_b.parquet", "--calib", "0.62:0.84", "--k", "1", "--k", "5",
                       "--eps-contrast", "best", "--eer"], tmp_path)


def test_model_b_is_less_threshold_consistent():
    a = json.loads((GOLDEN / "model_a.json").read_text())
    b = json.loads(run("evaluate", "sample_data/model_b.parquet", "--json", "-", "--no-save", cwd=ROOT,
                       check_code=0).stdout)
    assert b["metrics"]["opis"] > 5 * a["metrics"]["opis"]
    assert b["metrics"]["eps_opis"] > 5 * a["metrics"]["eps_opis"]
