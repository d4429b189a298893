"""The catalogue of bad inputs and situations: one case each, run through the real ``opis`` entry
point by tests/test_errors.py and written into docs/errors.md by docs/gen_errors.py.

A case builds its files under a scratch directory (shown as ``DIR`` in messages), names the
command line, and states the exit code. The exact message is not written here: docs/errors.md
holds it, the generator writes it from a real run, and the test fails when a run prints anything
else, so the catalogue cannot drift from the tool.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"


def opis_command() -> list[str]:
    script = Path(sys.executable).parent / "opis"
    return [str(script)] if script.exists() else [sys.executable, "-m", "opis_cli"]


# ----------------------------------------------------------------------------- data helpers

def _rows(n_classes=6, per_class=10, d=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    x = (rng.normal(size=(n_classes, d))[y] + 0.5 * rng.normal(size=(len(y), d))).astype(np.float32)
    return x, y


def _parquet(path: Path, x=None, y=None, *, emb=None, lab=None, extra: dict | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if emb is None:
        x = np.asarray(x)
        values = pa.array(x.reshape(-1))
        emb = pa.FixedSizeListArray.from_arrays(values, x.shape[1])
    if lab is None:
        lab = pa.array(y)
    pq.write_table(pa.table({"embedding": emb, "label": lab, **(extra or {})}), path)
    return path


def _valid_parquet(d: Path, name="emb.parquet") -> Path:
    x, y = _rows()
    return _parquet(d / name, x, y)


def _npy(d: Path, x, y=None, name="emb.npy", labels_name="labels.npy") -> list:
    np.save(d / name, x, allow_pickle=True)
    if y is None:
        return [d / name]
    np.save(d / labels_name, y, allow_pickle=True)
    return [d / name, "--labels", d / labels_name]


def _run_quick(d: Path, *extra) -> Path:
    """A finished run under DIR/.opis named ``ok`` (for cases about runs and reports)."""
    src = _valid_parquet(d, "ok.parquet")
    subprocess.run([*opis_command(), "evaluate", str(src), "--calib", "0.2:1.2", "--out-dir", str(d / ".opis"),
                    "--name", "ok", "-q", *map(str, extra)], check=True, capture_output=True, env=cli_env())
    return d / ".opis" / "runs" / "ok"


def cli_env() -> dict:
    return {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


# ----------------------------------------------------------------------------- the catalogue

@dataclass
class Case:
    id: str
    situation: str
    build: Callable[[Path], list]  # scratch dir -> command line after `opis`
    code: int
    how: str = "plain"  # "plain", "unprivileged" (without root's file access), "sigint", "sigterm"
    after: Callable[[Path, subprocess.CompletedProcess], None] | None = None
    section: str = "input"


CASES: list[Case] = []


def case(id, situation, code=2, how="plain", after=None, section="input"):
    def register(build):
        CASES.append(Case(id, situation, build, code, how, after, section))
        return build
    return register


# --- files

@case("missing-file", "The input file does not exist")
def _(d):
    return ["evaluate", d / "nope.parquet"]


@case("empty-file", "The input file is empty (0 bytes)")
def _(d):
    (d / "emb.parquet").write_bytes(b"")
    return ["evaluate", d / "emb.parquet"]


@case("directory", "A directory where a file was expected")
def _(d):
    (d / "emb.parquet").mkdir()
    return ["evaluate", d / "emb.parquet"]


@case("no-permission", "The input file is not readable by this user", how="unprivileged")
def _(d):
    p = _valid_parquet(d)
    p.chmod(0o000)
    return ["evaluate", p, "--no-save"]


@case("unknown-format", "Not a Parquet, Arrow, NPY or NPZ file (a CSV, say)")
def _(d):
    (d / "emb.csv").write_text("label,x0,x1\n0,0.1,0.2\n")
    return ["evaluate", d / "emb.csv"]


@case("truncated-parquet", "A Parquet file cut short (an interrupted copy)")
def _(d):
    p = _valid_parquet(d)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return ["evaluate", p]


@case("corrupt-parquet-footer", "A Parquet file whose footer (schema) is damaged")
def _(d):
    p = _valid_parquet(d)
    data = bytearray(p.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    for i in range(len(data) - 8 - footer, len(data) - 8, 7):
        data[i] ^= 0x5A
    p.write_bytes(bytes(data))
    return ["evaluate", p]


@case("corrupt-parquet-data", "A Parquet file whose data pages are damaged")
def _(d):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = _rows()
    p = d / "emb.parquet"
    # Uncompressed, so that damaged bytes reach the decoder; page checksums on, as careful writers set.
    pq.write_table(pa.table({"embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]),
                             "label": pa.array(y)}), p, compression="none", write_page_checksum=True)
    data = bytearray(p.read_bytes())
    for i in range(100, 400):
        data[i] ^= 0xFF
    p.write_bytes(bytes(data))
    return ["evaluate", p]


@case("corrupt-npy-header", "An .npy file whose header is damaged")
def _(d):
    x, y = _rows()
    args = _npy(d, x, y)
    data = bytearray((d / "emb.npy").read_bytes())
    data[10:30] = b"{'descr': '<f4', 'fo"[::-1]
    (d / "emb.npy").write_bytes(bytes(data))
    return ["evaluate", *args]


@case("truncated-npy", "An .npy file cut short")
def _(d):
    x, y = _rows()
    args = _npy(d, x, y)
    data = (d / "emb.npy").read_bytes()
    (d / "emb.npy").write_bytes(data[: len(data) - 100])
    return ["evaluate", *args]


@case("npz-missing-array", "An .npz without the 'labels' array")
def _(d):
    x, _ = _rows()
    np.savez(d / "emb.npz", embeddings=x)
    return ["evaluate", d / "emb.npz"]


@case("npy-without-labels", "An .npy embeddings file given without --labels")
def _(d):
    x, _ = _rows()
    return ["evaluate", *_npy(d, x)]


@case("labels-file-missing", "--labels names a file that does not exist")
def _(d):
    x, _ = _rows()
    return ["evaluate", *_npy(d, x), "--labels", d / "missing.npy"]


# --- shapes and types

@case("npy-int", "Embeddings stored as integers", section="types")
def _(d):
    x, y = _rows()
    return ["evaluate", *_npy(d, (x * 100).astype(np.int64), y)]


@case("npy-object", "Embeddings stored as a Python object array (pickled)", section="types")
def _(d):
    x, y = _rows()
    obj = np.empty(len(x), dtype=object)
    obj[:] = [row for row in x]
    return ["evaluate", *_npy(d, obj, y)]


@case("npy-complex", "Complex-valued embeddings", section="types")
def _(d):
    x, y = _rows()
    return ["evaluate", *_npy(d, x.astype(np.complex64), y)]


@case("npy-float16", "float16 embeddings (accepted: computed in float32, with a note)", code=0, section="types")
def _(d):
    x, y = _rows()
    return ["evaluate", *_npy(d, x.astype(np.float16), y), "--calib", "0.2:1.2", "--no-save", "-q"]


@case("npy-float64-out-of-range", "float64 embeddings with values beyond float32's range", section="types")
def _(d):
    x, y = _rows()
    x = x.astype(np.float64)
    x[7, 3] = 1e300
    return ["evaluate", *_npy(d, x, y)]


@case("npy-1d", "A 1-D embeddings array", section="types")
def _(d):
    x, y = _rows()
    return ["evaluate", *_npy(d, x[:, 0].copy(), y)]


@case("npy-3d", "A 3-D embeddings array", section="types")
def _(d):
    x, y = _rows()
    return ["evaluate", *_npy(d, x.reshape(len(x), 2, -1), y)]


@case("length-mismatch", "Fewer labels than embeddings", section="types")
def _(d):
    x, y = _rows()
    return ["evaluate", *_npy(d, x, y[:-3])]


@case("unequal-lists", "Embedding lists of unequal length in a Parquet column", section="types")
def _(d):
    import pyarrow as pa

    x, y = _rows()
    lists = [list(map(float, r)) for r in x]
    lists[4] = lists[4][:-1]
    return ["evaluate", _parquet(d / "emb.parquet", emb=pa.array(lists, pa.list_(pa.float32())), lab=pa.array(y))]


@case("null-embedding", "A null embedding row", section="types")
def _(d):
    import pyarrow as pa

    x, y = _rows()
    lists = [list(map(float, r)) for r in x]
    lists[9] = None
    return ["evaluate", _parquet(d / "emb.parquet", emb=pa.array(lists, pa.list_(pa.float32())), lab=pa.array(y))]


@case("null-in-list", "A null value inside an embedding list", section="types")
def _(d):
    import pyarrow as pa

    x, y = _rows()
    lists = [list(map(float, r)) for r in x]
    lists[2][5] = None
    return ["evaluate", _parquet(d / "emb.parquet", emb=pa.array(lists, pa.list_(pa.float32())), lab=pa.array(y))]


@case("null-label", "A null label", section="types")
def _(d):
    import pyarrow as pa

    x, y = _rows()
    labels = y.tolist()
    labels[11] = None
    return ["evaluate", _parquet(d / "emb.parquet", x, lab=pa.array(labels, pa.int64()))]


@case("float-labels", "Labels stored as floating point (a pandas column of ints with a NaN)", section="types")
def _(d):
    import pyarrow as pa

    x, y = _rows()
    return ["evaluate", _parquet(d / "emb.parquet", x, lab=pa.array(y.astype(float) + 0.5))]


@case("mixed-labels", "Labels of mixed types (integers and strings in one .npy object array)", section="types")
def _(d):
    x, y = _rows()
    mixed = np.array([int(v) if i % 2 else f"c{v}" for i, v in enumerate(y)], dtype=object)
    return ["evaluate", *_npy(d, x, mixed)]


@case("non-utf8-labels", "String labels that are not valid UTF-8 (a binary Parquet column)", section="types")
def _(d):
    import pyarrow as pa

    x, y = _rows()
    raw = [b"cls-" + bytes([0xFF, 0xFE]) + str(v).encode() for v in y]
    return ["evaluate", _parquet(d / "emb.parquet", x, lab=pa.array(raw, pa.binary()))]


@case("binary-utf8-labels", "String labels stored as a binary column of valid UTF-8 (accepted)", code=0,
      section="types")
def _(d):
    import pyarrow as pa

    x, y = _rows()
    raw = [f"cls-{v}".encode() for v in y]
    return ["evaluate", _parquet(d / "emb.parquet", x, lab=pa.array(raw, pa.binary())), "--calib", "0.2:1.2",
            "--no-save", "-q"]


@case("unknown-column", "--embedding-col names a column the file does not have", section="types")
def _(d):
    return ["evaluate", _valid_parquet(d), "--embedding-col", "vectors"]


@case("group-col-missing", "--group-col names a column the file does not have", section="types")
def _(d):
    return ["evaluate", _valid_parquet(d), "--group-col", "customer"]


@case("group-col-npy", "--group-col with .npy input (which holds no columns)", section="types")
def _(d):
    x, y = _rows()
    return ["evaluate", *_npy(d, x, y), "--group-col", "customer"]


@case("several-list-columns", "Two list columns and no --embedding-col", section="types")
def _(d):
    import pyarrow as pa

    x, y = _rows()
    other = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
    return ["evaluate", _parquet(d / "emb.parquet", x, y, extra={"projection": other})]


# --- values

@case("nan", "NaN in the embeddings (a diverged model)", section="values")
def _(d):
    x, y = _rows()
    x[13, 1] = np.nan
    return ["evaluate", _parquet(d / "emb.parquet", x, y)]


@case("inf", "Inf in the embeddings", section="values")
def _(d):
    x, y = _rows()
    x[21, 0] = np.inf
    return ["evaluate", _parquet(d / "emb.parquet", x, y)]


@case("zero-vector", "An all-zero embedding with the cosine metric", section="values")
def _(d):
    x, y = _rows()
    x[5] = 0
    return ["evaluate", _parquet(d / "emb.parquet", x, y)]


@case("single-class", "Every item in one class", section="values")
def _(d):
    x, y = _rows()
    return ["evaluate", _parquet(d / "emb.parquet", x, np.zeros_like(y))]


@case("all-singletons", "Every class a singleton", section="values")
def _(d):
    x, y = _rows()
    return ["evaluate", _parquet(d / "emb.parquet", x, np.arange(len(y)))]


@case("duplicate-rows", "Duplicated rows (allowed: counted in the report, with a note)", code=0, section="values")
def _(d):
    x, y = _rows()
    x[1] = x[0]
    x[2] = x[0]
    x[12] = x[11]
    return ["evaluate", _parquet(d / "emb.parquet", x, y), "--calib", "0.2:1.2", "--no-save", "-q"]


# --- options

@case("calib-no-pairs", "A calibration range with no pair distance inside it", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--calib", "0:0.0001", "--no-save"]


@case("margins-default-target-out-of-range",
      "opis margins at a range whose lower end accepts no positive pair (the default FRR target would be 1)",
      section="options")
def _(d):
    import shutil

    shutil.copy(SAMPLE / "model_a.parquet", d / "emb.parquet")
    return ["margins", d / "emb.parquet", "--calib", "0.2:0.8", "--no-save"]


@case("calib-far-outside", "--calib-far bounds outside (0, 1)", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--calib-far", "0.01:1.5"]


@case("calib-reversed", "--calib with LO >= HI", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--calib", "0.9:0.1"]


@case("eer-approximate", "--eer with an approximate index (the EER needs every pair)", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--eer", "--index", "ivf", "--no-save"]


@case("retrieval-approximate", "--retrieval with an approximate index (MAP@R ranks every reference)",
      section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--retrieval", "--index", "hnsw", "--no-save"]


@case("reference-dimensions", "--reference embedded by another model (other dimension)", section="options")
def _(d):
    x, y = _rows(d=6)
    return ["evaluate", _valid_parquet(d), "--reference", _parquet(d / "ref.parquet", x, y), "--no-save"]


@case("reference-label-types", "--reference with string labels against integer query labels", section="options")
def _(d):
    x, y = _rows()
    return ["evaluate", _valid_parquet(d), "--reference", _parquet(d / "ref.parquet", x, y.astype(str)), "--no-save"]


@case("reference-no-shared-class", "--reference whose classes the queries never have", section="options")
def _(d):
    x, y = _rows()
    return ["evaluate", _valid_parquet(d), "--reference", _parquet(d / "ref.parquet", x, y + 100), "--no-save"]


@case("reference-approximate", "--reference with an approximate index", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--reference", _valid_parquet(d, "ref.parquet"), "--index", "hnsw",
            "--no-save"]


@case("reference-group-col", "--reference with --group-col (groups are counted over one set)", section="options")
def _(d):
    x, y = _rows()
    import pyarrow as pa

    path = _parquet(d / "emb.parquet", x, y, extra={"region": pa.array(np.arange(len(y)) % 3)})
    return ["evaluate", path, "--reference", _valid_parquet(d, "ref.parquet"), "--group-col", "region", "--no-save"]


@case("thresholds-below-2", "--thresholds below 2", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--thresholds", "1"]


@case("thresholds-too-many", "--thresholds so large the grid alone would fill memory", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--thresholds", "100000000", "--no-save"]


@case("thresholds-over-budget", "A threshold grid whose per-class counts exceed --memory-budget", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--thresholds", "100000", "--memory-budget", "16M", "--threads", "2",
            "--calib", "0.2:1.2", "--no-save"]


@case("memory-budget-not-finite", "--memory-budget inf (or nanM)", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--memory-budget", "inf"]


@case("seed-negative", "--seed below 0", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--seed", "-1", "--index", "ivf"]


@case("approximate-over-budget", "The approximate engine would need more working memory than --memory-budget",
      section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--index", "ivf", "--memory-budget", "64M", "--no-save"]


@case("one-dimensional", "One-dimensional embeddings: every cosine distance is 0 or 2", section="values")
def _(d):
    x, y = _rows(d=1)
    return ["evaluate", _parquet(d / "d1.parquet", x, y), "--no-save"]


@case("dev-other-dimension", "opis thresholds --dev from a model of another dimension", section="options")
def _(d):
    x, y = _rows(d=5, seed=1)
    return ["thresholds", _valid_parquet(d), "--dev", _parquet(d / "dev.parquet", x, y), "--target-far", "0.05"]


@case("dev-npy-without-labels", "opis thresholds --dev given a .npy without --dev-labels", section="options")
def _(d):
    x, _ = _rows(seed=1)
    np.save(d / "dev.npy", x)
    return ["thresholds", _valid_parquet(d), "--dev", d / "dev.npy", "--target-far", "0.05"]


@case("epsilon-outside", "--epsilon outside (0, 1)", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--epsilon", "1.2"]


@case("epsilon-takes-all", "--epsilon so large that the worst set holds every class", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--epsilon", "0.95", "--calib", "0.2:1.2"]


@case("k-above-largest-class", "--k larger than the largest class (allowed, with a note)", code=0, section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--k", "1", "--k", "12", "--calib", "0.2:1.2", "--no-save", "-q"]


@case("k-above-database", "--k larger than the database (N - 1)", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--k", "60"]


@case("memory-budget", "--memory-budget too small or unparsable", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--memory-budget", "1M"]


@case("cluster-options-without-dask", "--workers or --scheduler without --engine dask", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--workers", "2"]


@case("bad-enum", "An unknown choice (--metric manhattan)", section="options")
def _(d):
    return ["evaluate", _valid_parquet(d), "--metric", "manhattan"]


@case("thresholds-no-choice", "`opis thresholds` with neither --target-far nor --threshold", section="options")
def _(d):
    return ["thresholds", _valid_parquet(d)]


# --- outputs

@case("out-dir-not-writable", "The output directory cannot be created (a file is in the way)", section="outputs")
def _(d):
    (d / "blocker").write_text("")
    return ["evaluate", _valid_parquet(d), "--calib", "0.2:1.2", "--out-dir", d / "blocker" / "sub"]


@case("out-dir-no-permission", "The output directory is not writable by this user", how="unprivileged",
      section="outputs")
def _(d):
    src = _valid_parquet(d)
    (d / "locked").mkdir()
    (d / "locked").chmod(0o555)
    return ["evaluate", src, "--calib", "0.2:1.2", "--out-dir", d / "locked"]


@case("json-dir-missing", "--json into a directory that does not exist", section="outputs")
def _(d):
    return ["evaluate", _valid_parquet(d), "--calib", "0.2:1.2", "--no-save", "--json", d / "no" / "r.json"]


@case("disk-full", "The disk fills while the report is written (simulated with /dev/full)", section="outputs")
def _(d):
    return ["evaluate", _valid_parquet(d), "--calib", "0.2:1.2", "--no-save", "--json", "/dev/full"]


def _latest_intact(d: Path, proc) -> None:
    assert (d / ".opis" / "latest").resolve() == (d / ".opis" / "runs" / "ok").resolve()
    assert sorted(p.name for p in (d / ".opis" / "runs").iterdir()) == ["ok"], "a partial run was left behind"


def _long_run(d: Path) -> list:
    """A finished run ``ok``, then the command line of a run long enough to interrupt (~30 s)."""
    _run_quick(d)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 200, 40000)
    x = rng.normal(size=(40000, 32)).astype(np.float32)
    return ["evaluate", *_npy(d, x, y, name="big.npy", labels_name="big_labels.npy"), "--calib", "0.2:1.2",
            "--kernel", "numpy", "--out-dir", d / ".opis"]


@case("interrupted", "Ctrl-C during a run: no run saved, the previous `latest` kept", code=130,
      how="sigint", after=_latest_intact, section="outputs")
def _(d):
    return _long_run(d)


@case("terminated", "SIGTERM during a run (a cancelled CI job): no run saved, `latest` kept", code=143,
      how="sigterm", after=_latest_intact, section="outputs")
def _(d):
    return _long_run(d)


# --- runs and reports

@case("no-previous-run", "`opis plot` / `opis gate` with no previous run", section="reports")
def _(d):
    return ["gate", "--max-opis", "0.1", "--out-dir", d / ".opis"]


@case("run-dir-without-report", "A run directory without report.json", section="reports")
def _(d):
    (d / "run").mkdir()
    return ["gate", d / "run", "--max-opis", "0.1"]


@case("not-a-report", "A JSON file that is not an opis report", section="reports")
def _(d):
    (d / "r.json").write_text('{"hello": 1}\n')
    return ["gate", d / "r.json", "--max-opis", "0.1"]


@case("truncated-report", "A report.json cut short", section="reports")
def _(d):
    run = _run_quick(d)
    data = json.loads((run / "report.json").read_text())
    data["input"]["path"] = "emb.parquet"  # the scratch path's length would move the cut
    text = json.dumps(data, indent=2)
    (d / "r.json").write_text(text[: len(text) // 2])
    return ["gate", d / "r.json", "--max-opis", "0.1"]


@case("newer-schema", "A report written by a newer opis-cli (higher schema_version)", section="reports")
def _(d):
    run = _run_quick(d)
    data = json.loads((run / "report.json").read_text())
    data["schema_version"] = 99
    (d / "r.json").write_text(json.dumps(data))
    return ["gate", d / "r.json", "--max-opis", "0.1"]


@case("other-dataset", "A gate between reports on different evaluation sets", section="reports")
def _(d):
    run = _run_quick(d)
    x, y = _rows(seed=1)
    y = y.copy()
    y[:3] = 5  # the same classes, other members
    other = _parquet(d / "other.parquet", x, y)
    subprocess.run([*opis_command(), "evaluate", str(other), "--calib", "0.2:1.2", "--out-dir", str(d / ".opis"),
                    "--name", "other", "-q"], check=True, capture_output=True, env=cli_env())
    return ["gate", d / ".opis" / "runs" / "other", "--baseline", run, "--max-opis-increase", "10%"]


@case("gate-failed", "A gate check fails (the regression a CI job exists to catch)", code=1, section="reports")
def _(d):
    _run_quick(d)
    return ["gate", "--max-opis", "0", "--format", "markdown", "--out-dir", d / ".opis"]


# ----------------------------------------------------------------------------- running a case

@dataclass
class Outcome:
    command: str  # as typed, scratch directory shown as DIR
    code: int
    stdout: str
    stderr: str


def shown_output(o: Outcome) -> list[str]:
    """What the catalogue records of a run: stderr (errors and notes), or stdout when stderr is empty."""
    text = o.stderr if o.stderr.strip() else o.stdout
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def unprivileged_prefix() -> list[str] | None:
    """How to run a command without root's power to read and write every file: as root, drop the
    DAC-override capabilities with util-linux's setpriv (a plain user needs nothing). None when
    that is not possible here."""
    if os.geteuid() != 0:
        return []
    import shutil

    setpriv = shutil.which("setpriv")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"] if setpriv else None


def run_case(c: Case, d: Path) -> Outcome:
    args = [str(a) for a in c.build(d)]
    env = cli_env()
    if c.how in ("sigint", "sigterm"):
        # A job started in the background inherits SIGINT ignored, and Python then keeps it ignored:
        # give the child the default disposition, as an interactive shell would.
        proc = subprocess.Popen([*opis_command(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        # Well into the pair pass: start-up and loading take about a second.
        time.sleep(float(os.environ.get("OPIS_TEST_SIGNAL_AFTER", "4")))
        proc.send_signal(signal.SIGINT if c.how == "sigint" else signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        result = subprocess.CompletedProcess(args, proc.returncode, out, err)
    else:
        prefix = unprivileged_prefix() if c.how == "unprivileged" else []
        result = subprocess.run([*prefix, *opis_command(), *args], capture_output=True, text=True, env=env,
                                timeout=300)
    if c.after is not None:
        c.after(d, result)

    def shown(text: str) -> str:
        return text.replace(str(d.resolve()), "DIR").replace(str(d), "DIR")

    command = "opis " + " ".join(shlex.quote(shown(a)) for a in args)
    return Outcome(command, result.returncode, shown(result.stdout), shown(result.stderr))


# Cases by area, in their own modules (each registers with `case` above; imported last so that
# the registry and the helpers exist).
import error_cases_io  # noqa: E402,F401
import error_cases_saving  # noqa: E402,F401
import error_cases_dask  # noqa: E402,F401
