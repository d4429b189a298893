"""The exact engine's evaluation: calibrate, one sweep with every accumulator the run needs, then
the figures, as the fields of a Report (built once by the caller, with whatever it adds).

The sweep carries per-class counts with Recall@k (ClassCounts), the group counts of --group-col
(GroupCounts), the pooled anchors of the distributions plot (AnchorDistances), the whole-span
per-class counts of --eer (a second ClassCounts), the MAP@R buckets of --retrieval
(RetrievalCounts) and any accumulator a command adds (``extra``: margins' pooled sums). Passes of their own remain only
where their grid depends on a result: the FAR calibration, the --tar-at-far thresholds when the
calibration pass did not reach them, and the few plotted classes' distributions (their sizes
times N distances).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from opis_cli.engine.accumulators import ClassCounts, GroupCounts
from opis_cli.engine.distance import metric_upper_bound
from opis_cli.engine.distributions import AnchorDistances, anchor_sample, distance_distributions
from opis_cli.engine.sweep import exact_pass, resolve_kernel, sweep
from opis_cli.errors import ConfigError
from opis_cli.pipeline.stages import (Calibrated, Prepared, StageProgress, calibrate, class_recall, figures,
                                      plotted_classes, require_pairs_in_range, stage)
from opis_cli.statistics.metrics import recall_at_k

DISTRIBUTION_BINS = 400
DISTRIBUTION_ANCHORS = 1000


@dataclass
class ExactRun:
    """An exact evaluation: the Report's fields, and the results of the ``extra`` accumulators."""

    fields: dict
    extra: list = field(default_factory=list)
    calibrated: Calibrated | None = None


def run_exact(prep: Prepared, *, memory_budget: int, threads: int | None, kernel: str = "auto", client=None,
              progress: StageProgress | None = None, tar_at_far: Sequence[float] = (), choice: dict | None = None,
              extra: Sequence = ()) -> ExactRun:
    """Calibrate, sweep once, and compute every figure of an exact report (module docstring)."""
    config, p, dataset = prep.config, prep.embeddings, prep.dataset
    kernel = resolve_kernel(kernel)
    if kernel == "numpy" and p.reference is not None:  # before any pass, not after the first
        raise ConfigError("--kernel numpy (the reference path) evaluates one set only: drop it with --reference")
    cal = calibrate(prep, memory_budget=memory_budget, threads=threads, kernel=kernel, client=client,
                    progress=progress)
    passes = cal.passes + 1
    far_thresholds, extra_pass = _far_thresholds(prep, cal, tar_at_far, memory_budget, threads, kernel, client,
                                                 progress)
    passes += extra_pass
    # The TAR@FAR thresholds join the grid for the sweep; the curves use the grid's own bins.
    grid = cal.grid
    edges = np.unique(np.concatenate([grid, list(far_thresholds.values())])) if far_thresholds else grid
    kmax = max(config.k)

    accs = [] if kernel == "numpy" else [ClassCounts(edges, kmax)]
    if dataset.groups is not None and p.reference is not None:
        raise ConfigError("--group-col is not available with --reference yet (groups are counted over one set)")
    if dataset.groups is not None:
        accs.append(GroupCounts(grid, np.asarray(dataset.groups.codes, np.int64)[p.order], dataset.groups.n_classes))
    upper = metric_upper_bound(p.metric, p.normalized, p.max_norm)
    _, anchors = anchor_sample(p, DISTRIBUTION_ANCHORS, 0)
    with_anchors = kernel != "numpy" and p.reference is None  # distributions: one set's pairs
    if with_anchors:
        accs.append(AnchorDistances(anchors, DISTRIBUTION_BINS, upper))
    eer_edges = None
    if config.eer:
        from opis_cli.statistics.eer import EER_THRESHOLDS, eer_grid

        eer_edges = eer_grid(upper)
        if kernel != "numpy":
            accs.append(ClassCounts(eer_edges, advice=f"--eer counts every class on {EER_THRESHOLDS:,} thresholds "
                                                      "over the whole distance span: drop --eer"))
    if config.retrieval:
        from opis_cli.engine.retrieval import RetrievalCounts, check_retrieval_memory, positive_lists
        from opis_cli.threads import thread_limit

        check_retrieval_memory(p, memory_budget)
        with thread_limit(threads):
            accs.append(RetrievalCounts(positive_lists(p, memory_budget)))
    accs.extend(extra)
    t2 = time.perf_counter()
    swept = sweep(p, accs, memory_budget=memory_budget, threads=threads, progress=stage(progress, "counting pairs"),
                  client=client) if accs else None
    results = list(swept.results) if swept else []
    if kernel == "numpy":
        ref = exact_pass(p, edges, kmax=kmax, memory_budget=memory_budget, kernel="numpy", threads=threads,
                         progress=stage(progress, "counting pairs"))
        full, neighbours, tile, n_threads = ref.histograms, ref.neighbours, ref.tile, ref.threads
    else:
        counted = results.pop(0)
        full, neighbours, tile, n_threads = counted.histograms, counted.neighbours, swept.tile, swept.threads
    group_hist = results.pop(0) if dataset.groups is not None else None
    pooled_anchors = results.pop(0) if with_anchors else None
    if eer_edges is not None:
        eer_hist = results.pop(0).histograms if kernel != "numpy" else exact_pass(
            p, eer_edges, memory_budget=memory_budget, kernel="numpy", threads=threads,
            progress=stage(progress, "counting pairs for --eer")).histograms
        passes += kernel == "numpy"
    retrieved = results.pop(0) if config.retrieval else None
    prep.timings["pair_pass"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    hist = full.on_edges(grid) if far_thresholds else full
    require_pairs_in_range(hist, cal.range)
    curves, o, e = figures(hist, prep.sizes, config, prep.totals)
    tar_section = None
    if far_thresholds:
        from opis_cli.analyses.operating_points import tar_at_far_section

        tar_section = tar_at_far_section(full, prep.sizes, far_thresholds, prep.totals)
    query_mask = prep.query_mask
    retrieval = None
    if retrieved is not None:
        from opis_cli.statistics.metrics import retrieval_figures

        retrieval = retrieval_figures(retrieved.average_precision, retrieved.r_precision, p.codes, curves.classes)
    eer = None
    if eer_edges is not None:
        from opis_cli.statistics.eer import eer_figures

        eer = eer_figures(eer_hist.pos, eer_hist.neg, eer_edges, curves.classes)
    groups = None
    if group_hist is not None:
        from opis_cli.analyses.groups import group_section

        groups = group_section(group_hist, dataset.groups, dataset.info.group_column, beta=config.beta,
                               epsilon=config.epsilon, contrast=config.eps_contrast)
    prep.timings["metrics"] = time.perf_counter() - t3
    t4 = time.perf_counter()
    codes = plotted_classes(curves, e)
    from opis_cli.threads import thread_limit

    distributions = None
    if p.reference is None:
        with thread_limit(threads):
            distributions = distance_distributions(p, codes, prep.labels_of(codes), bins=DISTRIBUTION_BINS,
                                                   anchors=DISTRIBUTION_ANCHORS, memory_budget=memory_budget,
                                                   pooled=pooled_anchors)
    prep.timings["distributions"] = time.perf_counter() - t4
    prep.timings["total"] = time.perf_counter() - prep.started
    engine = {"name": "exact", "passes": passes, **(choice or {}), **({"executor": "dask"} if client is not None else {})}
    fields = dict(
        config=config, calibration=cal.range, input=prep.input_section(), labels=prep.labels_of(curves.classes),
        curves=curves, opis=o.value, eps_opis=e.value, opis_contributions=o.contributions,
        mean_utility=e.mean_utility, mean_curve=o.mean_curve, worst=e.worst, contrast=e.contrast,
        recall_at_k=recall_at_k(neighbours, query_mask, config.k), pooled=hist.pooled(), tar_at_far=tar_section,
        engine=engine, distributions=distributions,
        class_recall=class_recall(neighbours, p, query_mask, curves.classes, config.k), groups=groups, eer=eer,
        retrieval=retrieval,
        timings={"kernel": "numba+dask" if client is not None else kernel, "threads": n_threads, "tile": tile,
                 "pairs": p.pair_count, **{k: round(v, 4) for k, v in prep.timings.items()}},
    )
    return ExactRun(fields, results, cal)


def _far_thresholds(prep, cal, tar_at_far, memory_budget, threads, kernel, client, progress) -> tuple[dict, int]:
    """{FAR target: the largest fine-grid threshold with pooled FAR <= it} for --tar-at-far, and the
    passes that took (0 when the calibration pass's fine histogram already reaches the targets)."""
    if not tar_at_far:
        return {}, 0
    from opis_cli.statistics.calibration import pooled_fine_histogram, threshold_at_most_far

    if any(not 0.0 < f < 1.0 for f in tar_at_far):
        raise ConfigError(f"--tar-at-far values must lie in (0, 1), got {', '.join(map(str, tar_at_far))}")
    top = max(tar_at_far)
    fine, passes = cal.fine, 0
    if fine is None or not fine.neg[:-1].sum() > top * fine.neg.sum():
        # No fine pooled histogram reaching that FAR yet: one more pooled pass.
        _, fine, _ = pooled_fine_histogram(prep.embeddings, top, memory_budget=memory_budget,
                                           progress=stage(progress, "thresholds for --tar-at-far"),
                                           threads=threads, kernel=kernel, client=client)
        passes = 1
    return {f: threshold_at_most_far(fine.edges, fine.neg, f) for f in tar_at_far}, passes
