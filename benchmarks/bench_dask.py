"""The exact engine locally and on a local Dask cluster of 1 and 2 worker processes (same figures).

    python benchmarks/bench_dask.py --n 40000 --d 256
    python benchmarks/bench_dask.py --smoke

On one machine this measures the Dask engine's overhead (scatter, task scheduling, tree merge)
and how the cores split between workers; across machines the pass scales with the number of
cores (docs/distributed.md). Prints one JSON line per configuration, with the pair rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import opis_cli  # noqa: E402
from opis_cli.engine.dask_engine import local_cluster_client  # noqa: E402


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.d, args.classes = 3000, 16, 30
    rng = np.random.default_rng(0)
    y = rng.integers(0, args.classes, args.n)
    x = (rng.normal(size=(args.classes, args.d))[y] + 1.5 * rng.normal(size=(args.n, args.d))).astype(np.float32)
    options = dict(calib=(0.5, 0.9), k=(1,))
    pairs = args.n * (args.n - 1) // 2
    rows = []
    t = time.perf_counter()
    local = opis_cli.evaluate(x, y, **options)
    rows.append({"engine": "local", "seconds": time.perf_counter() - t})
    reference = local.to_dict()
    reference.pop("engine")
    for workers in (1, 2):
        client = local_cluster_client(workers)
        try:
            t = time.perf_counter()
            remote = opis_cli.evaluate(x, y, client=client, **options)
            seconds = time.perf_counter() - t
        finally:
            cluster = client.cluster
            client.close()
            cluster.close()
        got = remote.to_dict()
        got.pop("engine")
        rows.append({"engine": f"dask, {workers} worker(s)", "seconds": seconds, "identical": got == reference})
    for row in rows:
        row.update(n=args.n, d=args.d, pairs=pairs, seconds=round(row["seconds"], 2),
                   pairs_per_s=round(pairs / row["seconds"]))
        print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
