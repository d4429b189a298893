"""OPIS, epsilon-OPIS, Recall@k, MAP@R and R-precision (docs/definitions.md).

Averages over the calibration range are trapezoid integrals over the grid divided by its
length: avg_t f = trapz(f, grid) / (hi - lo).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from opis_cli.errors import ConfigError
from opis_cli.engine.neighbours import NeighbourState


def range_average(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """avg_t f = (1 / (hi - lo)) * trapz(f, grid) along the last axis."""
    grid = np.asarray(grid, dtype=np.float64)
    widths = np.diff(grid)
    v = np.asarray(values, dtype=np.float64)
    area = ((v[..., 1:] + v[..., :-1]) * 0.5 * widths).sum(axis=-1)
    return area / (grid[-1] - grid[0])


@dataclass(frozen=True)
class OpisResult:
    """OPIS and each class's share of it (contributions sum to ``value``)."""

    value: float
    contributions: np.ndarray  # (C,)
    mean_curve: np.ndarray  # Ubar(t), (T,)


def opis(utility: np.ndarray, grid: np.ndarray) -> OpisResult:
    """OPIS = sum_i w_i avg_t (U_i(t) - Ubar(t))^2 with w_i = 1/C, Ubar(t) = mean_i U_i(t).

    ``utility`` is (C, T): one row per class with at least two members.
    """
    u = np.asarray(utility, dtype=np.float64)
    c = u.shape[0]
    mean_curve = u.mean(axis=0)
    contributions = range_average((u - mean_curve) ** 2, grid) / c
    return OpisResult(value=float(contributions.sum()), contributions=contributions, mean_curve=mean_curve)


@dataclass(frozen=True)
class EpsOpisResult:
    """epsilon-OPIS, the worst classes W and the contrast set R (indices into the class rows)."""

    value: float
    worst: np.ndarray
    contrast: np.ndarray
    mean_utility: np.ndarray  # m_i = avg_t U_i(t), (C,)


def worst_count(n_classes: int, epsilon: float) -> int:
    """|W| = ceil(eps * C), guarded against float noise (0.1 * 30 is 3.0000000000000004)."""
    return int(math.ceil(round(epsilon * n_classes, 9)))


def eps_opis(utility: np.ndarray, grid: np.ndarray, epsilon: float = 0.1, contrast: str = "rest") -> EpsOpisResult:
    """eps-OPIS = avg_t (mean_{i in W} U_i(t) - mean_{i in R} U_i(t))^2.

    W: the ceil(eps C) classes with the lowest mean utility m_i (ties: lower row = lower label
    first). R: every other class (``contrast="rest"``) or the ceil(eps C) classes with the
    highest m_i (``"best"``). Rows of ``utility`` must be in label order.
    """
    u = np.asarray(utility, dtype=np.float64)
    c = u.shape[0]
    m = range_average(u, grid)
    w = worst_count(c, epsilon)
    if contrast == "rest":
        if w >= c:
            raise ConfigError(
                f"--epsilon {epsilon:g} puts all {c} classes among the worst; nothing to contrast with"
            )
    elif contrast == "best":
        if 2 * w > c:
            raise ConfigError(
                f"--epsilon {epsilon:g} with --eps-contrast best needs 2*ceil(eps*C) <= C classes, got C = {c}"
            )
    else:
        raise ConfigError(f"unknown eps contrast {contrast!r}")
    ranking = np.lexsort((np.arange(c), m))  # by m ascending, then label order
    worst = np.sort(ranking[:w])
    other = np.sort(ranking[w:]) if contrast == "rest" else np.sort(ranking[c - w:])
    gap = u[worst].mean(axis=0) - u[other].mean(axis=0)
    value = float(range_average(gap * gap, grid))
    return EpsOpisResult(value=value, worst=worst, contrast=other, mean_utility=m)


def recall_at_k(neighbours: NeighbourState, query_mask: np.ndarray, ks) -> dict[int, float]:
    """Recall@k: the share of queries with a same-label item among their k nearest others.

    Queries are the items of classes with at least two members (``query_mask``); ties are broken
    against the query (see neighbours.py).
    """
    out: dict[int, float] = {}
    n_queries = int(query_mask.sum())
    for k in sorted(set(int(v) for v in ks)):
        hits = neighbours.hits(k)[query_mask]
        out[k] = float(hits.sum() / n_queries) if n_queries else float("nan")
    return out


@dataclass(frozen=True)
class RetrievalFigures:
    """MAP@R and R-precision over all queries, and the mean over each used class's queries
    (rows in label order)."""

    map_at_r: float
    r_precision: float
    queries: int
    class_map_at_r: np.ndarray
    class_r_precision: np.ndarray

    def section(self) -> dict:
        return {"map_at_r": self.map_at_r, "r_precision": self.r_precision, "queries": self.queries}


def retrieval_figures(average_precision: np.ndarray, r_precision: np.ndarray, codes: np.ndarray,
                      classes: np.ndarray) -> RetrievalFigures:
    """MAP@R = mean_q AP@R_q and R-precision = mean_q RP_q over the queries (rows with a finite
    figure: classes with two or more members), and per class the mean over its members
    (``codes``: each row's class; ``classes``: the used classes, label order)."""
    queries = np.isfinite(average_precision)
    sums = np.bincount(codes[queries], weights=average_precision[queries], minlength=int(codes.max()) + 1)
    rsums = np.bincount(codes[queries], weights=r_precision[queries], minlength=int(codes.max()) + 1)
    counts = np.bincount(codes[queries], minlength=int(codes.max()) + 1)
    n = int(queries.sum())
    return RetrievalFigures(
        map_at_r=float(average_precision[queries].mean()) if n else float("nan"),
        r_precision=float(r_precision[queries].mean()) if n else float("nan"), queries=n,
        class_map_at_r=sums[classes] / counts[classes], class_r_precision=rsums[classes] / counts[classes],
    )
