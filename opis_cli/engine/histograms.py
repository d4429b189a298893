"""Pair-distance histograms on a threshold grid, and the overflow rule that completes them.

Bins of a grid t_1..t_T (bin 0: d <= t_1; bin k: t_k < d <= t_{k+1}; bin T: d > t_T). The
kernels count bins 0..T-1 only: pairs beyond the grid (most negatives) cost one comparison and
their bin is what the known totals leave (:func:`with_overflow`, the one place that rule lives).
Integer counts: histograms of disjoint pair sets add up, in any order, on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def with_overflow(counts: np.ndarray, totals, what: str) -> np.ndarray:
    """``counts`` (..., T) of bins 0..T-1 with the overflow bin appended: totals - counted.
    An overflow below zero means the engine counted more pairs than exist: a bug, raised."""
    counts = np.asarray(counts)
    overflow = np.asarray(totals) - counts.sum(axis=-1)
    if np.min(overflow, initial=0) < 0:
        raise AssertionError(f"{what}: counted more pairs than exist")
    return np.concatenate([counts, np.asarray(overflow)[..., None]], axis=-1)


@dataclass
class PairHistograms:
    """Per-class histograms of positive and negative pair distances on a threshold grid.

    ``pos[c, b]`` / ``neg[c, b]`` count the pairs of P_c / N_c (definitions.md) whose distance
    falls in bin ``b`` of ``edges``. Integer counts: histograms of disjoint pair sets add up.
    """

    edges: np.ndarray  # (T,) float64
    pos: np.ndarray  # (C, T + 1) int64
    neg: np.ndarray  # (C, T + 1) int64

    def __add__(self, other: "PairHistograms") -> "PairHistograms":
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("cannot add histograms on different threshold grids")
        return PairHistograms(self.edges, self.pos + other.pos, self.neg + other.neg)

    def on_edges(self, edges: np.ndarray) -> "PairHistograms":
        """The same counts on a coarser grid whose edges are a subset of these (exact: a bin of the
        coarse grid is a run of fine bins)."""
        edges = np.asarray(edges, np.float64)
        idx = np.searchsorted(self.edges, edges)
        if idx.max(initial=0) >= len(self.edges) or not np.array_equal(self.edges[idx], edges):
            raise ValueError("the new edges must be a subset of the histogram's edges")

        def coarse(counts: np.ndarray) -> np.ndarray:
            cum = np.cumsum(counts, axis=1)
            at = cum[:, idx]
            return np.concatenate([at[:, :1], np.diff(at, axis=1), (cum[:, -1] - at[:, -1])[:, None]], axis=1)

        return PairHistograms(edges, coarse(self.pos), coarse(self.neg))

    def pooled(self) -> "PooledHistogram":
        """All positive pairs and all negative pairs, each counted once (a negative pair
        belongs to two classes' N_c, so the per-class sum counts it twice)."""
        neg = self.neg.sum(axis=0)
        neg = neg // 2 if np.issubdtype(neg.dtype, np.integer) else neg / 2
        return PooledHistogram(self.edges, self.pos.sum(axis=0), neg)


@dataclass
class PooledHistogram:
    """Histograms of all positive and all negative pair distances on a grid (bins as above)."""

    edges: np.ndarray  # (T,)
    pos: np.ndarray  # (T + 1,) int64
    neg: np.ndarray  # (T + 1,) int64

    def __add__(self, other: "PooledHistogram") -> "PooledHistogram":
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("cannot add histograms on different threshold grids")
        return PooledHistogram(self.edges, self.pos + other.pos, self.neg + other.neg)


@dataclass
class PooledSums:
    """Pooled counts and distance sums per bin of ``edges`` (the last bin, d > edges[-1], has
    counts from totals and no sum): what the TCM loss needs, sum over hard pairs of d."""

    edges: np.ndarray  # (T,)
    pos: np.ndarray  # (T + 1,) int64
    neg: np.ndarray  # (T + 1,) int64
    pos_sum: np.ndarray  # (T,) float64
    neg_sum: np.ndarray  # (T,) float64


@dataclass
class GroupHistograms:
    """Per-group histograms of positive and negative pair distances on the grid (bins as
    PairHistograms), with the exact totals |P_g| and |N_g|."""

    edges: np.ndarray
    pos: np.ndarray  # (G, T + 1) int64
    neg: np.ndarray  # (G, T + 1) int64
    n_pos: np.ndarray  # (G,)
    n_neg: np.ndarray  # (G,)


def _pairs2(k: np.ndarray) -> np.ndarray:
    k = k.astype(np.int64)
    return k * (k - 1) // 2


def group_totals(class_codes: np.ndarray, group_codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(|P_g|, |N_g|) of every group from the class-by-group contingency:
    |P_g| = sum_c [C(n_c, 2) - C(n_c - n_cg, 2)], |P_g| + |N_g| = C(N, 2) - C(N - n_g, 2)."""
    n = len(class_codes)
    class_sizes = np.bincount(class_codes)
    group_sizes = np.bincount(group_codes, minlength=n_groups)
    keys, counts = np.unique(class_codes.astype(np.int64) * n_groups + group_codes, return_counts=True)
    c, g = keys // n_groups, keys % n_groups
    n_pos = np.zeros(n_groups, np.int64)
    np.add.at(n_pos, g, _pairs2(class_sizes[c]) - _pairs2(class_sizes[c] - counts))
    touching = _pairs2(np.array([n]))[0] - _pairs2(n - group_sizes)
    return n_pos, touching - n_pos
