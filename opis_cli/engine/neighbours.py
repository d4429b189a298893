"""Nearest-neighbour state for Recall@k, accumulated block by block in the same pass as the
histograms.

For each item we keep the distance to its nearest *same-label* item (``same``) and the
``kmax`` smallest distances to *other-label* items (``other``). A query is a hit at k when fewer
than k other-label items are at distance <= its nearest same-label item. That is Recall@k with
ties broken against the query (an other-label item at exactly the same distance ranks first),
a consistent order that no row permutation or block layout can change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def k_smallest(values: np.ndarray, k: int, axis: int) -> np.ndarray:
    """The k smallest values along ``axis`` (unsorted), padded with +inf when fewer exist."""
    n = values.shape[axis]
    if n > k:
        part = np.partition(values, k - 1, axis=axis)
        return np.take(part, np.arange(k), axis=axis)
    if n == k:
        return np.array(values, copy=True)
    pad_shape = list(values.shape)
    pad_shape[axis] = k - n
    return np.concatenate([values, np.full(pad_shape, np.inf, dtype=values.dtype)], axis=axis)


@dataclass
class NeighbourState:
    """Per-item nearest same-label distance and kmax nearest other-label distances (float32)."""

    same: np.ndarray  # (N,)
    other: np.ndarray  # (N, kmax)

    @classmethod
    def empty(cls, n: int, kmax: int) -> "NeighbourState":
        return cls(same=np.full(n, np.inf, np.float32), other=np.full((n, kmax), np.inf, np.float32))

    @property
    def kmax(self) -> int:
        return int(self.other.shape[1])

    def update(self, start: int, same: np.ndarray, other: np.ndarray) -> None:
        """Merge candidates for items ``start:start + len(same)``."""
        stop = start + len(same)
        np.minimum(self.same[start:stop], same, out=self.same[start:stop])
        if self.kmax == 1:
            np.minimum(self.other[start:stop], other, out=self.other[start:stop])
        else:
            both = np.concatenate([self.other[start:stop], other], axis=1)
            self.other[start:stop] = k_smallest(both, self.kmax, axis=1)

    def hits(self, k: int) -> np.ndarray:
        """Boolean hit@k per item: fewer than k other-label items at distance <= nearest same."""
        if k > self.kmax:
            raise ValueError(f"k={k} exceeds the tracked kmax={self.kmax}")
        closer = (self.other <= self.same[:, None]).sum(axis=1)
        return closer < k
