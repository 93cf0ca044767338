"""The space re-ranking compares embeddings in: the model's cosine, or a blend with the cosine after whitening.

``build-ann`` fits the whitening (``imagerec.ann.whitening``) on the collection and stores it with the
index; a ``Recommender`` wraps it in an ``EmbeddingSpace`` that query, serve and evaluate pass their
query images and candidate rows through before ``score_candidates``. The embedding score is then
``raw_share · cosine + (1 − raw_share) · whitened cosine``: the whitened cosine ranks category
neighbours better, the plain one keeps near-duplicates (crops, flips) on top. Both come from one dot
product: each vector becomes the unit vector [√raw_share · x, √(1 − raw_share) · whiten(x)]. The ANN
candidate step itself searches the raw embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from imagerec.ann.whitening import Whitening
from imagerec.search.fusion import QueryImage
from imagerec.store import FeatureRows
from imagerec.vectors import unit_rows


@dataclass(frozen=True)
class EmbeddingSpace:
    """Identity without a whitening; otherwise each embedding becomes [√raw_share · x, √(1 − raw_share) · whiten(x)]."""

    whitening: Whitening | None = None
    raw_share: float = 0.5  # weight of the plain cosine in the embedding score

    def rows(self, rows: FeatureRows) -> FeatureRows:
        """``rows`` with their embeddings in this space."""
        if self.whitening is None or not len(rows):
            return rows
        return replace(rows, embeddings=self.vectors(rows.embeddings))

    def queries(self, queries: Sequence[QueryImage]) -> list[QueryImage]:
        """``queries`` with their embeddings in this space."""
        if self.whitening is None:
            return list(queries)
        return [replace(q, embedding=self.vectors(q.embedding)) for q in queries]

    def vectors(self, embeddings: np.ndarray) -> np.ndarray:
        """Embeddings ((n, d) or (d,)) in this space: their dot products are the embedding scores."""
        if self.whitening is None:
            return embeddings
        share = self.raw_share
        return np.concatenate([math.sqrt(share) * unit_rows(embeddings), math.sqrt(1 - share) * self.whitening.apply(embeddings)],
                              axis=-1)

    def describe(self) -> str:
        """One line for reports: how embeddings are compared."""
        w = self.whitening
        if w is None:
            return "embedding cosine"
        return (f"embedding score {self.raw_share:g} × cosine + {1 - self.raw_share:g} × cosine after whitening "
                f"({w.dim} → {w.dims} dims, power {w.power:g}, fitted on {w.rows} images)")
