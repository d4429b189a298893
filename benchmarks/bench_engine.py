"""Throughput of the exact pair engine against this machine's own floor, in the same run.

The floor is a plain blocked upper-triangle float32 matrix-product pass into a preallocated
buffer (the same panels the engine uses, nothing else). The engine pass is a full exact pass:
matrix products, distances, exact per-class histograms and Recall@1 candidates. Both are timed
interleaved, several times; medians and the ratio of medians are reported, because a shared
machine is noisy. Peak RSS is the process's high-water mark after the engine runs.

    python benchmarks/bench_engine.py --n 40000 --d 512 --classes 1000
    python benchmarks/bench_engine.py --n 100000 --d 128 --classes 1000 --repeats 1
    python benchmarks/bench_engine.py --naive 8000     # also time a naive all-pairs baseline
    python benchmarks/bench_engine.py --smoke          # seconds; used by the test suite
    python benchmarks/bench_engine.py --end-to-end     # the CLI as a user runs it (issue 16's targets)

``--end-to-end`` writes the data to a Parquet file (with a ``group`` column of 20 groups) and
times the real ``opis`` command in child processes, interleaved with the floor, each run's wall
time and peak RSS (the child's VmHWM): ``opis evaluate`` at the pinned range, with ``--group-col``, with the
default ``--calib-far``, and ``opis margins`` at the pinned range. It prints the end-to-end pair
rate as a ratio of the floor's, and each variant's time as a ratio of the pinned evaluate's.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opis_cli.engine.panels import iter_panels, panel_shape  # noqa: E402
from opis_cli.engine.sweep import exact_pass  # noqa: E402
from opis_cli.data.prepare import prepare_embeddings  # noqa: E402
from opis_cli.threads import available_cores, thread_limit  # noqa: E402


def make_data(n: int, d: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, classes, n)
    x = rng.normal(size=(classes, d)).astype(np.float32)[codes] * 0.35
    x += rng.normal(size=(n, d)).astype(np.float32)
    return x, codes


def floor_pass(x: np.ndarray, memory_budget: int) -> float:
    """Seconds for the bare blocked upper-triangle matrix products (normalised rows)."""
    n = x.shape[0]
    rows, cols = panel_shape(n, memory_budget)
    buf = np.empty(rows * cols, np.float32)
    t = time.perf_counter()
    for i0, i1, j0, j1 in iter_panels(n, rows, cols):
        np.matmul(x[i0:i1], x[j0:j1].T, out=buf[: (i1 - i0) * (j1 - j0)].reshape(i1 - i0, j1 - j0))
    return time.perf_counter() - t


def engine_pass(p, edges, memory_budget: int, threads: int | None, kernel: str) -> float:
    t = time.perf_counter()
    exact_pass(p, edges, kmax=1, per_class=True, memory_budget=memory_budget, threads=threads, kernel=kernel)
    return time.perf_counter() - t


def naive_baseline(x: np.ndarray, codes: np.ndarray, edges: np.ndarray) -> float:
    """What a user might write: the full distance matrix, then per class sort + search."""
    t = time.perf_counter()
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 1.0 - xn @ xn.T
    iu = np.triu_indices(len(codes), 1)
    d = dist[iu]
    a, b = codes[iu[0]], codes[iu[1]]
    for c in np.unique(codes):
        pos = np.sort(d[(a == c) & (b == c)])
        neg = np.sort(d[(a == c) != (b == c)])
        np.searchsorted(pos, edges, side="right")
        np.searchsorted(neg, edges, side="right")
    return time.perf_counter() - t


def _vm_hwm(pid: int) -> float:
    """Peak resident set (GiB) of a live process, from /proc (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def _timed_cli(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one ``opis`` child process.

    The peak is the child's own VmHWM, read every 20 ms while it runs: ru_maxrss from wait4 would
    count the parent's pages the child inherits before exec (this benchmark holds ~1 GiB)."""
    import subprocess

    opis = Path(sys.executable).parent / "opis"
    t = time.perf_counter()
    proc = subprocess.Popen([str(opis), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _vm_hwm(proc.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"opis {' '.join(args)} failed ({proc.returncode}): {err[-500:]}")
    return wall, peak


def end_to_end(args, x, codes, p, lo: float, hi: float, pairs: int) -> dict:
    """The CLI variants of the module docstring, interleaved with the floor, medians of repeats."""
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = Path(tempfile.mkdtemp(prefix="opis-bench-"))
    data = tmp / "data.parquet"
    groups = np.random.default_rng(2).integers(0, 20, len(codes))
    pq.write_table(pa.table({"embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]),
                             "label": pa.array(codes), "group": pa.array(groups)}), data)
    common = ["--no-save", "-q", "--memory-budget", f"{args.memory_budget >> 20}M"]
    if args.threads:
        common += ["--threads", str(args.threads)]
    pinned = ["--calib", f"{lo:.6f}:{hi:.6f}"]
    variants = {
        "evaluate_pinned": ["evaluate", str(data), *pinned, *common],
        "evaluate_group_col": ["evaluate", str(data), *pinned, "--group-col", "group", *common],
        "evaluate_calib_far": ["evaluate", str(data), *common],
        "margins_pinned": ["margins", str(data), *pinned, *common],
    }
    _timed_cli(variants["evaluate_pinned"])  # warm-up: numba cache, page cache
    walls = {k: [] for k in variants}
    rss = dict.fromkeys(variants, 0.0)
    floors = []
    for _ in range(args.repeats):
        floors.append(floor_pass(p.x, args.memory_budget))
        for name, argv in variants.items():
            wall, peak = _timed_cli(argv)
            walls[name].append(wall)
            rss[name] = max(rss[name], peak)
    floor_s = statistics.median(floors)
    med = {k: statistics.median(v) for k, v in walls.items()}
    base = med["evaluate_pinned"]
    return {
        "floor_seconds": round(floor_s, 3),
        "seconds": {k: round(v, 3) for k, v in med.items()},
        "end_to_end_ratio": round(floor_s / base, 3),  # pair rate of `opis evaluate` / floor's
        "relative_to_evaluate": {k: round(v / base, 3) for k, v in med.items()},
        "peak_rss_gib": {k: round(v, 3) for k, v in rss.items()},
        "pairs": pairs,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--thresholds", type=int, default=101)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--kernel", default="auto")
    ap.add_argument("--memory-budget", type=int, default=1 << 30)
    ap.add_argument("--naive", type=int, default=0, help="also time the naive baseline at this N")
    ap.add_argument("--json", default=None, help="write the results as JSON to this path")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (for the test suite)")
    ap.add_argument("--end-to-end", action="store_true", help="also time the opis CLI end to end (docstring)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.d, args.classes, args.repeats = 3000, 32, 50, 1
        args.naive = args.naive and 1000

    x, codes = make_data(args.n, args.d, args.classes)
    p = prepare_embeddings(x, codes, int(codes.max()) + 1)
    # A realistic range: pooled FAR ~0.001..0.1 of this data, from a sample of pairs.
    rng = np.random.default_rng(1)
    ij = rng.integers(0, args.n, size=(200_000, 2))
    s = np.einsum("ij,ij->i", p.x[ij[:, 0]], p.x[ij[:, 1]])
    neg = 1.0 - s[p.codes[ij[:, 0]] != p.codes[ij[:, 1]]]
    lo, hi = np.quantile(neg, [0.001, 0.1])
    edges = np.linspace(lo, hi, args.thresholds)
    pairs = args.n * (args.n - 1) // 2

    engine_pass(p, edges, args.memory_budget, args.threads, args.kernel)  # warm-up: JIT cache, pages
    floors, engines = [], []
    with thread_limit(args.threads) as n_threads:
        for _ in range(args.repeats):
            floors.append(floor_pass(p.x, args.memory_budget))
            engines.append(engine_pass(p, edges, args.memory_budget, args.threads, args.kernel))
    floor_s, engine_s = statistics.median(floors), statistics.median(engines)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # before the naive run
    result = {
        "n": args.n, "d": args.d, "classes": args.classes, "thresholds": args.thresholds, "pairs": pairs,
        "threads": n_threads, "kernel": args.kernel, "repeats": args.repeats,
        "floor_seconds": round(floor_s, 3), "engine_seconds": round(engine_s, 3),
        "floor_pairs_per_s": round(pairs / floor_s), "engine_pairs_per_s": round(pairs / engine_s),
        "ratio": round(floor_s / engine_s, 3),
        "peak_rss_gib": round(peak_rss, 3),
        "embeddings_gib": round(x.nbytes / 2**30, 3),
        "machine": f"{platform.machine()}, {available_cores()} cores, {platform.processor() or 'cpu'}",
        "numpy": np.__version__,
    }
    if args.end_to_end:
        result["end_to_end"] = e2e = end_to_end(args, x, codes, p, float(lo), float(hi), pairs)
        print(f"  end to end: opis evaluate (pinned) at {e2e['end_to_end_ratio']:.3f} of the floor's pair rate; "
              f"relative to it: " + ", ".join(f"{k} {v:.2f}x" for k, v in e2e["relative_to_evaluate"].items()))
        print("  peak RSS (GiB): " + ", ".join(f"{k} {v:.2f}" for k, v in e2e["peak_rss_gib"].items()))
    if args.naive:
        xn, cn = make_data(args.naive, args.d, max(2, args.classes * args.naive // args.n))
        t = naive_baseline(xn, cn, edges)
        npairs = args.naive * (args.naive - 1) // 2
        result["naive"] = {"n": args.naive, "seconds": round(t, 3), "pairs_per_s": round(npairs / t)}
    print(f"N={args.n:,} D={args.d} classes={args.classes} threads={n_threads}")
    print(f"  floor (blocked matmul)  {result['floor_pairs_per_s'] / 1e6:8.1f} M pairs/s  ({floor_s:.2f} s)")
    print(f"  engine (exact pass)     {result['engine_pairs_per_s'] / 1e6:8.1f} M pairs/s  ({engine_s:.2f} s)")
    print(f"  ratio engine/floor      {result['ratio']:8.3f}")
    print(f"  peak RSS                {result['peak_rss_gib']:8.2f} GiB (embeddings {result['embeddings_gib']:.2f} GiB)")
    if args.naive:
        nv = result["naive"]
        print(f"  naive all-pairs + sort  {nv['pairs_per_s'] / 1e6:8.1f} M pairs/s  at N={nv['n']:,} ({nv['seconds']:.2f} s)")
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
