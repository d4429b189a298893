"""Per-class rate and utility curves on the threshold grid, from one counting kernel.

:func:`accepted_at_thresholds` turns histograms into cumulative counts of accepted pairs at each
grid threshold (as scikit-learn's ``_binary_clf_curve`` does for ROC curves); TAR, TRR and the
utility are thin views of those counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opis_cli.engine.histograms import PairHistograms


def accepted_at_thresholds(hist: np.ndarray) -> np.ndarray:
    """Counts of pairs with d <= t_k for every grid threshold t_k.

    ``hist[..., b]`` counts pairs in bin b (T + 1 bins); returns ``(..., T)`` where entry k sums
    bins 0..k (int64 for exact counts, float64 for the approximate engine's estimates).
    """
    return np.cumsum(hist[..., :-1], axis=-1)


def utility(tar: np.ndarray, trr: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """U = (1 + b^2) TAR TRR / (b^2 TRR + TAR), and 0 where both rates are 0.

    b > 1 weighs TAR (few false rejections) b times as much as TRR, as recall in F_b.

    >>> utility(np.array([1.0, 0.5, 0.0]), np.array([1.0, 0.5, 0.0]))
    array([1. , 0.5, 0. ])
    """
    b2 = beta * beta
    num = (1.0 + b2) * tar * trr
    den = b2 * trr + tar
    out = np.zeros(np.broadcast(tar, trr).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


@dataclass(frozen=True)
class ClassCurves:
    """TAR, TRR and utility of each used class (>= 2 members) at each grid threshold.

    Arrays are (C, T), rows in label order; ``classes`` are the class indices (codes) used.
    ``pos_accepted[c, k]`` = #{p in P_c : d_p <= t_k}, ``neg_accepted[c, k]`` = #{p in N_c : d_p <= t_k}.
    """

    grid: np.ndarray
    classes: np.ndarray
    sizes: np.ndarray
    n_pos: np.ndarray
    n_neg: np.ndarray
    pos_accepted: np.ndarray
    neg_accepted: np.ndarray
    tar: np.ndarray
    trr: np.ndarray
    utility: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(len(self.classes))


def class_curves(hist: PairHistograms, class_sizes: np.ndarray, beta: float = 1.0,
                 totals: tuple[np.ndarray, np.ndarray] | None = None) -> ClassCurves:
    """Curves of every class with positive pairs (at least two members).

    TAR_c(t) = pos_accepted / |P_c|, TRR_c(t) = 1 - neg_accepted / |N_c|,
    U_c(t) = utility(TAR_c, TRR_c, beta). A class with no negatives (the only class) has TRR 1.
    ``totals``: (|P_c|, |N_c|) of every class when they are not those of one set's sizes
    (query/reference mode: PreparedEmbeddings.positive_totals and anchored_totals).
    """
    sizes = np.asarray(class_sizes, dtype=np.int64)
    if totals is None:
        totals = (sizes * (sizes - 1) // 2, sizes * (int(sizes.sum()) - sizes))
    used = np.flatnonzero(totals[0] > 0)
    pos_acc = accepted_at_thresholds(hist.pos[used])
    neg_acc = accepted_at_thresholds(hist.neg[used])
    n_pos, n_neg = totals[0][used], totals[1][used]
    tar = pos_acc / n_pos[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        trr = np.where(n_neg[:, None] > 0, 1.0 - neg_acc / np.maximum(n_neg, 1)[:, None], 1.0)
    return ClassCurves(
        grid=np.asarray(hist.edges, np.float64), classes=used, sizes=sizes[used], n_pos=n_pos,
        n_neg=n_neg, pos_accepted=pos_acc, neg_accepted=neg_acc, tar=tar, trr=trr,
        utility=utility(tar, trr, beta),
    )
