"""Error cases of the io area (issue 15), registered into tests/error_cases.py's catalogue."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from error_cases import _npy, _parquet, _rows, _valid_parquet, case

# The memory cases fix the available-memory figure through opis_cli.memory's test-only override, so
# that they refuse on any machine, with the same message. run_case copies os.environ for the child
# after `build` and calls `after` once it has finished, so the override reaches that one run only.
MEMORY_ENV = "OPIS_AVAILABLE_MEMORY"


def _forget_memory(d: Path, proc) -> None:
    os.environ.pop(MEMORY_ENV, None)


def _with_memory(nbytes: int) -> None:
    os.environ[MEMORY_ENV] = str(nbytes)


def _fifo(d: Path, name: str) -> Path:
    os.mkfifo(d / name)
    return d / name


# --- what a path is

@case("fifo-input", "A named pipe (FIFO) as the input file: refused without opening it (opening would wait forever)")
def _(d):
    return ["evaluate", _fifo(d, "emb.parquet")]


@case("fifo-labels", "A named pipe (FIFO) as --labels")
def _(d):
    x, _ = _rows()
    return ["evaluate", *_npy(d, x), "--labels", _fifo(d, "labels.npy")]


@case("fifo-dev", "A named pipe (FIFO) as --dev of `opis thresholds`")
def _(d):
    return ["thresholds", _valid_parquet(d), "--dev", _fifo(d, "dev.parquet"), "--target-far", "0.01"]


@case("labels-directory", "--labels names a directory")
def _(d):
    x, _ = _rows()
    (d / "labels").mkdir()
    return ["evaluate", *_npy(d, x), "--labels", d / "labels"]


# --- what --labels can be

@case("labels-csv", "--labels given a CSV file")
def _(d):
    x, y = _rows()
    (d / "labels.csv").write_text("label\n" + "\n".join(map(str, y)) + "\n")
    return ["evaluate", *_npy(d, x), "--labels", d / "labels.csv"]


@case("labels-parquet", "--labels given a Parquet table")
def _(d):
    x, y = _rows()
    return ["evaluate", *_npy(d, x), "--labels", _parquet(d / "labels.parquet", x, y)]


@case("labels-npz", "--labels given an .npz holding one array (accepted: its only array, or the one named "
      "'labels')", code=0)
def _(d):
    x, y = _rows()
    np.savez(d / "labels.npz", y)
    return ["evaluate", *_npy(d, x), "--labels", d / "labels.npz", "--calib", "0.2:1.2", "--no-save", "-q"]


@case("labels-npz-several", "--labels given an .npz of several arrays, none named 'labels'")
def _(d):
    x, y = _rows()
    np.savez(d / "labels.npz", ids=np.arange(len(y)), target=y)
    return ["evaluate", *_npy(d, x), "--labels", d / "labels.npz"]


# --- memory

@case("npy-too-large", "A 10 GiB .npy on a machine with 1 GiB available (checked from the header, before loading)",
      after=_forget_memory)
def _(d):
    shape = (2_621_440, 1024)
    with open(d / "emb.npy", "wb") as fh:  # a sparse file: the header, then a hole of 10 GiB
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
        fh.truncate(fh.tell() + shape[0] * shape[1] * 4)
    np.save(d / "labels.npy", np.arange(shape[0]) % 1000)
    _with_memory(1 << 30)
    return ["evaluate", d / "emb.npy", "--labels", d / "labels.npy"]


@case("npz-bomb", "An .npz of 200 KB that decompresses to 200 MB, with 100 MiB available (checked before "
      "decompressing)", after=_forget_memory)
def _(d):
    np.savez_compressed(d / "emb.npz", embeddings=np.zeros((50_000, 1024), np.float32),
                        labels=np.arange(50_000) % 100)
    _with_memory(100 << 20)
    return ["evaluate", d / "emb.npz"]


# --- label values: one rule for every format (opis_cli.data.input_checks.label_values)

@case("bool-labels", "Labels stored as true/false (a flag column, not class identities)", section="types")
def _(d):
    x, y = _rows()
    return ["evaluate", _parquet(d / "emb.parquet", x, y % 2 == 0)]


@case("nan-labels", "Floating-point labels with a NaN (a pandas integer column with a missing value)",
      section="types")
def _(d):
    x, y = _rows()
    y = y.astype(float)
    y[17] = np.nan
    return ["evaluate", *_npy(d, x, y)]


@case("whole-float-labels", "Floating-point labels that are all whole numbers (accepted as integers, from any "
      "format)", code=0, section="types")
def _(d):
    x, y = _rows()
    return ["evaluate", _parquet(d / "emb.parquet", x, y.astype(np.float64)), "--calib", "0.2:1.2", "--no-save",
            "-q"]


# --- values

@case("npy-float64-subnormal", "float64 embeddings too small for float32 (~1e-310, which would become zeros)",
      section="values")
def _(d):
    x, y = _rows()
    return ["evaluate", *_npy(d, x.astype(np.float64) * 1e-310, y)]
