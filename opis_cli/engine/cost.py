"""Which engine ``--index auto`` runs: a documented, deterministic function of the input's shape.

The same input and flags must give the same report on an idle and on a busy machine, so the
choice never times anything. It is a pure function of N, D, the class sizes, k, the options and
the memory budget (:func:`choose_engine`), and the report states which engine ran and why
(``engine.choice``, ``engine.reason``).

Costs are in *reference seconds*: wall time on this project's reference machine (2 cores of an
x86-64 CI runner, measured in docs/performance.md). A faster machine runs both engines faster
by about the same factor, so the comparison between them holds anywhere; the limit
``--max-exact-minutes`` is read in the same reference minutes.

Exact engine: ``passes x N(N - 1)/2`` pairs, each costing one 2D-flop product share and one
kernel visit, plus what does not scale with the pairs (imports, preparation, the plots'
distributions pass): seconds = passes * pairs * (2D / EXACT_FLOPS_PER_S + 1 / EXACT_KERNEL_PAIRS_PER_S)
+ EXACT_FIXED_SECONDS + N * EXACT_ROW_SECONDS. ``passes`` is 1 with a pinned range and 2 with a
FAR-derived one (one calibration pass).

The rule, in order (the first that applies decides):

1. exact if its estimate is within the limit;
2. exact if the approximate engine's intervals are not known to hold for this data shape and
   these options (:func:`opis_cli.engine.approximate.coverage_problem`);
3. exact if the approximate engine would need more working memory than ``--memory-budget``
   (``approximate_cost(...)["working_bytes"]``: everything but its index's copy of the rows,
   which like the embeddings themselves is input, not block working memory);
4. exact if the approximate engine would not be at least APPROXIMATE_SPEEDUP times faster;
5. otherwise the approximate engine (IVF).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Reference machine: this project's 2-core x86-64 VM, 2 threads, idle. Fit (relative least
# squares, non-negative) to 8 end-to-end opis_cli.evaluate runs re-measured 2026-11-29 after the
# one-sweep engine (issue 16): N = 30k-80k, D = 64-1024, 1,000 classes, the default --calib-far
# 0.001:0.1 and the same range pinned; every run within 9% of the model (docs/performance.md,
# "Choosing the engine"). The per-row term fell to zero once the plots' distributions rode on the
# sweep. A range where most pairs fall inside (lo, hi] runs the kernel up to 3x slower: a
# realistic range was measured, not that.
EXACT_FLOPS_PER_S = 184e9
EXACT_KERNEL_PAIRS_PER_S = 370e6
EXACT_FIXED_SECONDS = 0.6
EXACT_ROW_SECONDS = 0.0
#: The approximate engine must beat the exact estimate by this factor to be chosen: its
#: figures are estimates, worth it only for a clear saving.
APPROXIMATE_SPEEDUP = 2.0


def exact_passes(calib_given: bool) -> int:
    """Passes over all pairs: one, plus one calibration pass for a FAR-derived range."""
    return 1 if calib_given else 2


def estimate_exact_seconds(n: int, d: int, passes: int = 2) -> float:
    """Reference seconds of the exact engine: passes * N(N-1)/2 * (2D / F + 1 / K) + fixed + N * row."""
    pairs = n * (n - 1) / 2
    return (passes * pairs * (2.0 * d / EXACT_FLOPS_PER_S + 1.0 / EXACT_KERNEL_PAIRS_PER_S)
            + EXACT_FIXED_SECONDS + n * EXACT_ROW_SECONDS)


@dataclass(frozen=True)
class EngineChoice:
    """The engine ``--index auto`` picked, why, and the estimates it compared."""

    engine: str  # "exact" or "ivf"
    reason: str
    exact_seconds: float
    approximate_seconds: float | None = None

    def to_dict(self) -> dict:
        """``engine`` section entries of the report (deterministic: rounded estimates)."""
        out = {"choice": "auto", "reason": self.reason,
               "exact_minutes_estimate": float(f"{self.exact_seconds / 60:.3g}")}
        if self.approximate_seconds is not None:
            out["approximate_minutes_estimate"] = float(f"{self.approximate_seconds / 60:.3g}")
        return out


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2g} s"
    minutes = seconds / 60
    return f"{minutes:.2g} min" if minutes < 10 else f"{minutes:,.0f} min"


def choose_engine(n: int, d: int, class_sizes: np.ndarray, *, kmax: int, calib_given: bool, far_at_hi: float,
                  max_exact_seconds: float, memory_budget: int, approx) -> EngineChoice:
    """``--index auto``: the rule of the module docstring. ``approx``: the ApproxOptions the
    approximate engine would run with (None: its defaults, IVF); ``far_at_hi``: the pooled FAR at the top of the range
    (the FAR bound, or an estimate for a pinned range)."""
    exact = estimate_exact_seconds(n, d, exact_passes(calib_given))
    limit = f"--max-exact-minutes {max_exact_seconds / 60:g}"
    if exact <= max_exact_seconds:
        return EngineChoice("exact", f"estimated {_minutes(exact)} on the reference machine, within {limit}", exact)
    # Imported only past the limit: small inputs never load the approximate engine's modules.
    from opis_cli.engine.approximate import ApproxOptions, approximate_cost, coverage_problem
    from opis_cli.memory import size_option

    approx = approx or ApproxOptions(index="ivf")

    over = f"estimated {_minutes(exact)} on the reference machine, over {limit}, yet"
    problem = coverage_problem(np.asarray(class_sizes), n, d, approx)
    if problem is not None:
        return EngineChoice("exact", f"{over} the approximate engine's intervals are not known to hold here: "
                                     f"{problem}", exact)
    cost = approximate_cost(n, d, np.asarray(class_sizes), kmax, approx, far_at_hi, memory_budget)
    approximate = float(cost["seconds"])
    if cost["working_bytes"] > memory_budget:
        need = cost["working_bytes"] / 2**30
        return EngineChoice("exact", f"{over} the approximate engine would need {need:.1f} GiB of working memory, "
                                     f"more than --memory-budget {memory_budget / 2**30:.1f} GiB (with --memory-budget "
                                     f"{size_option(cost['working_bytes'])} it would take about {_minutes(approximate)})",
                            exact, approximate)
    if approximate * APPROXIMATE_SPEEDUP > exact:
        return EngineChoice("exact", f"{over} the approximate engine would not be clearly faster "
                                     f"({_minutes(approximate)})", exact, approximate)
    return EngineChoice("ivf", f"exact estimated {_minutes(exact)} on the reference machine, over {limit}; "
                               f"approximate (IVF) {_minutes(approximate)}", exact, approximate)
