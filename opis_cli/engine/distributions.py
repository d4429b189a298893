"""Positive and negative pair-distance distributions over the whole distance span, for plots.

The exact pass counts pairs on the calibration grid only; a picture of where positives and
negatives lie needs the whole span. It is cheap to get from anchors against all N items:

* pooled: a seeded uniform sample of ``anchors`` items, each paired with every other item (an
  unbiased sample of the pooled pair distributions, ordered pairs); on the exact engine the
  :class:`AnchorDistances` accumulator collects it on the main sweep, from the same panels;
* per class (the few classes a plot singles out): every item of the class (at most ``anchors``,
  sampled beyond that) against every other item.

Counts are integers on ``bins`` equal-width bins over [0, metric upper bound]; a plot normalises
them to densities. Cost: (anchors + the selected classes' sizes) x N x D, ~1 s at N = 10^6, D = 128.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opis_cli.data.prepare import PreparedEmbeddings
from opis_cli.engine.accumulators import Accumulator
from opis_cli.engine.distance import gram_to_distance, metric_upper_bound

POOLED = "(pooled)"


@dataclass
class DistanceDistributions:
    """Histograms of pair distances: row s of ``pos``/``neg`` belongs to ``scopes[s]``
    (``POOLED`` or a class label as a string); ``anchors[s]`` items were paired with all others."""

    edges: np.ndarray  # (B + 1,) float64
    scopes: list[str]
    anchors: list[int]
    pos: np.ndarray  # (S, B) int64
    neg: np.ndarray  # (S, B) int64

    def to_table(self):
        """Long-format pyarrow table: scope, kind (positive/negative), bin_lo, bin_hi, count, anchors."""
        import pyarrow as pa

        b = len(self.edges) - 1
        rows = []
        for s, scope in enumerate(self.scopes):
            for kind, counts in (("positive", self.pos[s]), ("negative", self.neg[s])):
                rows.append((scope, kind, counts, self.anchors[s]))
        return pa.table({
            "scope": pa.array([r[0] for r in rows for _ in range(b)], pa.string()),
            "kind": pa.array([r[1] for r in rows for _ in range(b)], pa.string()).dictionary_encode(),
            "bin_lo": np.tile(self.edges[:-1], len(rows)),
            "bin_hi": np.tile(self.edges[1:], len(rows)),
            "count": np.concatenate([r[2] for r in rows]) if rows else np.zeros(0, np.int64),
            "anchors": np.repeat([r[3] for r in rows], b).astype(np.int64),
        })

    @classmethod
    def from_table(cls, table) -> "DistanceDistributions":
        cols = {name: table.column(name).to_pylist() for name in ("scope", "kind", "anchors")}
        lo = table.column("bin_lo").to_numpy()
        hi = table.column("bin_hi").to_numpy()
        count = table.column("count").to_numpy()
        scopes = list(dict.fromkeys(cols["scope"]))
        b = int(np.sum((np.asarray(cols["scope"]) == scopes[0]) & (np.asarray(cols["kind"]) == "positive")))
        edges = np.r_[lo[:b], hi[b - 1]]
        pos = np.zeros((len(scopes), b), np.int64)
        neg = np.zeros((len(scopes), b), np.int64)
        anchors = [0] * len(scopes)
        for r in range(0, len(count), b):
            s = scopes.index(cols["scope"][r])
            (pos if cols["kind"][r] == "positive" else neg)[s] = count[r:r + b]
            anchors[s] = int(cols["anchors"][r])
        return cls(edges=edges, scopes=scopes, anchors=anchors, pos=pos, neg=neg)


#: Peak bytes per distance of a block: the float32 distances and gram_to_distance's float32
#: temporary (the binning kernel allocates nothing). The numpy binning this replaced needed 32
#: (int64 bins, masks and their temporaries; measured on a 1000 x 200k block).
BYTES_PER_DISTANCE = 8


def bin_counts(g, rows, lo, hi, scale, bins, pos, neg) -> None:
    """Add a block's distances to ``pos`` / ``neg`` (kernels.distance_bin_counts; numpy without
    numba): bin = clip(trunc(float32(g * scale)), 0, bins - 1), columns in [lo_i, hi_i) positive,
    the row's own column skipped."""
    try:
        from opis_cli.engine.kernels import distance_bin_counts
    except ImportError:
        b = np.clip((g * np.float32(scale)).astype(np.int64), 0, bins - 1)
        cols = np.arange(g.shape[1])[None, :]
        same = (cols >= lo[:, None]) & (cols < hi[:, None])
        same[np.arange(len(rows)), rows] = False  # not a pair
        other = (cols < lo[:, None]) | (cols >= hi[:, None])
        pos += np.bincount(b[same], minlength=bins)
        neg += np.bincount(b[other], minlength=bins)
        return
    distance_bin_counts(g, np.asarray(rows, np.int64), np.asarray(lo, np.int64), np.asarray(hi, np.int64),
                        float(scale), bins, pos, neg)


def anchor_sample(p: PreparedEmbeddings, anchors: int, seed: int) -> tuple[np.random.Generator, np.ndarray]:
    """The seeded pooled anchor rows (sorted) and the generator that then samples large classes."""
    rng = np.random.default_rng([seed, 7])
    return rng, np.sort(rng.choice(p.n, size=min(p.n, anchors), replace=False))


class AnchorDistances(Accumulator):
    """The pooled whole-span histograms of the ordered pairs (anchor, other item) on the main
    sweep: a pair counts once per anchor end (kernels.block_anchor_bins)."""

    def __init__(self, rows: np.ndarray, bins: int, upper: float) -> None:
        self.rows, self.bins, self.upper = np.asarray(rows, np.int64), bins, upper

    def start(self, p, ctx) -> None:
        super().start(p, ctx)
        self.mask = np.zeros(p.n, bool)
        self.mask[self.rows] = True
        self.pos = np.zeros(self.bins, np.int64)
        self.neg = np.zeros(self.bins, np.int64)

    def consume(self, pn, ctx) -> None:
        from opis_cli.engine import kernels

        nt = ctx.n_threads
        ph = np.zeros((nt, self.bins), np.int64)
        nh = np.zeros((nt, self.bins), np.int64)
        cols = np.flatnonzero(self.mask[pn.j0:pn.j1]).astype(np.int64)
        kernels.block_anchor_bins(pn.g, self.mask[pn.i0:pn.i1], cols, pn.same_lo, pn.same_hi, pn.diagonal, ctx.metric,
                                  ctx.sq[pn.i0:pn.i1], ctx.col_sq[pn.j0:pn.j1], self.bins / self.upper, self.bins, nt, ph, nh)
        self.pos += ph.sum(axis=0)
        self.neg += nh.sum(axis=0)

    def merge(self, other: "AnchorDistances") -> "AnchorDistances":
        self.pos += other.pos
        self.neg += other.neg
        return self

    def finish(self, p, ctx) -> tuple[np.ndarray, np.ndarray]:
        return self.pos, self.neg


def distance_distributions(
    p: PreparedEmbeddings,
    classes: list[int],
    class_labels: list[str],
    *,
    bins: int = 400,
    anchors: int = 1000,
    seed: int = 0,
    memory_budget: int = 1 << 30,
    pooled: tuple[np.ndarray, np.ndarray] | None = None,
) -> DistanceDistributions:
    """Pooled (sampled anchors) and per-class (``classes``: class codes of ``p``, named by
    ``class_labels``) histograms of positive and negative pair distances on ``bins`` bins.
    ``pooled``: the pooled (pos, neg) counts already collected on the sweep by
    :class:`AnchorDistances` with the same anchors, bins and seed (then only the classes' rows
    are computed here: their sizes times N distances)."""
    upper = metric_upper_bound(p.metric, p.normalized, p.max_norm)
    edges = np.linspace(0.0, upper, bins + 1)
    rng, pooled_rows = anchor_sample(p, anchors, seed)
    sets = [pooled_rows]
    for c in classes:
        s, e = int(p.class_bounds[c]), int(p.class_bounds[c + 1])
        rows = np.arange(s, e)
        if rows.size > anchors:
            rows = np.sort(rng.choice(rows, size=anchors, replace=False))
        sets.append(rows)
    pos = np.zeros((len(sets), bins), np.int64)
    neg = np.zeros((len(sets), bins), np.int64)
    if pooled is not None:
        pos[0], neg[0] = pooled
    step = max(1, memory_budget // (BYTES_PER_DISTANCE * p.n))
    for s, rows in enumerate(sets):
        if s == 0 and pooled is not None:
            continue
        for r0 in range(0, rows.size, step):
            r = rows[r0:r0 + step]
            g = p.x[r] @ p.x.T
            if p.sq_norms is not None:
                gram_to_distance(g, p.metric, p.sq_norms[r], p.sq_norms)
            else:
                gram_to_distance(g, p.metric)
            lo = p.class_bounds[p.codes[r]]
            hi = p.class_bounds[p.codes[r] + 1]
            bin_counts(g, r, lo, hi, bins / upper, bins, pos[s], neg[s])
    return DistanceDistributions(edges=edges, scopes=[POOLED] + [str(v) for v in class_labels],
                                 anchors=[int(r.size) for r in sets], pos=pos, neg=neg)
