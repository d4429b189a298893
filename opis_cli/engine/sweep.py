"""The one sweep driver: every exact statistic is an accumulator fed by the same panels.

    results = sweep(p, [ClassCounts(grid, kmax=1), GroupCounts(grid, groups, G)], memory_budget=...)

Each unordered pair is visited once: the row panels of the upper triangle (panels.py) are
computed as float32 matrix products, and every accumulator's kernel reads each panel while it is
in cache. Where the panels run is an executor's business: here, in this process; with a Dask
``client``, on the workers (dask_engine.py), which are handed :func:`run_stripes` and the
accumulators' specs and return partial states that merge by addition. Either way the panels, and
so the float32 distances, are bit-identical, and the results equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from opis_cli.data.prepare import PreparedEmbeddings
from opis_cli.engine.accumulators import Accumulator, ClassCounts, PooledCounts, SweepContext
from opis_cli.engine.histograms import PairHistograms, PooledHistogram
from opis_cli.engine.neighbours import NeighbourState
from opis_cli.engine.panels import panel_products, panel_shape, row_stripes, stripe_panels
from opis_cli.errors import ConfigError

ProgressCallback = Callable[[int, int], None]


def run_stripes(p: PreparedEmbeddings, accumulators: Sequence[Accumulator], stripes, *, memory_budget: int,
                n_threads: int, progress: ProgressCallback | None = None) -> Sequence[Accumulator]:
    """Feed the panels of the row ``stripes`` (panels.row_stripes) to every accumulator, in place.

    The engine's one block function, run alike by the local executor (all stripes, one call) and
    by Dask tasks (a few stripes each). Pure in its inputs: the state depends on the embeddings,
    the specs and the stripe bounds only, never on threads or on which call computes which stripe.
    ``progress(pairs_done, pairs_total)`` after each panel."""
    ctx = SweepContext.of(p, n_threads, memory_budget)
    for acc in accumulators:
        if not acc.started:
            acc.start(p, ctx)
    rows, cols = panel_shape(p.n, memory_budget)
    total = p.pair_count
    done = 0
    m = None if p.reference is None else p.reference.n
    panels = (panel for s0, s1 in stripes for panel in stripe_panels(p.n, s0, s1, rows, cols, m))
    for panel in panel_products(p, panels, rows * cols):
        for acc in accumulators:
            acc.consume(panel, ctx)
        done += panel.pairs
        if progress is not None:
            progress(done, total)
    return accumulators


@dataclass
class SweepResult:
    """The finished results of a sweep, in the order of its accumulators, and how it ran."""

    results: list
    pairs: int
    tile: int
    threads: int
    executor: str = "local"
    extra: dict = field(default_factory=dict)


def sweep(p: PreparedEmbeddings, accumulators: Sequence[Accumulator], *, memory_budget: int,
          threads: int | None = None, progress: ProgressCallback | None = None, client=None) -> SweepResult:
    """One exact pass over all pairs feeding ``accumulators``; their finished results.

    Every accumulator's memory is checked before any is allocated. ``client``: a
    ``dask.distributed.Client`` whose workers run the stripes (same results)."""
    from opis_cli.threads import available_cores, thread_limit

    for acc in accumulators:
        acc.check_memory(p, threads or available_cores(), memory_budget)
    executor = "local"
    if client is not None:
        from opis_cli.engine.dask_engine import dask_sweep

        accumulators = dask_sweep(client, p, [a.fresh() for a in accumulators], run_stripes,
                                  memory_budget=memory_budget, threads=threads, progress=progress)
        executor = "dask"
    else:
        accumulators = [a.fresh() for a in accumulators]
        with thread_limit(threads) as n_threads:
            run_stripes(p, accumulators, row_stripes(p.n, memory_budget), memory_budget=memory_budget,
                        n_threads=n_threads, progress=progress)
    with thread_limit(threads) as n_threads:
        ctx = SweepContext.of(p, n_threads, memory_budget)
        results = [acc.finish(p, ctx) for acc in accumulators]
    return SweepResult(results, p.pair_count, panel_shape(p.n, memory_budget)[0], n_threads, executor)


@dataclass
class PairPassResult:
    """What one exact pass of per-class (or pooled) counts produced."""

    histograms: PairHistograms | PooledHistogram
    neighbours: NeighbourState | None
    pairs: int
    tile: int
    kernel: str = "numpy"
    threads: int = 1


def exact_pass(
    p: PreparedEmbeddings,
    edges: np.ndarray,
    *,
    kmax: int = 0,
    per_class: bool = True,
    memory_budget: int = 1 << 30,
    progress: ProgressCallback | None = None,
    kernel: str = "auto",
    threads: int | None = None,
    client=None,
) -> PairPassResult:
    """One sweep with one accumulator: per-class histograms on ``edges`` (ClassCounts) with, when
    ``kmax > 0``, every item's Recall@k state; or (``per_class=False``) the pooled histogram.
    ``kernel``: ``"numba"`` (the fused sweep), ``"numpy"`` (the reference path, reference.py:
    independent code, the kernels' oracle) or ``"auto"`` (numba when importable)."""
    kernel = resolve_kernel(kernel)
    if kernel == "numpy":
        if p.reference is not None:
            raise ConfigError("--kernel numpy (the reference path) evaluates one set only: drop it with --reference")
        if client is not None:
            raise ConfigError("the Dask engine runs the fused kernel: drop --kernel numpy (the reference path runs "
                              "in this process only)")
        from opis_cli.engine.reference import reference_pass
        from opis_cli.threads import thread_limit

        with thread_limit(threads) as n_threads:
            hist, neighbours, tile = reference_pass(p, edges, kmax, per_class, memory_budget, progress)
        return PairPassResult(hist, neighbours, p.n * (p.n - 1) // 2, tile, "numpy", n_threads)
    acc = ClassCounts(edges, kmax) if per_class else PooledCounts(edges)
    out = sweep(p, [acc], memory_budget=memory_budget, threads=threads, progress=progress, client=client)
    result = out.results[0]
    hist, neighbours = (result.histograms, result.neighbours) if per_class else (result, None)
    return PairPassResult(hist, neighbours, out.pairs, out.tile, "numba+dask" if client is not None else "numba",
                          out.threads)


def resolve_kernel(kernel: str) -> str:
    if kernel not in ("auto", "numba", "numpy"):
        raise ValueError(f"unknown kernel {kernel!r}")
    if kernel == "numpy":
        return kernel
    from opis_cli.threads import numba_module

    try:
        numba_module()
    except ImportError:
        if kernel == "numba":
            raise
        return "numpy"
    return "numba"
