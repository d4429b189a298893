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
"""

from __future__ import annotations

import numpy as np

from .metrics import eps_opis, opis

CONFIDENCE = 0.95


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
    u = np.asarray(utility, dtype=np.float64)
    c = u.shape[0]
    rng = np.random.default_rng([seed, 11])
    values = {"opis": np.empty(replicates), "eps_opis": np.empty(replicates)}
    ks = sorted(recall_hits or {})
    recall = {k: np.empty(replicates) for k in ks}
    for b in range(replicates):
        # Sorted draws keep the rows in label order, which eps-OPIS's tie rule relies on.
        idx = np.sort(rng.integers(0, c, c))
        sample = u[idx]
        values["opis"][b] = opis(sample, grid).value
        values["eps_opis"][b] = eps_opis(sample, grid, epsilon=epsilon, contrast=contrast).value
        if ks:
            queries = recall_queries[idx].sum()
            for k in ks:
                recall[k][b] = recall_hits[k][idx].sum() / queries if queries else np.nan
    out = {"replicates": int(replicates), "seed": int(seed), "unit": "class", "confidence": CONFIDENCE,
           "method": "percentile interval of a nonparametric bootstrap over classes"}
    for name, vals in values.items():
        out[name] = _summary(vals)
    if ks:
        out["recall_at_k"] = {str(k): _summary(recall[k]) for k in ks}
    return out


def _summary(vals: np.ndarray) -> dict:
    tail = (1.0 - CONFIDENCE) / 2 * 100
    lo, hi = np.nanpercentile(vals, [tail, 100 - tail])
    return {"se": float(np.nanstd(vals, ddof=1)), "interval": [float(lo), float(hi)]}


def bootstrap_report(report, replicates: int = 1000, seed: int = 0):
    """Attach class-bootstrap intervals to ``report`` (sets and returns ``report.bootstrap``)."""
    from .errors import ConfigError

    if replicates < 2:
        raise ConfigError(f"--bootstrap needs at least 2 replicates, got {replicates}")
    queries, hits = report.class_recall if report.class_recall is not None else (None, None)
    report.bootstrap = class_bootstrap(
        report.curves.utility, report.curves.grid, epsilon=report.config.epsilon,
        contrast=report.config.eps_contrast, recall_hits=hits, recall_queries=queries,
        replicates=replicates, seed=seed,
    )
    return report.bootstrap
