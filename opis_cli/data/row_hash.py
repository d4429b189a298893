"""A 64-bit polynomial hash of each embedding row, compiled (numba): duplicates.count_duplicate_rows'
first step, ten times the numpy expression and no uint64 copy of the matrix."""

from __future__ import annotations

import numpy as np

from opis_cli.threads import numba_module

numba = numba_module()


@numba.njit(parallel=True, cache=True, nogil=True)
def row_hashes(words, mult, out):  # pragma: no cover - compiled
    """out[i] = sum_j words[i, j] * mult[j] (mod 2^64): one pass over the rows' 32-bit words."""
    n, d = words.shape
    for i in numba.prange(n):
        h = np.uint64(0)
        for j in range(d):
            h += np.uint64(words[i, j]) * mult[j]
        out[i] = h
