"""The CLI through its real entry point (the installed ``opis`` script), exit codes and output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"


def opis_command() -> list[str]:
    script = Path(sys.executable).parent / "opis"
    if script.exists():
        return [str(script)]
    found = shutil.which("opis")
    return [found] if found else [sys.executable, "-m", "opis_cli"]


def run(*args, cwd=None, check_code=None):
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    proc = subprocess.run([*opis_command(), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)
    if check_code is not None:
        assert proc.returncode == check_code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def assert_user_error(proc, fragment):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert fragment in proc.stderr, proc.stderr


def test_help_shows_examples():
    out = run("--help", check_code=0).stdout
    assert "Examples" in out and "opis evaluate" in out
    out = run("evaluate", "--help", check_code=0).stdout
    assert "Examples" in out and "--calib" in out and "--memory-budget" in out


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "opis_cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("opis-cli ")


def test_evaluate_parquet_and_npy_give_identical_figures(tmp_path):
    reports = []
    for args in ([SAMPLE / "model_a.parquet"], [SAMPLE / "model_a.npy", "--labels", SAMPLE / "labels.npy"]):
        proc = run("evaluate", *args, "--calib", "0.6:0.85", "--json", "-", "--out-dir", tmp_path / "o",
                   check_code=0)
        reports.append(json.loads(proc.stdout))
    a, b = reports
    assert a["schema_version"] == 4
    assert a["calibration"]["lo"] == 0.6 and a["calibration"]["hi"] == 0.85
    assert a["input"]["n"] == 3000 and a["input"]["classes_used"] == 58 and a["input"]["classes_skipped"] == 2
    assert a["input"]["format"] == "parquet" and b["input"]["format"] == "npy"
    assert a["input"]["sha256"] == b["input"]["sha256"]
    for key in ("metrics", "calibration", "classes", "config", "pairs"):
        assert a[key] == b[key], key
    assert len(list((tmp_path / "o" / "runs").iterdir())) == 2


def test_npz_and_feather_inputs(tmp_path):
    x = np.load(SAMPLE / "model_a.npy")
    y = np.load(SAMPLE / "labels.npy")
    np.savez(tmp_path / "d.npz", embeddings=x, labels=y)
    a = json.loads(run("evaluate", tmp_path / "d.npz", "--calib", "0.6:0.85", "--json", "-", "--no-save",
                       check_code=0).stdout)
    table = pq.read_table(SAMPLE / "model_a.parquet")
    import pyarrow.feather as feather

    feather.write_feather(table, tmp_path / "d.feather")
    b = json.loads(run("evaluate", tmp_path / "d.feather", "--calib", "0.6:0.85", "--json", "-", "--no-save",
                       check_code=0).stdout)
    assert a["metrics"] == b["metrics"] and a["classes"] == b["classes"]
    assert a["input"]["sha256"] == b["input"]["sha256"]


def test_run_directory_and_latest(tmp_path):
    out = tmp_path / "runs-here"
    proc = run("evaluate", SAMPLE / "model_b.parquet", "--calib", "0.6:0.85", "--out-dir", out, "--name", "b1",
               "--json", tmp_path / "r.json", check_code=0)
    assert "OPIS" in proc.stdout and "sp-" in proc.stdout
    run_dir = out / "runs" / "b1"
    assert (out / "latest").resolve() == run_dir.resolve()
    assert (run_dir / "report.json").read_bytes() == (tmp_path / "r.json").read_bytes()
    curves = pq.read_table(run_dir / "curves.parquet")
    assert curves.column_names == ["label", "curve", "threshold", "tar", "trr", "utility", "pos_accepted",
                                   "neg_accepted"]
    assert curves.num_rows == (58 + 2) * 101  # classes, the mean curve, the pooled curve
    pooled = curves.filter(pa.compute.equal(curves.column("curve"), "pooled"))
    report = json.loads((run_dir / "report.json").read_text())
    assert 1 - pooled.column("trr").to_numpy()[-1] == pytest.approx(report["calibration"]["far_at_hi"], abs=1e-15)
    assert pooled.column("pos_accepted").to_numpy()[-1] == round(report["calibration"]["tar_at_hi"]
                                                                 * report["pairs"]["positive"])
    assert not list(out.glob("runs/.*"))  # no staging leftovers
    again = run("evaluate", SAMPLE / "model_b.parquet", "--calib", "0.6:0.85", "--out-dir", out, "--name", "b1")
    assert_user_error(again, "already exists")


def test_markdown_format():
    out = run("evaluate", SAMPLE / "model_a.parquet", "--calib", "0.6:0.85", "--no-save", "--format", "markdown",
              check_code=0).stdout
    assert out.startswith("### opis-cli evaluation")
    assert "| OPIS |" in out and "| label | size | mean utility | OPIS contribution | share of OPIS |" in out
    shares = [float(line.rsplit("|", 2)[1].strip().rstrip("%")) for line in out.splitlines()
              if line.startswith("| sp-")]
    assert len(shares) == 10 and all(0 < v <= 100 for v in shares)


def _write_parquet(path, x, labels):
    col = pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(x, np.float32).reshape(-1)), x.shape[1])
    pq.write_table(pa.table({"embedding": col, "label": pa.array(labels)}), path)


@pytest.fixture
def small(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4)).astype(np.float32)
    y = np.arange(20) % 4
    return tmp_path, x, y


def test_error_missing_file(tmp_path):
    assert_user_error(run("evaluate", tmp_path / "nope.parquet"), "no such file")


def test_error_unknown_column(small):
    tmp, x, y = small
    _write_parquet(tmp / "d.parquet", x, y)
    assert_user_error(run("evaluate", tmp / "d.parquet", "--label-col", "species"),
                      "no column 'species'; available columns: embedding, label")


def test_error_length_mismatch(small):
    tmp, x, y = small
    np.save(tmp / "e.npy", x)
    np.save(tmp / "y.npy", y[:-1])
    assert_user_error(run("evaluate", tmp / "e.npy", "--labels", tmp / "y.npy"), "length mismatch")


def test_error_npy_without_labels(small):
    tmp, x, y = small
    np.save(tmp / "e.npy", x)
    assert_user_error(run("evaluate", tmp / "e.npy"), "--labels")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_error_non_finite(small, bad):
    tmp, x, y = small
    x[5, 2] = bad
    _write_parquet(tmp / "d.parquet", x, y)
    assert_user_error(run("evaluate", tmp / "d.parquet", "--no-save"), "NaN or Inf in 1 row(s) (first at row 5)")


def test_error_zero_vector(small):
    tmp, x, y = small
    x[3] = 0
    _write_parquet(tmp / "d.parquet", x, y)
    assert_user_error(run("evaluate", tmp / "d.parquet", "--no-save"), "all-zero")
    # ... which is fine for raw l2
    run("evaluate", tmp / "d.parquet", "--no-save", "--metric", "l2", "--no-normalize", "--calib", "0.5:3",
        check_code=0)


def test_error_too_few_classes(small):
    tmp, x, y = small
    y = np.r_[np.zeros(18, int), 1, 2]  # one class with members, two singletons
    _write_parquet(tmp / "d.parquet", x, y)
    assert_user_error(run("evaluate", tmp / "d.parquet", "--no-save"), "at least two classes with two or more members")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--calib", "0.9:0.1"], "LO < HI"),
        (["--calib", "0.5:0.5"], "LO < HI"),
        (["--calib", "0.5:2.5"], "outside the cosine distance span [0, 2]"),
        (["--calib", "-0.1:0.5", "--metric", "l2"], "outside the l2 distance span"),
        (["--calib", "abc"], "LO:HI"),
        (["--calib-far", "0.1:0.01"], "LO < HI"),
        (["--calib-far", "0:0.5"], "must lie in (0, 1)"),
        (["--calib", "0.1:0.9", "--calib-far", "0.01:0.1"], "either --calib or --calib-far"),
        (["--thresholds", "1"], "--thresholds must be an integer >= 2"),
        (["--epsilon", "1.5"], "--epsilon must lie in (0, 1)"),
        (["--k", "0"], "--k values must be >= 1"),
        (["--k", "50"], "larger than the database"),
        (["--no-normalize"], "--no-normalize applies to --metric l2"),
        (["--memory-budget", "lots"], "--memory-budget"),
        (["--metric", "manhattan"], "manhattan"),
    ],
)
def test_bad_options(small, args, fragment):
    tmp, x, y = small
    _write_parquet(tmp / "d.parquet", x, y)
    assert_user_error(run("evaluate", tmp / "d.parquet", "--no-save", *args), fragment)


def test_output_directory_not_writable(small):
    tmp, x, y = small
    _write_parquet(tmp / "d.parquet", x, y)
    blocker = tmp / "file"
    blocker.write_text("")
    assert_user_error(run("evaluate", tmp / "d.parquet", "--calib", "0.2:1", "--out-dir", blocker / "sub"),
                      "cannot create run directory")


def test_help_imports_no_heavy_library():
    # -X importtime lists every module imported: --help must not pay for numpy, numba (JIT) or faiss.
    for args in (["--help"], ["evaluate", "--help"]):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "opis_cli", *args], capture_output=True,
                              text=True, check=True)
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
        assert not imported & {"numpy", "numba", "faiss", "pyarrow", "matplotlib", "scipy"}, args


def test_labels_reach_the_terminal_inert(tmp_path):
    # A label that would clear the screen, one that is rich markup, one with a newline: shown as
    # text, never executed (issue 15).
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array(["\x1b[2Jclear", "[bold red]x[/]", "two\nlines", "plain"]), 12)
    x = rng.normal(size=(4, 8))[np.repeat(np.arange(4), 12)] + 0.8 * rng.normal(size=(48, 8))
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    np.save(tmp_path / "y.npy", labels)
    out = run("evaluate", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--no-save", "--calib", "0.2:1.2",
              "--epsilon", "0.75", cwd=tmp_path, check_code=0).stdout
    assert "\x1b" not in out and "\\x1b[2Jclear" in out
    assert "[bold red]x[/]" in out and "two\\nlines" in out


def saved_run(cwd, input, name, *, labels=None, calib=None, bootstrap=0, **config):
    """What ``opis evaluate INPUT --name NAME [--labels] [--calib LO:HI] [--bootstrap B] -q`` saves
    under ``cwd/.opis``, made in this process by the same library call the command makes
    (run_evaluate; tests/test_cli_layout.py checks they agree): fixtures that only need runs to
    exist skip a process start each."""
    from opis_cli.config import EvalConfig
    from opis_cli.pipeline.evaluate_command import EvaluateRequest, run_evaluate

    request = EvaluateRequest(input=input, labels=labels, config=EvalConfig(calib=calib, **config),
                              bootstrap=bootstrap, name=name, out_dir=Path(cwd) / ".opis")
    return run_evaluate(request).run_dir
