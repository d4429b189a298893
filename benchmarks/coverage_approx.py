"""Do the approximate engine's stated 95% intervals cover the exact figures ~95% of the time?

One seeded dataset per seed (the engine's seed varies with it), small enough that the exact
engine takes seconds: the exact engine's figures at the FAR-derived range are the truth, and the
approximate engine runs at that same pinned range (``EvalConfig(calib=(lo, hi))``, so the
intervals, which are conditional on the range, are compared with the right truth). For each
headline figure (OPIS, eps-OPIS, Recall@1, Recall@5) it counts how often the stated interval
holds the exact value, and the z = (estimate - exact) / se distribution.

Kinds of data (``--kind``):
  tiny   most classes of 1-5 items (~2,800 classes at N = 10k) plus 8 classes of ~200
  hard   lognormal class sizes (N / 100 classes), diffuse classes: positives and negatives overlap
  bench  bench_approx.make_data as benchmarked (N / 100 classes, lognormal sizes)
Engine settings (``--modes``): ``s2`` and ``s20`` sample 2% / 20% of a class's complement
(``--samples-per-anchor`` forced well below N), ``range`` counts negatives by IVF range search.

    python benchmarks/coverage_approx.py --kind tiny --seeds 50 --json tiny.json
    python benchmarks/coverage_approx.py --smoke
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_approx import make_data  # noqa: E402
from opis_cli.engine.approximate import ApproxOptions  # noqa: E402
from opis_cli.statistics.approximate_errors import wilson_interval  # noqa: E402
from opis_cli.config import EvalConfig  # noqa: E402
from opis_cli.data.io import Dataset, InputInfo, encode_labels  # noqa: E402
from opis_cli.pipeline.evaluation import evaluate_dataset  # noqa: E402

KINDS = ("tiny", "hard", "bench")
MODES = {"s2": 0.02, "s20": 0.20, "range": None}
KS = (1, 5)


def make_tiny(n: int, d: int, seed: int) -> Dataset:
    """Mostly classes of 1-5 items (uniform), plus 8 classes of ~200 (lognormal); random centres
    and per-class spreads, so utilities depend on each class's false accepts."""
    rng = np.random.default_rng([seed, 101])
    sizes = list(np.round(rng.lognormal(5.3, 0.4, 8)).astype(int))
    left = n - sum(sizes)
    while left > 0:
        s = min(int(rng.integers(1, 6)), left)
        sizes.append(s)
        left -= s
    codes = np.repeat(np.arange(len(sizes)), sizes)[rng.permutation(n)]
    c = len(sizes)
    spread = rng.uniform(0.4, 1.2, c).astype(np.float32)
    x = rng.normal(size=(c, d)).astype(np.float32)[codes]
    x += spread[codes, None] * rng.normal(size=(n, d)).astype(np.float32)
    return Dataset(x, encode_labels(codes), InputInfo(None, "array"))


def make(kind: str, n: int, d: int, seed: int) -> Dataset:
    if kind == "tiny":
        return make_tiny(n, d, seed)
    return make_data(n, d, max(2, n // 100), seed=seed, diffuse=(kind == "hard"))


def _figures(report, ks) -> dict:
    out = {"opis": report.opis, "eps_opis": report.eps_opis}
    out.update({f"recall@{k}": report.recall_at_k[k] for k in ks})
    return out


def _errors(report, ks) -> dict:
    errs = report.approximation["errors"]
    out = {"opis": errs.get("opis"), "eps_opis": errs.get("eps_opis")}
    out.update({f"recall@{k}": errs["recall_at_k"][str(k)] for k in ks})
    return out


def run_seed(kind: str, n: int, d: int, seed: int, modes, ks=KS, threads=None) -> dict:
    ds = make(kind, n, d, seed)
    sizes = np.bincount(ds.labels.codes)
    found = evaluate_dataset(ds, EvalConfig(k=ks), engine="exact", threads=threads)
    pinned = EvalConfig(calib=(found.calibration.lo, found.calibration.hi), k=ks)
    t = time.perf_counter()
    exact = evaluate_dataset(ds, pinned, engine="exact", threads=threads)
    row = {"seed": seed, "classes_used": int((sizes >= 2).sum()), "exact_seconds": time.perf_counter() - t,
           "calib": list(pinned.calib), "exact": _figures(exact, ks), "modes": {}}
    complement = n - float(np.median(sizes[sizes >= 2]))
    for mode in modes:
        share = MODES[mode]
        opts = (ApproxOptions(index="ivf", negatives="range", seed=seed) if share is None else
                ApproxOptions(index="ivf", negatives="sample", samples_per_anchor=max(20, int(share * complement)),
                              seed=seed))
        t = time.perf_counter()
        r = evaluate_dataset(ds, pinned, engine="ivf", approx=opts, threads=threads)
        res = {"seconds": time.perf_counter() - t, "negatives": r.approximation["negatives"],
               "warnings": r.approximation["warnings"], "figures": {}}
        for name, value in _figures(r, ks).items():
            err = _errors(r, ks)[name]
            truth = row["exact"][name]
            lo, hi = err["interval"]
            se = err.get("se")
            res["figures"][name] = {"estimate": value, "interval": [lo, hi], "se": se,
                                    "inside": bool(lo <= truth <= hi),
                                    "z": (value - truth) / se if se else None}
        res["index_recall_at_k"] = r.approximation["checks"]["index_recall_at_k"]
        res["ranking_turnover"] = (r.approximation["errors"]["eps_opis"] or {}).get("ranking_turnover")
        row["modes"][mode] = res
    return row


def summarize(rows: list[dict], modes) -> dict:
    out = {}
    for mode in modes:
        per = {}
        names = rows[0]["modes"][mode]["figures"].keys()
        for name in names:
            cells = [r["modes"][mode]["figures"][name] for r in rows]
            inside = sum(c["inside"] for c in cells)
            z = np.array([c["z"] for c in cells if c["z"] is not None], float)
            lo, hi = wilson_interval(inside, len(cells))
            per[name] = {"coverage": inside / len(cells), "trials": len(cells), "coverage_interval": [lo, hi],
                         "z_mean": float(z.mean()) if len(z) else None,
                         "z_sd": float(z.std(ddof=1)) if len(z) > 1 else None,
                         "max_abs_z": float(np.abs(z).max()) if len(z) else None}
        out[mode] = per
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=KINDS, default="tiny")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--modes", default="s2,s20,range", help="comma-separated: s2, s20, range")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if args.smoke:
        args.n, args.d, args.seeds, modes = 2000, 16, 2, ["s2", "range"]
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        row = run_seed(args.kind, args.n, args.d, seed, modes, threads=args.threads)
        rows.append(row)
        parts = []
        for mode in modes:
            f = row["modes"][mode]["figures"]
            parts.append(f"{mode}: " + " ".join(f"{k} {'in ' if v['inside'] else 'OUT'}"
                                                + (f"{v['z']:+.1f}" if v["z"] is not None else "")
                                                for k, v in f.items()))
        print(f"{args.kind} seed {seed:3d} C={row['classes_used']}  " + " | ".join(parts), flush=True)
    summary = {"kind": args.kind, "n": args.n, "d": args.d, "seeds": args.seeds, "first_seed": args.first_seed,
               "coverage": summarize(rows, modes)}
    for mode, per in summary["coverage"].items():
        for name, s in per.items():
            z = "" if s["z_mean"] is None else f"; z mean {s['z_mean']:+.2f}, sd {s['z_sd'] or math.nan:.2f}"
            print(f"{args.kind} {mode:5s} {name:9s} inside {s['coverage']:.0%} of {s['trials']} "
                  f"[{s['coverage_interval'][0]:.0%}, {s['coverage_interval'][1]:.0%}]{z}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": rows}, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
