"""Fuzz the CLI with random and damaged inputs: it must succeed, or exit 2 with one line.

Run by tests/test_fuzz.py in a child process under a memory limit (RLIMIT_AS) and a time limit,
so "bounded memory" and "no hang" are checked too; standalone for a longer session:

    python tests/fuzz_inputs.py --examples 2000 --memory-gib 4

Inputs (hypothesis strategies): random bytes behind each accepted magic number, and valid
Parquet / NPY / NPZ / report JSON files with bytes flipped, cut, repeated or inserted; and valid
reports hand-edited (a value at any key path replaced by another type, an out-of-domain number,
a huge integer, deep nesting, markup, or removed) for gate, compare and plot. Every
example runs the real command function in-process (``opis_cli.cli.app.main``) with its stderr and
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
    from opis_cli.pipeline.evaluation import evaluate

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
    from opis_cli.cli.app import main

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


def json_paths(obj, prefix=(), depth=0) -> list[tuple]:
    """Every key path of a report (lists: their first two items), to depth 5."""
    out = [prefix] if prefix else []
    if depth >= 5:
        return out
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += json_paths(v, prefix + (k,), depth + 1)
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:2]):
            out += json_paths(v, prefix + (i,), depth + 1)
    return out


def edit_report(report: dict, path: tuple, value, delete: bool) -> dict:
    """A copy of ``report`` with the value at ``path`` replaced by ``value`` (or removed)."""
    import copy

    out = copy.deepcopy(report)
    node = out
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def check_report_edit(report: dict, path: tuple, value, delete: bool, command: str, d: Path) -> None:
    """gate, compare or plot on a hand-edited report (a type, a domain, a key removed): it passes,
    or exits 2 with one line; never a traceback or exit 1/3."""
    import json

    base = d / "base.json"
    if not base.exists():
        base.write_text(json.dumps(report))
    edited = d / "edited.json"
    # Values Python's json cannot write (a 5,000-digit integer, 3,000 levels of nesting) go in as
    # text, as a hand-edited file would have them.
    text = json.dumps(edit_report(report, path, value, delete))
    text = text.replace('"__BIGINT__"', "1" + "0" * 5000).replace('"__DEEP__"', "[" * 3000 + "0" + "]" * 3000)
    edited.write_text(text)
    args = {"gate": ["gate", str(edited), "--baseline", str(base), "--max-opis-increase", "1", "--max-opis", "1",
                     "--on-mismatch", "warn"],
            "compare": ["compare", str(base), str(edited), "--format", "json"],
            "plot": ["plot", str(edited), "--kind", "pareto", "--out", str(d / "out.png")]}[command]
    signal.alarm(PER_EXAMPLE_SECONDS)
    try:
        code, out, err = run_cli(args)
    finally:
        signal.alarm(0)
    if code in (0, 1) and command == "gate":  # a gate may pass or fail on edited figures that are valid
        return
    if code == 0:
        return
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code} for {args} at {path}={value!r}: {err[-2000:]}"
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

    import json

    report = json.loads(files["report"])
    paths = json_paths(report)
    values = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(),
                       st.text(max_size=12), st.just([]), st.just({}), st.just("[bold red]x[/]"),
                       st.just("__BIGINT__"), st.just("__DEEP__"), st.just(-1), st.just(1e300))
    edits = st.tuples(st.sampled_from(paths), values, st.booleans(), st.sampled_from(["gate", "compare", "plot"]))

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(mutated, mutated, random_bytes, npy_random))
    def fuzz(example):
        kind, data = example
        check(kind, data, tmp)

    @seed(args.seed)
    @settings(max_examples=args.examples // 4, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(edits)
    def fuzz_reports(edit):
        path, value, delete, command = edit
        check_report_edit(report, path, value, delete, command, tmp)

    fuzz()
    fuzz_reports()
    print(f"fuzz: {args.examples} examples, every one succeeded or exited 2 with one line")
    return 0


if __name__ == "__main__":
    sys.exit(main())
