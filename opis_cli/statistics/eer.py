"""Equal error rate (docs/definitions.md, "EER"), pooled and per class, from histograms on a grid.

For a set of positive and negative pair distances, FAR(t) = share of negatives with d <= t and
FRR(t) = share of positives with d > t. f(t) = FAR(t) - FRR(t) never decreases in t, so the
threshold t* minimising |f| sits where f crosses zero.

Exact counts are known only at the grid's thresholds t_1..t_T (the whole distance span, see
pipeline/exact.py), so:

* the reported ``eer`` is the definition restricted to the grid: t* = the grid threshold with the
  smallest |FAR - FRR| (ties, up to 1e-12 of float rounding: the lower threshold), EER = (FAR(t*) + FRR(t*)) / 2;
* ``interval`` bounds the EER of the definition over *all* real thresholds: with a the last grid
  threshold where f <= 0 and b the first where f >= 0 (t = -inf, FAR 0, FRR 1, stands in below the
  grid), the zero crossing lies in [t_a, t_b], where FAR is between FAR(t_a) and FAR(t_b) and FRR
  between FRR(t_b) and FRR(t_a), so
      (FAR(t_a) + FRR(t_b)) / 2  <=  EER  <=  (FAR(t_b) + FRR(t_a)) / 2.
  Its width is what the grid's resolution costs; both ends are exact counts.

This is the bob.measure reading (``bob.measure.eer``: the threshold where FAR and FRR are closest)
on a grid, rather than an interpolated crossing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opis_cli.statistics.curves import accepted_at_thresholds


TIE = 1e-12


@dataclass(frozen=True)
class EqualErrorRates:
    """EER of each row of a stack of histograms (shape (...,)): the grid figure, its threshold and
    rates there, and the interval holding the EER over all real thresholds."""

    eer: np.ndarray
    threshold: np.ndarray
    far: np.ndarray
    frr: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def rates_on_grid(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR(t_k), FRR(t_k)) for every grid threshold from histograms (..., T + 1):
    FAR = accepted negatives / negatives, FRR = 1 - accepted positives / positives.
    A row without negatives has FAR 0; one without positives FRR 0."""
    n_pos = pos.sum(axis=-1, keepdims=True).astype(np.float64)
    n_neg = neg.sum(axis=-1, keepdims=True).astype(np.float64)
    far = np.divide(accepted_at_thresholds(neg), n_neg, out=np.zeros(neg.shape[:-1] + (neg.shape[-1] - 1,)),
                    where=n_neg > 0)
    tar = np.divide(accepted_at_thresholds(pos), n_pos, out=np.ones(pos.shape[:-1] + (pos.shape[-1] - 1,)),
                    where=n_pos > 0)
    return far, 1.0 - tar


def equal_error_rates(pos: np.ndarray, neg: np.ndarray, edges: np.ndarray) -> EqualErrorRates:
    """EER of positive and negative histograms ``pos``, ``neg`` (..., T + 1) on ``edges`` (T,),
    as in the module docstring: t* = argmin_k |FAR(t_k) - FRR(t_k)| (first on ties),
    EER = (FAR(t*) + FRR(t*)) / 2, and the interval [(FAR_a + FRR_b) / 2, (FAR_b + FRR_a) / 2]."""
    pos, neg = np.asarray(pos), np.asarray(neg)
    edges = np.asarray(edges, np.float64)
    far, frr = rates_on_grid(pos, neg)
    gap = far - frr  # non-decreasing along the grid
    # Ties (equal up to float rounding: 1e-12, far below one pair in 10^11) go to the lower threshold.
    dist = np.abs(gap)
    k = np.argmax(dist <= dist.min(axis=-1, keepdims=True) + TIE, axis=-1)[..., None]
    at = lambda v: np.take_along_axis(v, k, axis=-1)[..., 0]  # noqa: E731
    t = far.shape[-1]
    # a: the last index with gap <= 0 (-1: below the grid); b: the first with gap >= 0 (t: none).
    a = (gap <= 0).sum(axis=-1) - 1
    b = t - (gap >= 0).sum(axis=-1)
    pad_far = np.concatenate([np.zeros(far.shape[:-1] + (1,)), far, np.ones(far.shape[:-1] + (1,))], axis=-1)
    pad_frr = np.concatenate([np.ones(frr.shape[:-1] + (1,)), frr, np.zeros(frr.shape[:-1] + (1,))], axis=-1)
    pick = lambda v, i: np.take_along_axis(v, (i + 1)[..., None], axis=-1)[..., 0]  # noqa: E731
    return EqualErrorRates(
        eer=(at(far) + at(frr)) / 2.0, threshold=edges[k[..., 0]], far=at(far), frr=at(frr),
        lower=(pick(pad_far, a) + pick(pad_frr, b)) / 2.0, upper=(pick(pad_far, b) + pick(pad_frr, a)) / 2.0,
    )


#: Grid of the EER and of the ROC/DET curves: the whole distance span in 2,000 steps (0.001 in
#: cosine distance). Fixed, so two runs' EERs are read on the same grid.
EER_THRESHOLDS = 2001


def eer_grid(upper: float) -> np.ndarray:
    """t_k = linspace(0, upper, EER_THRESHOLDS): every distance of the metric lies in [0, upper]."""
    return np.linspace(0.0, float(upper), EER_THRESHOLDS)


#: Classes whose full-span FAR/FRR curves a run keeps for ``opis plot --kind roc|det``.
ROC_CLASSES = 5


@dataclass(frozen=True)
class EerFigures:
    """What ``--eer`` adds to a report: the pooled EER, each used class's EER (rows in label
    order), and the full-span FAR/FRR curves of the pooled pairs and of the ``ROC_CLASSES``
    classes with the highest EER (``shown``: their rows, highest first; ties in label order)."""

    edges: np.ndarray
    pooled: EqualErrorRates
    classes: EqualErrorRates
    pooled_far: np.ndarray
    pooled_frr: np.ndarray
    shown: np.ndarray
    shown_far: np.ndarray
    shown_frr: np.ndarray

    @property
    def resolution(self) -> float:
        return float(self.edges[1] - self.edges[0])

    def section(self) -> dict:
        """The report's ``metrics.eer``."""
        p = self.pooled
        return {"eer": float(p.eer), "threshold": float(p.threshold), "far": float(p.far), "frr": float(p.frr),
                "interval": [float(p.lower), float(p.upper)], "resolution": self.resolution,
                "thresholds": int(self.edges.size), "span": [float(self.edges[0]), float(self.edges[-1])]}


def eer_figures(pos: np.ndarray, neg: np.ndarray, edges: np.ndarray, used: np.ndarray) -> EerFigures:
    """EER figures from per-class histograms of every class (C_all, T + 1) on ``edges``; ``used``:
    the classes with positive pairs, in label order. The pooled histograms count each positive
    pair once and each negative pair once (it is in two classes' N_i)."""
    pooled_pos, pooled_neg = pos.sum(axis=0), neg.sum(axis=0) // 2
    pooled = equal_error_rates(pooled_pos, pooled_neg, edges)
    classes = equal_error_rates(pos[used], neg[used], edges)
    far, frr = rates_on_grid(pooled_pos, pooled_neg)
    order = np.lexsort((np.arange(len(used)), -classes.eer))[:ROC_CLASSES]
    shown_far, shown_frr = rates_on_grid(pos[used[order]], neg[used[order]])
    return EerFigures(np.asarray(edges, np.float64), pooled, classes, far, frr, order, shown_far, shown_frr)
