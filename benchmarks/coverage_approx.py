"""Do the approximate engine's stated 95% intervals cover the exact figures ~95% of the time?

Runs the sampled-negatives estimator with many seeds on one synthetic dataset small enough for
the exact engine, at the same calibration range, and counts how often the stated intervals for
OPIS and eps-OPIS contain the exact values. Sampling is forced (``--samples-per-anchor`` well
below N) so that the intervals have something to cover.

    python benchmarks/coverage_approx.py --n 30000 --seeds 40
    python benchmarks/coverage_approx.py --smoke
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_approx import make_data  # noqa: E402
from opis_cli.approximate import ApproxOptions  # noqa: E402
from opis_cli.config import EvalConfig  # noqa: E402
from opis_cli.pipeline import evaluate_dataset  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=30_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--classes", type=int, default=0, help="default N / 100")
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--samples-per-anchor", type=int, default=1000)
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.d, args.seeds, args.samples_per_anchor = 2000, 16, 3, 200
    ds = make_data(args.n, args.d, args.classes or max(2, args.n // 100))
    # Anchors for the calibration cover every item at this N, so every seed gets the same range
    # and one exact run serves as the truth for all of them.
    first = None
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        opts = ApproxOptions(index="ivf", negatives="sample", samples_per_anchor=args.samples_per_anchor,
                             sample_groups=args.groups, seed=seed)
        r = evaluate_dataset(ds, EvalConfig(k=(1,)), engine="ivf", approx=opts)
        if first is None:
            first = evaluate_dataset(ds, EvalConfig(calib=(r.calibration.lo, r.calibration.hi), k=(1,)),
                                     engine="exact")
        if (r.calibration.lo, r.calibration.hi) != (first.config.calib[0], first.config.calib[1]):
            raise SystemExit("calibration range differs between seeds; use a smaller --n")
        errs = r.approximation["errors"]
        row = {"seed": seed}
        for name, value, truth in (("opis", r.opis, first.opis), ("eps_opis", r.eps_opis, first.eps_opis)):
            lo, hi = errs[name]["interval"]
            se = errs[name]["se"]
            row[name] = {"estimate": value, "exact": truth, "se": se, "inside": bool(lo <= truth <= hi),
                         "z": (value - truth) / se if se else None}
        rows.append(row)
        print(f"seed {seed:3d}  OPIS {row['opis']['estimate']:.6f} (exact {first.opis:.6f}, "
              f"z {row['opis']['z']:+.2f})  eps-OPIS z {row['eps_opis']['z']:+.2f}", flush=True)
    summary = {"n": args.n, "d": args.d, "seeds": args.seeds, "samples_per_anchor": args.samples_per_anchor,
               "groups": args.groups}
    for name in ("opis", "eps_opis"):
        z = np.array([r[name]["z"] for r in rows], float)
        summary[name] = {
            "coverage": float(np.mean([r[name]["inside"] for r in rows])),
            "mean_z": float(z.mean()), "sd_z": float(z.std(ddof=1)) if len(z) > 1 else None,
        }
        print(f"{name}: inside {summary[name]['coverage']:.0%} of {args.seeds} seeds; "
              f"z mean {summary[name]['mean_z']:+.2f}, sd {summary[name]['sd_z'] or 0:.2f} "
              "(a calibrated se gives mean 0, sd 1)")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": rows}, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
