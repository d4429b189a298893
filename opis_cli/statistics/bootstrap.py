"""Confidence intervals for OPIS, eps-OPIS and Recall@k by resampling classes.

The classes of an evaluation set are a sample of the classes a model will meet, and OPIS is a
statistic of that sample (the across-class spread of utility). Its uncertainty is estimated by
the nonparametric bootstrap over classes: draw C classes with replacement (seeded), recompute
each figure from the already computed per-class curves and per-class Recall@k counts, repeat B
times. No pair is revisited, so B = 1,000 costs seconds.

For each figure: ``se`` = the standard deviation of the B replicates, ``interval`` = their 2.5th
and 97.5th percentiles (the percentile interval, 95%). eps-OPIS re-ranks the worst classes
inside every replicate (a class drawn twice counts twice), as the definition applies to the
resampled set. Recall@k of a replicate is sum(hits) / sum(queries) over the drawn classes.

Two runs on the same evaluation set are compared with a *paired* bootstrap
(:func:`paired_class_bootstrap`): the same resampled classes in both runs, so the class-to-class
variation the two models share cancels out of the difference.
"""

from __future__ import annotations

import numpy as np

from opis_cli.statistics.metrics import range_average, worst_count

CONFIDENCE = 0.95


class _ResampledFigures:
    """One run's figures on resampled class sets, each resample given by per-class draw counts
    w (B, C): for a multiset of C draws,

      OPIS    = (1/C) w . avg_t(U_i^2) - avg_t((w U / C)^2)       (variance = E[U^2] - E[U]^2)
      eps-OPIS: the draws ranked by (m_i, label) as the definition ranks rows; the first
                ceil(eps C) draws are W, the rest (or the last ceil(eps C)) are R; a class drawn
                several times may have copies on both sides of the cut, as duplicated rows would
      Recall@k = (w . hits_k) / (w . queries)

    so B resamples cost a few matrix products instead of B copies of the curves.
    """

    def __init__(self, utility: np.ndarray, grid: np.ndarray, epsilon: float, contrast: str,
                 recall: tuple | None):
        u = np.asarray(utility, dtype=np.float64)
        self.c = u.shape[0]
        self.grid = np.asarray(grid, dtype=np.float64)
        self.u = u
        self.sq_avg = range_average(u * u, self.grid)
        self.rank = np.lexsort((np.arange(self.c), range_average(u, self.grid)))
        self.u_ranked = u[self.rank]
        self.w = worst_count(self.c, epsilon)
        self.contrast = contrast
        self.recall = recall

    def figures(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        c, w = self.c, self.w
        mean = counts @ self.u / c
        out = {"opis": np.maximum(counts @ self.sq_avg / c - range_average(mean * mean, self.grid), 0.0)}
        ranked = counts[:, self.rank]
        upto = np.cumsum(ranked, axis=1)
        in_worst = np.clip(w - (upto - ranked), 0, ranked)
        if self.contrast == "rest":
            other, n_other = ranked - in_worst, c - w
        else:
            other, n_other = np.clip(upto - (c - w), 0, ranked), w
        gap = in_worst @ self.u_ranked / w - other @ self.u_ranked / n_other
        out["eps_opis"] = range_average(gap * gap, self.grid)
        if self.recall is not None:
            queries, hits = self.recall
            total = counts @ queries
            with np.errstate(invalid="ignore", divide="ignore"):
                out.update({k: np.where(total > 0, counts @ hits[k] / total, np.nan) for k in hits})
        return out


# Resamples per block: keeps the (block, C) count matrix near 32 MB at 100k classes.
_BLOCK = 40


def _resampled_counts(c: int, replicates: int, seed: int):
    """Per-class draw counts of ``replicates`` resamples of C classes with replacement, in blocks."""
    rng = np.random.default_rng([seed, 11])
    for b0 in range(0, replicates, _BLOCK):
        b1 = min(replicates, b0 + _BLOCK)
        yield b0, np.stack([np.bincount(rng.integers(0, c, c), minlength=c) for _ in range(b1 - b0)]).astype(
            np.float64)


def class_bootstrap(
    utility: np.ndarray,
    grid: np.ndarray,
    *,
    epsilon: float,
    contrast: str,
    recall_hits: dict[int, np.ndarray] | None = None,
    recall_queries: np.ndarray | None = None,
    replicates: int = 1000,
    seed: int = 0,
) -> dict:
    """Bootstrap over the rows of ``utility`` (C, T); ``recall_hits[k]`` and ``recall_queries``
    are per-class counts (C,) in the same row order. Returns the report's ``bootstrap`` section."""
    ks = sorted(recall_hits or {})
    recall = (np.asarray(recall_queries, np.float64), {k: np.asarray(recall_hits[k], np.float64) for k in ks}) \
        if ks else None
    run = _ResampledFigures(utility, grid, epsilon, contrast, recall)
    values = {name: np.empty(replicates) for name in ("opis", "eps_opis", *ks)}
    for b0, counts in _resampled_counts(run.c, replicates, seed):
        for name, v in run.figures(counts).items():
            values[name][b0:b0 + len(counts)] = v
    out = {"replicates": int(replicates), "seed": int(seed), "unit": "class", "confidence": CONFIDENCE,
           "method": "percentile interval of a nonparametric bootstrap over classes",
           "opis": _summary(values["opis"]), "eps_opis": _summary(values["eps_opis"])}
    if ks:
        out["recall_at_k"] = {str(k): _summary(values[k]) for k in ks}
    return out


def paired_class_bootstrap(
    baseline: tuple[np.ndarray, np.ndarray],
    current: tuple[np.ndarray, np.ndarray],
    *,
    epsilon: float,
    contrast: str,
    baseline_recall: tuple | None = None,
    current_recall: tuple | None = None,
    replicates: int = 1000,
    seed: int = 0,
) -> dict:
    """Paired bootstrap of the differences current - baseline over one set of classes.

    ``baseline`` and ``current`` are (utility (C, T), grid (T,)) of two runs on the same
    evaluation set, rows in the same (label) order; each may have its own grid (matched-FAR
    runs have their own distance ranges). Every replicate draws C classes with replacement
    and recomputes each figure of both runs on the *same* draw, so what the two models share
    (which classes are hard) cancels: se(delta) = sd over replicates of
    figure_b(current) - figure_b(baseline), interval = their 2.5th and 97.5th percentiles.
    ``*_recall`` = (queries (C,), {k: hits (C,)}); Recall@k is compared for the k both have.
    Returns {"opis": {se, interval}, "eps_opis": {...}, "recall_at_k": {k: {...}}}.
    """
    ks = sorted(set(baseline_recall[1]) & set(current_recall[1])) if baseline_recall and current_recall else []

    def prepared(curves, recall):
        r = (np.asarray(recall[0], np.float64), {k: np.asarray(recall[1][k], np.float64) for k in ks}) if ks else None
        return _ResampledFigures(curves[0], curves[1], epsilon, contrast, r)

    base, cur = prepared(baseline, baseline_recall), prepared(current, current_recall)
    if base.c != cur.c:
        raise ValueError("a paired bootstrap needs the same classes in both runs")
    deltas = {name: np.empty(replicates) for name in ("opis", "eps_opis", *ks)}
    for b0, counts in _resampled_counts(base.c, replicates, seed):
        fb, fc = base.figures(counts), cur.figures(counts)
        for name in deltas:
            deltas[name][b0:b0 + len(counts)] = fc[name] - fb[name]
    out = {"opis": _summary(deltas["opis"]), "eps_opis": _summary(deltas["eps_opis"])}
    if ks:
        out["recall_at_k"] = {str(k): _summary(deltas[k]) for k in ks}
    return out


def _summary(vals: np.ndarray) -> dict:
    tail = (1.0 - CONFIDENCE) / 2 * 100
    lo, hi = np.nanpercentile(vals, [tail, 100 - tail])
    return {"se": float(np.nanstd(vals, ddof=1)), "interval": [float(lo), float(hi)]}


def bootstrap_report(report, replicates: int = 1000, seed: int = 0):
    """``report`` with class-bootstrap intervals (a new Report, ``.bootstrap`` set; the given one is
    left as it was): OPIS, eps-OPIS and Recall@k, each with its standard error and 95% interval
    from ``replicates`` resamples of the classes (:func:`class_bootstrap`)."""
    import dataclasses

    from opis_cli.errors import ConfigError

    if replicates < 2:
        raise ConfigError(f"--bootstrap needs at least 2 replicates, got {replicates}")
    queries, hits = report.class_recall if report.class_recall is not None else (None, None)
    section = class_bootstrap(
        report.curves.utility, report.curves.grid, epsilon=report.config.epsilon,
        contrast=report.config.eps_contrast, recall_hits=hits, recall_queries=queries,
        replicates=replicates, seed=seed,
    )
    return dataclasses.replace(report, bootstrap=section)
