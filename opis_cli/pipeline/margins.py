"""``opis margins`` as library calls: the evaluation's stages, with the margins' pooled distance
sums riding on the same sweep (analyses/margins.py), then one more sweep for the hard pairs per
class at the chosen margins (its grid depends on them). The Report is built once, with them.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from opis_cli.config import DEFAULT_MEMORY_BUDGET, EvalConfig
from opis_cli.data.io import Dataset, load_dataset
from opis_cli.errors import ConfigError
from opis_cli.pipeline.stages import Prepared, StageProgress, prepare, stage
from opis_cli.report.report import Report


def margins_file(
    path: str | os.PathLike,
    *,
    labels: str | os.PathLike | None = None,
    embedding_col: str | None = None,
    label_col: str | None = None,
    reference: str | os.PathLike | None = None,
    reference_labels: str | os.PathLike | None = None,
    config: EvalConfig | None = None,
    target_far: float | None = None,
    target_frr: float | None = None,
    margin_plus: float | None = None,
    margin_minus: float | None = None,
    lambda_plus: float = 1.0,
    lambda_minus: float = 1.0,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    threads: int | None = None,
    progress: StageProgress | None = None,
) -> Report:
    """Evaluate a file exactly and attach TCM margin recommendations (``report.margins``; see
    :func:`opis_cli.analyses.margins.margins_section` and docs/margins.md); ``reference``: the
    references of query/reference mode."""
    dataset = load_dataset(path, labels=labels, embedding_col=embedding_col, label_col=label_col)
    from opis_cli.data.reference import with_reference_file

    dataset = with_reference_file(dataset, reference, reference_labels, embedding_col=embedding_col, label_col=label_col)
    return margins_dataset(dataset, config or EvalConfig(), target_far=target_far, target_frr=target_frr,
                           margin_plus=margin_plus, margin_minus=margin_minus, lambda_plus=lambda_plus,
                           lambda_minus=lambda_minus, memory_budget=memory_budget, threads=threads,
                           progress=progress)


def margins_dataset(dataset: Dataset, config: EvalConfig, *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                    threads: int | None = None, progress: StageProgress | None = None, **options) -> Report:
    """:func:`margins_file` on a loaded dataset; ``options`` go to ``margins.margins_section``."""
    from opis_cli.analyses.margins import check_margin_options, margin_grids, margins_section
    from opis_cli.engine.accumulators import PooledCounts
    from opis_cli.engine.sweep import sweep
    from opis_cli.pipeline.exact import run_exact

    if config.metric != "cosine":
        raise ConfigError("TCM margins are cosine similarities: use --metric cosine")
    check_margin_options(*(options.get(k) for k in ("target_far", "target_frr", "margin_plus", "margin_minus")),
                         options.get("lambda_plus", 1.0), options.get("lambda_minus", 1.0))
    prep = prepare(dataset, config)
    p = prep.embeddings
    far = options.get("target_far")
    if far is None:
        far = _far_at_hi_estimate(prep, threads)
    pos_edges, neg_edges = margin_grids(p, far, options.get("margin_plus"), options.get("margin_minus"), threads)
    extra = [PooledCounts(pos_edges, with_sums=True, positives_only=True), PooledCounts(neg_edges, with_sums=True)]
    run = run_exact(prep, memory_budget=memory_budget, threads=threads, progress=progress, choice={"choice": "given"},
                    extra=extra)
    report = Report(**run.fields)

    def recount(edges: np.ndarray):
        return sweep(p, [PooledCounts(edges, with_sums=True)], memory_budget=memory_budget, threads=threads,
                     progress=stage(progress, "margins: all pairs")).results[0]

    section = margins_section(p, report, memory_budget=memory_budget, threads=threads, progress=progress,
                              sums=tuple(run.extra), recount=recount, **options)
    return dataclasses.replace(report, margins=section)


def _far_at_hi_estimate(prep: Prepared, threads: int | None) -> float:
    """The pooled FAR at the calibration range's upper end, before the sweep: the FAR target of a
    --calib-far range, or a seeded anchor sample's estimate at a pinned hi (it only plans the grid
    of the negatives' sums; a cut found short is counted again, never guessed)."""
    config = prep.config
    if config.calib is None:
        return float(config.calib_far[1])
    if prep.embeddings.reference is not None:
        return 0.5  # unused: with references the negatives' grid is not cut (analyses.margins.margin_grids)
    from opis_cli.statistics.calibration import CUT_ANCHORS, sampled_pooled_histogram

    hi = float(config.calib[1])
    sample, _ = sampled_pooled_histogram(prep.embeddings, np.array([hi - 1e-9, hi]) if hi > 0 else np.array([hi, hi + 1e-9]),
                                         CUT_ANCHORS, seed=0, threads=threads)
    return float(min(0.999, max(1e-6, sample.neg[:-1].sum() / max(1, sample.neg.sum()))))
