"""The collection's embeddings as the duplicate finder uses them: cosines of given pairs, and each image's nearest neighbours.

From the ANN index when it is current (its stored vectors are read in place, no copy, and its graph
gives the neighbours), else from the store: all of them for a collection up to ``EXACT_MAX`` images
(neighbours by exact blockwise search), or only the images that need one when larger (no neighbours:
the similar tier needs ``build-ann``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

EXACT_MAX = 60_000  # largest collection searched exhaustively without an ANN index (~9 s at 512-d here)
_BLOCK = 2048


@dataclass
class Vectors:
    """Unit embeddings of some images: ``matrix[row_of(id)]`` (rows in ``ids`` order, which need not be sorted)."""

    ids: np.ndarray
    matrix: np.ndarray
    ann: object | None = None  # an AnnIndex over exactly these vectors, or None
    complete: bool = True  # every embedded image of the collection is here (neighbour search is meaningful)

    def __post_init__(self):
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id in ``matrix``; -1 where absent."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self._sorted, ids)
        pos = np.minimum(pos, len(self._sorted) - 1) if len(self._sorted) else np.zeros_like(ids)
        found = (self._sorted[pos] == ids) if len(self._sorted) else np.zeros(len(ids), bool)
        return np.where(found, self._order[pos] if len(self._sorted) else -1, -1)

    def cosine(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine of each pair (a[i], b[i]) of ids; NaN where either has no embedding."""
        ra, rb = self.rows_of(a), self.rows_of(b)
        out = np.full(len(ra), np.nan, dtype=np.float32)
        ok = (ra >= 0) & (rb >= 0)
        for s in range(0, int(ok.sum()), 65_536):
            idx = np.flatnonzero(ok)[s:s + 65_536]
            out[idx] = np.einsum("ij,ij->i", self.matrix[ra[idx]], self.matrix[rb[idx]])
        return out

    def neighbour_pairs(self, k: int, min_similarity: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(a ids, b ids) with a < b: each image with each of its ``k`` nearest neighbours at cosine ≥ ``min_similarity``."""
        if not self.complete or len(self.ids) < 2:
            return
        k = min(k + 1, len(self.ids))  # +1: an image is its own first neighbour
        for start in range(0, len(self.ids), _BLOCK):
            queries = self.matrix[start:start + _BLOCK]
            if self.ann is not None:
                scores, found = self.ann.search(queries, k, ef_search=max(2 * k, 10))  # near copies are the nearest: a small beam finds them
            else:
                scores, found = _exact_knn(queries, self.matrix, self.ids, k)
            mine = np.repeat(self.ids[start:start + _BLOCK], found.shape[1])
            found, scores = found.ravel(), scores.ravel()
            keep = (scores >= min_similarity) & (found >= 0) & (found != mine)
            a, b = mine[keep], found[keep]
            yield np.minimum(a, b), np.maximum(a, b)


def _exact_knn(queries: np.ndarray, matrix: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = queries @ matrix.T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return np.take_along_axis(sims, top, axis=1), ids[top]
