"""Turning loaded embeddings into the engine's working layout.

One pass over the rows, in chunks: check every value is finite (and, when normalising, that no
vector is zero), L2-normalise, and reorder the rows so that each class occupies one contiguous
range. The reordering changes no figure (every figure is a sum over pairs or over queries) but it
makes every class's positive pairs a handful of rectangles in the pair matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opis_cli.errors import InputError

_CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class PreparedEmbeddings:
    """Validated float32 embeddings, rows grouped by class.

    ``x[i]`` is input row ``order[i]``; ``codes`` are the label codes in that order and rows of
    class ``c`` are ``class_bounds[c]:class_bounds[c + 1]``. ``sq_norms`` is set for the raw
    (unnormalised) l2 metric only.
    """

    x: np.ndarray
    order: np.ndarray
    codes: np.ndarray
    class_bounds: np.ndarray
    metric: str
    normalized: bool
    sq_norms: np.ndarray | None
    max_norm: float
    reference: "PreparedEmbeddings | None" = None

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def d(self) -> int:
        return int(self.x.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.class_bounds) - 1

    @property
    def class_sizes(self) -> np.ndarray:
        return np.diff(self.class_bounds)

    # Query/reference mode: the rows are queries, ``reference`` the columns (one label space);
    # only (query, reference) pairs count. Without it, the pairs are the upper triangle.
    @property
    def columns(self) -> "PreparedEmbeddings":
        return self if self.reference is None else self.reference

    @property
    def pair_count(self) -> int:
        """All pairs: N (N - 1) / 2, or N_Q N_G with references."""
        return self.n * (self.n - 1) // 2 if self.reference is None else self.n * self.reference.n

    def positive_totals(self) -> np.ndarray:
        """|P_c| per class: n_c (n_c - 1) / 2, or n_c^Q n_c^G with references."""
        a = self.class_sizes.astype(np.int64)
        return a * (a - 1) // 2 if self.reference is None else a * self.reference.class_sizes.astype(np.int64)

    def anchored_totals(self) -> np.ndarray:
        """Pairs with an end in class c, those with both ends in c counted twice (|N_c| + 2 |P_c|):
        n_c (N - 1), or n_c^Q N_G + N_Q n_c^G with references."""
        a = self.class_sizes.astype(np.int64)
        if self.reference is None:
            return a * (self.n - 1)
        return a * self.reference.n + self.n * self.reference.class_sizes.astype(np.int64)

    def relevant_counts(self) -> np.ndarray:
        """R per row: the same-label items a query retrieves (other members of its class, or its
        class's references); 0 for a row that is not a query."""
        own = self.class_sizes[self.codes].astype(np.int64)
        return own - 1 if self.reference is None else self.reference.class_sizes[self.codes].astype(np.int64)


def prepare_embeddings(
    embeddings: np.ndarray,
    codes: np.ndarray,
    n_classes: int,
    *,
    metric: str = "cosine",
    normalize: bool = True,
) -> PreparedEmbeddings:
    """Validate, normalise and group rows by class (see module docstring).

    Raises InputError for non-finite values and, when normalising, for all-zero vectors.
    """
    n, d = embeddings.shape
    codes = np.asarray(codes, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    bounds = np.searchsorted(sorted_codes, np.arange(n_classes + 1), side="left").astype(np.int64)
    x = np.empty((n, d), dtype=np.float32)
    sq = np.empty(n, dtype=np.float64)
    step = max(1, _CHUNK_BYTES // max(1, 4 * d))
    bad_rows: list[np.ndarray] = []
    zero_rows: list[np.ndarray] = []
    for start in range(0, n, step):
        idx = order[start:start + step]
        chunk = np.asarray(embeddings[idx], dtype=np.float32)
        finite = np.isfinite(chunk).all(axis=1)
        if not finite.all():
            bad_rows.append(idx[~finite])
            continue
        # float64 accumulation: a float32 sum of squares overflows for |values| > ~1e19.
        s = np.einsum("ij,ij->i", chunk, chunk, dtype=np.float64)
        if normalize:
            zero = s == 0.0
            if zero.any():
                zero_rows.append(idx[zero])
                continue
            chunk /= np.sqrt(s)[:, None].astype(np.float32)
        x[start:start + len(idx)] = chunk
        sq[start:start + len(idx)] = s
    if bad_rows:
        rows = np.sort(np.concatenate(bad_rows))
        raise InputError(
            f"embeddings contain NaN or Inf in {rows.size} row(s) (first at row {int(rows[0])}); "
            "a diverged model? fix or drop those rows"
        )
    if zero_rows:
        rows = np.sort(np.concatenate(zero_rows))
        raise InputError(
            f"{rows.size} embedding(s) are all-zero vectors (first at row {int(rows[0])}); "
            "they have no direction, so cosine distance is undefined"
        )
    if normalize:
        sq_norms = None
        max_norm = 1.0
    else:
        sq_norms = sq.astype(np.float32)
        max_norm = float(np.sqrt(sq.max()))
    return PreparedEmbeddings(
        x=x, order=order, codes=sorted_codes, class_bounds=bounds, metric=metric,
        normalized=normalize, sq_norms=sq_norms, max_norm=max_norm,
    )


def with_reference(queries: PreparedEmbeddings, reference: PreparedEmbeddings) -> PreparedEmbeddings:
    """The queries carrying their references (same class codes, metric and normalisation); the
    largest norm is the larger of the two, so distance bounds hold for every (query, reference)."""
    from dataclasses import replace

    max_norm = max(queries.max_norm, reference.max_norm)
    return replace(queries, reference=replace(reference, max_norm=max_norm), max_norm=max_norm)
