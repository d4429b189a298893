"""The approximate engine: wall time at large N, and accuracy against the exact engine.

    python benchmarks/bench_approx.py --n 1000000 --d 128              # time only (exact is hours)
    python benchmarks/bench_approx.py --n 100000 --d 128 --compare     # also run exact, compare
    python benchmarks/bench_approx.py --n 200000 --classes 100000 --tiny --negatives sample
    python benchmarks/bench_approx.py --cost-constants                 # rates of the cost model
    python benchmarks/bench_approx.py --smoke                          # seconds; used by the tests

``--tiny`` draws every row's class uniformly (classes of ~N / classes rows, many of 1-3).
Each row also states approximate_cost()'s prediction (seconds, bytes) next to the measured wall
time and peak resident memory beyond what the process held before the run.

For each calibration (default FAR 0.001:0.1, and 1e-5:1e-3) it prints the engine's choices,
stage timings, OPIS and eps-OPIS with their stated intervals and, with --compare, the exact
figures, the relative error and whether the exact value lies inside the stated interval.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opis_cli.engine.approximate import ApproxOptions  # noqa: E402
from opis_cli.config import EvalConfig  # noqa: E402
from opis_cli.data.io import Dataset, InputInfo, encode_labels  # noqa: E402
from opis_cli.pipeline.evaluation import evaluate_dataset  # noqa: E402


def make_data(n: int, d: int, classes: int, seed: int = 0, diffuse: bool | None = None) -> Dataset:
    """Clustered data with uneven class sizes and spreads (some classes far less compact).

    Within-class cosine similarity ranges from ~0.2 to ~0.5 across classes, so positives overlap
    the calibration range as with a hard real model; ``diffuse`` (default: ``--diffuse``) makes
    classes barely separable (a hard case for ANN).
    """
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0, 0.7, classes)
    codes = rng.choice(classes, size=n, p=weights / weights.sum())
    diffuse = DIFFUSE if diffuse is None else diffuse
    lo_spread, hi_spread, centre = (0.6, 1.4, 0.5) if diffuse else (1.0, 2.0, 1.0)
    spread = rng.uniform(lo_spread, hi_spread, classes).astype(np.float32)
    x = rng.normal(size=(classes, d)).astype(np.float32)[codes] * centre
    x += spread[codes, None] * rng.normal(size=(n, d)).astype(np.float32)
    return Dataset(x, encode_labels(codes), InputInfo(None, "array"))


DIFFUSE = False


def make_tiny_data(n: int, d: int, classes: int, seed: int = 0) -> Dataset:
    """Every row's class drawn uniformly: Poisson class sizes (mean n / classes), random centres."""
    rng = np.random.default_rng([seed, 3])
    codes = rng.integers(0, classes, n)
    x = rng.normal(size=(classes, d)).astype(np.float32)[codes]
    x += rng.uniform(0.4, 1.2, classes).astype(np.float32)[codes, None] * rng.normal(size=(n, d)).astype(np.float32)
    return Dataset(x, encode_labels(codes), InputInfo(None, "array"))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def cost_constants(d: int = 128) -> dict:
    """Rates behind approximate_cost (opis_cli/approximate_cost.py), measured here (median of 3)."""
    import faiss

    from opis_cli.engine.approximate import _histograms_from_inrange  # noqa: F401  (warm imports)
    from opis_cli.statistics.approximate_errors import half_sample_weights, replicate_figures
    from opis_cli.engine.approximate_sampling import negatives_by_sampling
    from opis_cli.statistics.curves import class_curves
    from opis_cli.statistics.metrics import opis as opis_fn
    from opis_cli.engine.sweep import exact_pass
    from opis_cli.data.prepare import prepare_embeddings

    rng = np.random.default_rng(0)

    def median_time(fn, runs=3):
        fn()  # compile / warm up
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    out = {}
    a = rng.normal(size=(8192, d)).astype(np.float32)
    b = rng.normal(size=(16384, d)).astype(np.float32)
    out["gemm_flops_per_s"] = 2 * 8192 * 16384 * d / median_time(lambda: a @ b.T)
    ds = make_data(16384, d, 160, seed=1)
    p = prepare_embeddings(ds.embeddings, ds.labels.codes, ds.labels.n_classes)
    edges = np.linspace(0.3, 0.9, 101)
    pairs = 16384 * 16383 / 2
    t = median_time(lambda: exact_pass(p, edges, kmax=1, per_class=True))
    out["pair_kernel_per_s"] = pairs / max(t - pairs * 2 * d / out["gemm_flops_per_s"], 1e-9)
    big = make_data(50_000, d, 500, seed=2)
    pb = prepare_embeddings(big.embeddings, big.labels.codes, big.labels.n_classes)
    m = 5000
    t = median_time(lambda: negatives_by_sampling(pb, edges, m, 20, 0))
    work = 50_000 * m
    out["partner_kernel_per_s"] = work / max(t - work * 2 * d / out["gemm_flops_per_s"], 1e-9)
    sampled = negatives_by_sampling(pb, edges, m, 20, 0)
    full = np.zeros((pb.n_classes, len(edges)))
    full[pb.class_sizes >= 2] = sampled.full_estimate()
    from opis_cli.engine.approximate import _histograms_from_inrange as hist_from
    pos = np.zeros((pb.n_classes, len(edges) + 1), np.int64)
    pos[:, -1] = pb.class_sizes * (pb.class_sizes - 1) // 2
    curves = class_curves(hist_from(pb, edges, pos, full), pb.class_sizes)
    o = opis_fn(curves.utility, curves.grid)
    w = half_sample_weights(20, 40, 0)
    t = median_time(lambda: replicate_figures(sampled, curves, o.mean_curve, w, np.arange(50), epsilon=0.1,
                                              beta=1.0, contrast="rest"))
    out["replicate_cells_per_s"] = 1.2 * curves.n_classes * 40 * len(edges) * (20 + 12) / t
    n, nlist, nprobe = 200_000, 1024, 16
    x = make_data(n, d, 2000, seed=3).embeddings
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    quant = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(x[:64 * nlist])
    ivf.add(x)
    ivf.nprobe = nprobe
    q = x[:20_000]
    t = median_time(lambda: ivf.search(q, 2), runs=2)
    out["ivf_scan_flops_per_s"] = len(q) * nprobe * (n / nlist) * 2 * d / t
    hnsw = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 64
    t = time.perf_counter()
    hnsw.add(x[:50_000])
    out["hnsw_build_per_s"] = 50_000 * 64 * 32 * d / (time.perf_counter() - t)
    hnsw.hnsw.efSearch = 64
    t = median_time(lambda: hnsw.search(q, 2), runs=2)
    out["hnsw_visits_per_s"] = len(q) * 64 * 32 * d / t
    return {k: float(f"{v:.3g}") for k, v in out.items()}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--classes", type=int, default=0, help="default N / 100")
    ap.add_argument("--index", default="ivf", choices=["ivf", "hnsw"])
    ap.add_argument("--compare", action="store_true", help="also run the exact engine (O(N^2))")
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--ef-search", type=int, default=64)
    ap.add_argument("--seed", type=int, action="append", default=None,
                    help="approximate engine's seed (repeatable: one run per seed; default 0)")
    ap.add_argument("--only-default-calib", action="store_true", help="skip the FAR 1e-5:1e-3 run")
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--diffuse", action="store_true", help="barely separable classes (hard for ANN)")
    ap.add_argument("--tiny", action="store_true", help="uniform class draws: many classes of 1-3 rows")
    ap.add_argument("--negatives", default="auto", choices=["auto", "range", "sample"])
    ap.add_argument("--samples-per-anchor", type=int, default=None)
    ap.add_argument("--cost-constants", action="store_true", help="measure the cost model's rates and stop")
    args = ap.parse_args(argv)
    if args.cost_constants:
        constants = cost_constants(args.d if args.d != 128 or not args.smoke else 16)
        print(json.dumps(constants, indent=2))
        return [constants]
    global DIFFUSE
    DIFFUSE = args.diffuse
    if args.smoke:
        args.n, args.d, args.compare = 4000, 16, True
    classes = args.classes or max(2, args.n // 100)
    ds = make_tiny_data(args.n, args.d, classes) if args.tiny else make_data(args.n, args.d, classes)
    sizes = np.bincount(ds.labels.codes)
    results = []
    fars = ((0.001, 0.1),) if args.only_default_calib else ((0.001, 0.1), (1e-5, 1e-3))
    exact_cache: dict = {}
    for far, seed in ((f, s) for f in fars for s in (args.seed or [0])):
        row: dict = {"n": args.n, "d": args.d, "calib_far": list(far), "index": args.index, "seed": seed,
                     "diffuse": args.diffuse, "nprobe": args.nprobe, "ef_search": args.ef_search}
        config = EvalConfig(calib_far=far, k=(1,))
        opts = ApproxOptions(index=args.index, nprobe=args.nprobe, ef_search=args.ef_search, seed=seed,
                             negatives=args.negatives, samples_per_anchor=args.samples_per_anchor)
        from opis_cli.engine.approximate import approximate_cost

        rss0 = _rss_bytes()
        t = time.perf_counter()
        approx = evaluate_dataset(ds, config, engine=args.index, approx=opts)
        row["approx_seconds"] = round(time.perf_counter() - t, 1)
        row["peak_beyond_start_gib"] = round(
            (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0) / 2**30, 2)
        model = approximate_cost(args.n, args.d, sizes, 1, opts, far[1])
        row.update(model_seconds=model["seconds"], model_gib=round(model["bytes"] / 2**30, 2),
                   model_stages=model["stages"], classes=int(len(sizes)), classes_used=int((sizes >= 2).sum()))
        a = approx.approximation
        row.update(negatives=a["negatives"], negatives_note=a.get("negatives_note"), opis=approx.opis, opis_interval=a["errors"]["opis"]["interval"],
                   eps_opis=approx.eps_opis, eps_opis_interval=a["errors"]["eps_opis"]["interval"],
                   recall_at_1=approx.recall_at_k[1], recall_at_1_interval=a["errors"]["recall_at_k"]["1"]["interval"],
                   warnings=a["warnings"], checks=a["checks"],
                   lo=approx.calibration.lo, hi=approx.calibration.hi,
                   stages={k: v for k, v in approx.timings.items() if isinstance(v, float)})
        if args.compare:
            # The interval is conditional on the range the run used: compare at that range.
            key = (approx.calibration.lo, approx.calibration.hi)
            t = time.perf_counter()
            if key not in exact_cache:
                exact_cache[key] = evaluate_dataset(ds, EvalConfig(calib=key, k=(1,)), engine="exact")
            exact = exact_cache[key]
            row["exact_seconds"] = round(time.perf_counter() - t, 1)
            row.update(exact_opis=exact.opis, exact_eps_opis=exact.eps_opis, exact_recall_at_1=exact.recall_at_k[1],
                       opis_rel_error=approx.opis / exact.opis - 1,
                       eps_opis_rel_error=approx.eps_opis / exact.eps_opis - 1,
                       opis_inside=a["errors"]["opis"]["interval"][0] <= exact.opis <= a["errors"]["opis"]["interval"][1],
                       eps_inside=(a["errors"]["eps_opis"]["interval"][0] <= exact.eps_opis
                                   <= a["errors"]["eps_opis"]["interval"][1]))
        row["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        print(json.dumps(row), flush=True)
        results.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
