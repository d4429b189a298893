"""How long the exact engine would take here: the basis of ``--index auto``.

A fixed cost model is only right on the machine it was measured on (a laptop without AVX-512 or
with eight cores differs by several times). So when the decision is not obvious, the exact engine
is *timed* on a seeded sample of the user's own rows, on the same code path, thread cap and panel
shapes, and the time is scaled to the full matrix by the number of matrix-product elements the
panels compute. The probe costs well under a second (one pass over ~19M pairs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

# Fallback model (this project's 2-core AVX-512 development machine, docs/performance.md):
# matrix products at ~300 GFLOP/s plus the kernel at ~500 M pairs/s.
EXACT_FLOPS_PER_S = 300e9
EXACT_KERNEL_PAIRS_PER_S = 500e6
PROBE_ROWS = 6144
# Outside this factor of the limit the fixed model decides alone: a machine 20x slower or faster
# than the development machine is not a laptop or CI runner this tool targets.
PROBE_WINDOW = 20.0


@dataclass(frozen=True)
class ExactCost:
    """Estimated wall time of the exact engine and how it was estimated."""

    seconds: float
    passes: int
    method: str  # "model" (fixed constants) or "probe" (timed on a sample of the data)
    probe_pairs: int = 0
    probe_seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"seconds": float(f"{self.seconds:.3g}"), "passes": self.passes, "method": self.method,
                "probe_pairs": self.probe_pairs, "probe_seconds": float(f"{self.probe_seconds:.3g}")}


def estimate_exact_seconds(n: int, d: int, passes: int = 2) -> float:
    """Fixed-model wall time of the exact engine: ``passes`` x N(N-1)/2 pairs x (2D / FLOP rate +
    1 / kernel pair rate). ``passes`` is 2 with a FAR-derived range (one calibration pass)."""
    pairs = n * (n - 1) / 2
    return passes * pairs * (2.0 * d / EXACT_FLOPS_PER_S + 1.0 / EXACT_KERNEL_PAIRS_PER_S)


def panel_elements(n: int, memory_budget: int) -> int:
    """Matrix-product elements the fused engine computes for N rows (triangle chunks included)."""
    from .pairs import iter_panels, panel_shape

    rows, cols = panel_shape(n, memory_budget)
    return sum((i1 - i0) * (j1 - j0) for i0, i1, j0, j1 in iter_panels(n, rows, cols))


def exact_cost(prepared, *, passes: int, far_hi: float | None, grid: np.ndarray | None, kmax: int,
               limit_seconds: float, memory_budget: int, threads: int | None, kernel: str = "auto",
               seed: int = 0) -> ExactCost:
    """Estimated exact-engine time for ``prepared``: the fixed model when it is far from
    ``limit_seconds`` (or N is small), else a timed probe on ``PROBE_ROWS`` seeded rows.

    The probe counts on ``grid`` when the range is known, else on a grid up to the sample's
    distance at pooled quantile ``far_hi`` (the kernel's cost depends on how many pairs fall in
    range). Estimate = passes x probe time x (full panel elements / probe panel elements).
    """
    model = estimate_exact_seconds(prepared.n, prepared.d, passes)
    if prepared.n < 2 * PROBE_ROWS or not (limit_seconds / PROBE_WINDOW <= model <= limit_seconds * PROBE_WINDOW):
        return ExactCost(model, passes, "model")
    from .pairs import exact_pass

    rng = np.random.default_rng([seed, 7])
    rows = np.sort(rng.choice(prepared.n, PROBE_ROWS, replace=False))
    sub = _subset(prepared, rows)
    if grid is None:
        grid = _probe_grid(sub, far_hi)
    # A small pass first loads (or, once per machine, compiles) the kernels outside the timing.
    exact_pass(_subset(prepared, rows[:512]), grid, kmax=kmax, memory_budget=memory_budget, threads=threads,
               kernel=kernel)
    t = time.perf_counter()
    exact_pass(sub, grid, kmax=kmax, memory_budget=memory_budget, threads=threads, kernel=kernel)
    elapsed = time.perf_counter() - t
    scale = panel_elements(prepared.n, memory_budget) / panel_elements(sub.n, memory_budget)
    return ExactCost(passes * elapsed * scale, passes, "probe", probe_pairs=sub.n * (sub.n - 1) // 2,
                     probe_seconds=elapsed)


def _subset(prepared, rows: np.ndarray):
    """The prepared rows ``rows`` as a prepared set of their own (already normalised rows are
    normalised again, a no-op up to rounding; raw l2 rows keep their norms)."""
    from .prepare import prepare_embeddings

    return prepare_embeddings(prepared.x[rows], prepared.codes[rows], prepared.n_classes, metric=prepared.metric,
                              normalize=prepared.sq_norms is None)


def _probe_grid(sub, far_hi: float | None) -> np.ndarray:
    """101 thresholds up to the sample's distance at pooled quantile ``far_hi`` (all pairs of a
    512-row slice, the labels ignored: negatives are nearly all pairs)."""
    from .distance import gram_to_distance

    g = np.ascontiguousarray(sub.x[:512] @ sub.x[512:].T)
    if sub.sq_norms is not None:
        gram_to_distance(g, sub.metric, sub.sq_norms[:512], sub.sq_norms[512:])
    else:
        gram_to_distance(g, sub.metric)
    hi = float(np.quantile(g, min(max(far_hi or 0.1, 1e-6), 1.0)))
    return np.linspace(0.0, max(hi, 1e-6), 101)
