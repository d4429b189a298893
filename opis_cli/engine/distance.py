"""The distance functions of docs/definitions.md, applied in place to blocks of inner products.

cosine: d = 1 - <a, b> on unit vectors, in [0, 2].
l2:     d = sqrt(|a|^2 + |b|^2 - 2 <a, b>), on unit vectors unless normalisation is off.
Computed in float32, like the matrix product that feeds them.
"""

from __future__ import annotations

import numpy as np


def gram_to_distance(
    g: np.ndarray,
    metric: str,
    row_sq: np.ndarray | None = None,
    col_sq: np.ndarray | None = None,
) -> np.ndarray:
    """Overwrite a block of inner products ``g`` with distances; returns ``g``.

    ``row_sq``/``col_sq`` are the squared norms of the block's rows and columns, needed only for
    l2 on unnormalised vectors (otherwise the norms are 1).
    """
    if metric == "cosine":
        np.subtract(np.float32(1.0), g, out=g)
        return g
    if metric != "l2":
        raise ValueError(f"unknown metric {metric!r}")
    np.multiply(g, np.float32(-2.0), out=g)
    if row_sq is None:
        np.add(g, np.float32(2.0), out=g)
    else:
        # (|a|^2 + |b|^2) - 2 <a, b>, summed in this order like the kernels (kernels._distance),
        # so both paths round alike.
        np.add(g, np.add.outer(row_sq, col_sq), out=g)
    # Rounding can push the squared distance of near-duplicates slightly below zero.
    np.maximum(g, np.float32(0.0), out=g)
    np.sqrt(g, out=g)
    return g


def metric_upper_bound(metric: str, normalized: bool, max_norm: float) -> float:
    """The largest distance two embeddings can have under the metric."""
    if metric == "cosine" or normalized:
        return 2.0
    return 2.0 * max_norm
