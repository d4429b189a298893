"""The approximate engine: wall time at large N, and accuracy against the exact engine.

    python benchmarks/bench_approx.py --n 1000000 --d 128              # time only (exact is hours)
    python benchmarks/bench_approx.py --n 100000 --d 128 --compare     # also run exact, compare
    python benchmarks/bench_approx.py --smoke                          # seconds; used by the tests

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

from opis_cli.approximate import ApproxOptions  # noqa: E402
from opis_cli.config import EvalConfig  # noqa: E402
from opis_cli.io import Dataset, InputInfo, encode_labels  # noqa: E402
from opis_cli.pipeline import evaluate_dataset  # noqa: E402


def make_data(n: int, d: int, classes: int, seed: int = 0) -> Dataset:
    """Clustered data with uneven class sizes and spreads (some classes far less compact).

    Within-class cosine similarity ranges from ~0.2 to ~0.5 across classes, so positives overlap
    the calibration range as with a hard real model; ``--diffuse`` makes classes barely
    separable (a hard case for ANN).
    """
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0, 0.7, classes)
    codes = rng.choice(classes, size=n, p=weights / weights.sum())
    lo_spread, hi_spread, centre = (0.6, 1.4, 0.5) if DIFFUSE else (1.0, 2.0, 1.0)
    spread = rng.uniform(lo_spread, hi_spread, classes).astype(np.float32)
    x = rng.normal(size=(classes, d)).astype(np.float32)[codes] * centre
    x += spread[codes, None] * rng.normal(size=(n, d)).astype(np.float32)
    return Dataset(x, encode_labels(codes), InputInfo(None, "array"))


DIFFUSE = False


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
    args = ap.parse_args(argv)
    global DIFFUSE
    DIFFUSE = args.diffuse
    if args.smoke:
        args.n, args.d, args.compare = 4000, 16, True
    ds = make_data(args.n, args.d, args.classes or max(2, args.n // 100))
    results = []
    fars = ((0.001, 0.1),) if args.only_default_calib else ((0.001, 0.1), (1e-5, 1e-3))
    exact_cache: dict = {}
    for far, seed in ((f, s) for f in fars for s in (args.seed or [0])):
        row: dict = {"n": args.n, "d": args.d, "calib_far": list(far), "index": args.index, "seed": seed,
                     "diffuse": args.diffuse, "nprobe": args.nprobe, "ef_search": args.ef_search}
        config = EvalConfig(calib_far=far, k=(1,))
        t = time.perf_counter()
        approx = evaluate_dataset(ds, config, engine=args.index,
                                  approx=ApproxOptions(index=args.index, nprobe=args.nprobe,
                                                      ef_search=args.ef_search, seed=seed))
        row["approx_seconds"] = round(time.perf_counter() - t, 1)
        a = approx.approximation
        row.update(negatives=a["negatives"], negatives_note=a.get("negatives_note"), opis=approx.opis, opis_interval=a["errors"]["opis"]["interval"],
                   eps_opis=approx.eps_opis, eps_opis_interval=a["errors"]["eps_opis"]["interval"],
                   recall_at_1=approx.recall_at_k[1], checks=a["checks"],
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
