"""The panels every exact sweep walks: row panels of the upper triangle, each one float32 matrix
product into a reused buffer, read by the accumulators' kernels while it is still in cache.

A 1024 x 4096 float32 panel (16 MiB) stays in cache between the matrix product that writes it
and the kernels that read it; a 4096 x 4096 block (64 MiB) makes the kernels wait on memory.
Rows are grouped by class (prepare.py), so a row's same-class columns are one range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from opis_cli.data.prepare import PreparedEmbeddings

PANEL_ROWS = 1024
PANEL_COLS = 4096
TILE_GRANULE = 8  # panel sides are multiples of this (tiny budgets give tiny panels: tests use that)


def panel_shape(n: int, memory_budget: int) -> tuple[int, int]:
    """Rows and columns of a panel within the memory budget."""
    # ~16 bytes per panel element: the float32 panel plus per-thread column buffers and slack.
    elements = max(1, memory_budget // 16)
    cols = min(n, PANEL_COLS, max(TILE_GRANULE, 4 * math.isqrt(elements)))
    rows = min(n, PANEL_ROWS, max(TILE_GRANULE, elements // cols))
    return max(1, rows), max(1, cols)


def iter_panels(n: int, rows: int, cols: int):
    """(i0, i1, j0, j1) covering the upper triangle: each row panel against columns i0..N, the
    first chunk triangular (only j > i counts)."""
    return stripe_panels(n, 0, n, rows, cols)


def stripe_panels(n: int, s0: int, s1: int, rows: int, cols: int, m: int | None = None):
    """The panels of :func:`iter_panels` whose rows lie in stripe s0:s1 (stripes from row_stripes);
    with ``m`` (query/reference mode: m reference columns) every row against all m columns."""
    for i0 in range(s0, s1, rows):
        i1 = min(s1, i0 + rows)
        for j0 in (range(i0, n, cols) if m is None else range(0, m, cols)):
            yield i0, i1, j0, min(n if m is None else m, j0 + cols)


def row_stripes(n: int, memory_budget: int) -> list[tuple[int, int]]:
    """Row ranges (i0, i1) of the row panels: stripe i0:i1 covers the upper triangle's pairs
    (i, j), i0 <= i < i1, j > i. The stripes partition all pairs."""
    rows, _ = panel_shape(n, memory_budget)
    return [(i0, min(n, i0 + rows)) for i0 in range(0, n, rows)]


def stripe_pairs(n: int, s0: int, s1: int, m: int | None = None) -> int:
    """The pairs of the upper triangle in rows s0..s1: sum over i of (n - 1 - i); with ``m``
    reference columns, (s1 - s0) m."""
    k = s1 - s0
    if m is not None:
        return k * m
    return k * (n - 1) - (s0 + s1 - 1) * k // 2


def panel_pairs(i0: int, i1: int, j0: int, j1: int, square: bool = True) -> int:
    """Pairs a panel covers: all of it, or (first chunk of a triangle, j0 == i0) the columns j > i only."""
    if j0 != i0 or not square:
        return (i1 - i0) * (j1 - j0)
    return int(np.maximum(0, (j1 - j0) - np.arange(1, i1 - i0 + 1)).sum())


@dataclass
class Panel:
    """One panel: g = x[i0:i1] x[j0:j1]^T (valid until the next panel) and ``same_lo[i]:same_hi[i]``,
    the columns of row i's class within it."""

    i0: int
    i1: int
    j0: int
    j1: int
    g: np.ndarray
    same_lo: np.ndarray
    same_hi: np.ndarray
    square: bool = True  # False: rows are queries, columns references (no triangle, no self pairs)

    @property
    def diagonal(self) -> bool:
        return self.square and self.i0 == self.j0

    @property
    def pairs(self) -> int:
        return panel_pairs(self.i0, self.i1, self.j0, self.j1, self.square)


def panel_products(p: PreparedEmbeddings, panels, buffer_elements: int):
    """Each panel (i0, i1, j0, j1) as a :class:`Panel`, its products computed into one reused
    float32 buffer (a fresh output per panel halves the matrix-product rate); ``buffer_elements``
    bounds the panels' size."""
    g_buf = np.empty(buffer_elements, np.float32)
    cols = p.columns
    bounds = cols.class_bounds  # a row's class among the columns (the references' own, with them)
    for i0, i1, j0, j1 in panels:
        m, n = i1 - i0, j1 - j0
        g = g_buf[: m * n].reshape(m, n)
        np.matmul(p.x[i0:i1], cols.x[j0:j1].T, out=g)
        rc = p.codes[i0:i1]
        yield Panel(i0, i1, j0, j1, g, np.clip(bounds[rc] - j0, 0, n), np.clip(bounds[rc + 1] - j0, 0, n),
                    p.reference is None)
