"""Rows that repeat an earlier row exactly: counted for the report (input.duplicate_rows), since
such pairs sit at distance 0 and a user should know they are there."""

from __future__ import annotations

import numpy as np


def count_duplicate_rows(x: np.ndarray, chunk: int = 65536) -> int:
    """Rows that repeat an earlier row exactly (bit for bit), in O(N D) time and O(N) memory:
    a 64-bit polynomial hash of each row's words, then an exact comparison within equal hashes."""
    n, d = x.shape
    if n < 2:
        return 0
    words = np.ascontiguousarray(x).view(np.uint32).reshape(n, d)
    mult = np.random.default_rng(12345).integers(1, 2**63, size=d, dtype=np.uint64) | np.uint64(1)
    hashes = np.empty(n, np.uint64)
    try:
        from opis_cli.data.row_hash import row_hashes
    except ImportError:  # no numba: the same hash, vectorised in chunks
        with np.errstate(over="ignore"):
            for s in range(0, n, chunk):
                hashes[s:s + chunk] = (words[s:s + chunk].astype(np.uint64) * mult).sum(axis=1, dtype=np.uint64)
    else:
        row_hashes(words, mult, hashes)
    order = np.argsort(hashes, kind="stable")
    h = hashes[order]
    same = np.flatnonzero(h[1:] == h[:-1])
    if same.size == 0:
        return 0
    dup = 0
    # Group equal hashes; within a group count rows equal to a row seen before.
    starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
    sizes = np.diff(np.r_[starts, n])
    for s, size in zip(starts[sizes > 1], sizes[sizes > 1]):
        rows = words[np.sort(order[s:s + size])]
        dup += size - len(np.unique(rows, axis=0))
    return int(dup)
