"""``opis evaluate`` on an approximate engine (IVF or HNSW, engine/approximate.py): a seeded
calibration estimate, the approximate pass, and every headline figure with its interval
(statistics/approximate_errors.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from opis_cli.config import DEFAULT_MEMORY_BUDGET
from opis_cli.errors import ConfigError
from opis_cli.pipeline.stages import Prepared, StageProgress, figures, plotted_classes, require_pairs_in_range
from opis_cli.report.report import Report
from opis_cli.statistics.calibration import CalibrationRange

if TYPE_CHECKING:
    from opis_cli.engine.approximate import ApproxOptions


def evaluate_approximate(prep: Prepared, engine: str, approx: "ApproxOptions | None", *, threads: int | None,
                         progress: StageProgress | None, choice: dict | None = None, notify=None,
                         memory_budget: int = DEFAULT_MEMORY_BUDGET) -> Report:
    """The Report of an approximate engine (``"ivf"`` or ``"hnsw"``): every headline figure an
    estimate with its 95% interval (docs/approximate.md)."""
    import dataclasses

    config, prepared, sizes = prep.config, prep.embeddings, prep.sizes
    timings, t0 = prep.timings, prep.started

    from opis_cli.engine.approximate import ApproxOptions, approximate_pass
    from opis_cli.statistics.calibration import estimate_far_range, sampled_pooled_histogram

    opts = approx or ApproxOptions(index=engine)
    if opts.index != engine:
        opts = dataclasses.replace(opts, index=engine)
    n = prepared.n
    from opis_cli.engine.approximate import approximate_cost
    from opis_cli.memory import require, size_option

    # What the run holds whatever the block size (sampled counts per class and group, k-NN state):
    # checked before the index is built, as --index auto does before choosing it.
    need = approximate_cost(n, prepared.d, sizes, max(config.k), opts, config.calib_far[1], memory_budget)
    require(need["working_bytes"], what=f"the approximate engine on {int((sizes >= 2).sum()):,} classes",
            budget=memory_budget, advice=f"pass --memory-budget {size_option(need['working_bytes'])} or --index exact")
    anchors = int(min(n, max(500, 2e9 / n)))
    t1 = time.perf_counter()
    if config.calib is not None:
        calibration = CalibrationRange(lo=config.calib[0], hi=config.calib[1], mode="distance")
        grid = calibration.grid(config.thresholds)
        sample, _ = sampled_pooled_histogram(prepared, grid, min(anchors, 200), opts.seed, threads)
        far_at_hi = float(sample.neg[:-1].sum() / max(1, sample.neg.sum()))
    else:
        calibration = estimate_far_range(prepared, *config.calib_far, anchors=anchors, seed=opts.seed,
                                         threads=threads)
        grid = calibration.grid(config.thresholds)
        far_at_hi = config.calib_far[1]
    timings["calibration"] = time.perf_counter() - t1
    if not np.all(np.diff(grid) > 0):
        raise ConfigError(f"calibration range [{calibration.lo:g}, {calibration.hi:g}] is too narrow for "
                          f"{config.thresholds} distinct thresholds")
    kmax = max(config.k)
    from opis_cli.threads import thread_limit

    with thread_limit(threads):  # BLAS products outside the exact passes obey --threads too
        result = approximate_pass(prepared, grid, kmax=kmax, opts=opts, far_at_hi=far_at_hi, threads=threads,
                                  progress=progress)
    require_pairs_in_range(result.histograms, calibration)
    curves, o, e = figures(result.histograms, sizes, config)
    from opis_cli.engine.approximate import coverage_problem
    from opis_cli.statistics.approximate_errors import approximate_figures

    # Every headline figure is an estimate with its interval (approximate_errors.py); the index's own
    # Recall@k stays a diagnostic.
    estimates = approximate_figures(result, curves, o, e, config, prepared, opts, threads)
    problem = coverage_problem(sizes, n, prepared.d, opts)
    warnings = ([problem] if problem is not None else []) + estimates["warnings"]
    for message in warnings if notify is not None else ():
        notify(message)
    info = result.info
    approximation = {
        "method": "approximate",
        "index": info.get("index"),
        "negatives": info["negatives"],
        **({"negatives_note": info["negatives_note"]} if "negatives_note" in info else {}),
        "positives": "exact",
        "options": info["options"],
        **({"samples_per_anchor": info["samples_per_anchor"], "sample_groups": info["sample_groups"]}
           if "samples_per_anchor" in info else {}),
        "expected_in_range_per_query": info["expected_in_range_per_query"],
        "checks": {**(info.get("checks") or {}), "index_recall_at_k": estimates["index_recall_at_k"]},
        "errors": estimates["errors"],
        "warnings": warnings,
    }
    timings.update({f"approx_{k}": v for k, v in info["timings"].items()})
    timings["total"] = time.perf_counter() - t0
    return Report(
        config=config, calibration=calibration, input=prep.input_section(),
        labels=prep.labels_of(curves.classes), curves=curves, opis=estimates["opis"],
        eps_opis=estimates["eps_opis"], opis_contributions=estimates["contributions"], mean_utility=e.mean_utility,
        mean_curve=o.mean_curve, worst=e.worst, contrast=e.contrast, recall_at_k=estimates["recall_at_k"],
        pooled=result.histograms.pooled(), engine={"name": "approximate", "index": engine, **(choice or {})},
        timings={k: (round(v, 4) if isinstance(v, float) else v) for k, v in timings.items()},
        approximation=approximation,
        distributions=_distributions(prep, curves, e, memory_budget, threads),
        class_recall=estimates["class_recall"],
    )


def _distributions(prep: Prepared, curves, e, memory_budget: int, threads: int | None):
    """Whole-span distance distributions, pooled and of the few worst classes (for plots)."""
    from opis_cli.engine.distributions import distance_distributions
    from opis_cli.threads import thread_limit

    codes = plotted_classes(curves, e)
    with thread_limit(threads):
        return distance_distributions(prep.embeddings, codes, prep.labels_of(codes), memory_budget=memory_budget)
