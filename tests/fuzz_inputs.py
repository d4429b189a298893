"""Fuzz the CLI with random and damaged inputs: it must succeed, or exit 2 with one line.

Run by tests/test_fuzz.py in a child process under a memory limit (RLIMIT_AS) and a time limit,
so "bounded memory" and "no hang" are checked too; standalone for a longer session:

    python tests/fuzz_inputs.py --examples 2000 --memory-gib 4

Inputs (hypothesis strategies): random bytes behind each accepted magic number, and valid
Parquet / NPY / NPZ / report JSON files with bytes flipped, cut, repeated or inserted. Every
example runs the real command function in-process (``opis_cli.cli.main``) with its stderr and
stdout captured; any exception other than the exit is a failure (a traceback for a user).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PER_EXAMPLE_SECONDS = 60


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"an example ran longer than {PER_EXAMPLE_SECONDS} s")


def valid_files(d: Path) -> dict[str, bytes]:
    """Small valid inputs of every format, as bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 8)
    x = (rng.normal(size=(5, 6))[y] + 0.4 * rng.normal(size=(40, 6))).astype(np.float32)
    out = {}
    emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 6)
    pq.write_table(pa.table({"embedding": emb, "label": pa.array(y)}), d / "v.parquet", compression="none")
    out["parquet"] = (d / "v.parquet").read_bytes()
    lists = pa.array([list(map(float, r)) for r in x], pa.list_(pa.float64()))
    pq.write_table(pa.table({"emb": lists, "class": pa.array([f"c{v}" for v in y])}), d / "w.parquet")
    out["parquet_lists"] = (d / "w.parquet").read_bytes()
    buf = io.BytesIO()
    np.save(buf, x)
    out["npy"] = buf.getvalue()
    buf = io.BytesIO()
    np.savez(buf, embeddings=x, labels=y)
    out["npz"] = buf.getvalue()
    from opis_cli.pipeline import evaluate

    report = evaluate(x, y, calib=(0.2, 1.2), thresholds=11)
    out["report"] = report.to_json().encode()
    np.save(d / "labels.npy", y)
    return out


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, pos, value in ops:
        if not b:
            break
        i = pos % len(b)
        if kind == "flip":
            b[i] ^= (value % 255) + 1
        elif kind == "cut":
            del b[i:]
        elif kind == "insert":
            b[i:i] = bytes([value % 256]) * (1 + value % 7)
        elif kind == "repeat":
            b[i:i] = b[i:i + 1 + value % 64]
        elif kind == "zero":
            b[i:i + 1 + value % 16] = b"\x00" * len(b[i:i + 1 + value % 16])
    return bytes(b)


def run_cli(args: list[str]) -> tuple[int, str, str]:
    from opis_cli.cli import main

    err, out = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["opis", *args]
    code = 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


def check(kind: str, data: bytes, d: Path) -> None:
    suffix = {"report": ".json", "npy": ".npy", "npz": ".npz"}.get(kind, ".parquet")
    path = d / f"in{suffix}"
    path.write_bytes(data)
    if kind == "report":
        args = ["gate", str(path), "--max-opis", "1e9"]
        if data[-1:] == b"\n":  # half of the reports also go to the plot command (pareto needs only the report)
            args = ["plot", str(path), "--kind", "pareto", "--out", str(d / "out.png")]
    else:
        args = ["evaluate", str(path), "--calib", "0.2:1.2", "--thresholds", "11", "--no-save", "-q"]
        if kind == "npy":
            args += ["--labels", str(d / "labels.npy")]
    signal.alarm(PER_EXAMPLE_SECONDS)
    try:
        code, out, err = run_cli(args)
    finally:
        signal.alarm(0)
    if code == 0:
        return
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code} for {args}: {err[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"not one error line for {args}:\n{err[-2000:]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--memory-gib", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    limit = int(args.memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)
    os.environ.setdefault("COLUMNS", "200")

    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis import strategies as st

    tmp = Path(tempfile.mkdtemp(prefix="opis-fuzz-"))
    files = valid_files(tmp)
    magic = [b"PAR1", b"ARROW1\x00\x00", b"\x93NUMPY\x01\x00", b"PK\x03\x04", b"{", b""]
    ops = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "repeat", "zero"]),
                             st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6)
    mutated = st.tuples(st.sampled_from(sorted(files)), ops).map(
        lambda t: (t[0] if t[0] != "parquet_lists" else "parquet", mutate(files[t[0]], t[1])))
    random_bytes = st.tuples(st.sampled_from(magic), st.binary(max_size=4096)).map(
        lambda t: ("parquet" if t[0] != b"{" else "report", t[0] + t[1]))
    npy_random = st.binary(max_size=512).map(lambda b: ("npy", b"\x93NUMPY\x01\x00" + b))

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(mutated, mutated, random_bytes, npy_random))
    def fuzz(example):
        kind, data = example
        check(kind, data, tmp)

    fuzz()
    print(f"fuzz: {args.examples} examples, every one succeeded or exited 2 with one line")
    return 0


if __name__ == "__main__":
    sys.exit(main())
